"""The training benchmark against the lab's program (experiments/benchmarks/train_speed.py) is fair
only if the lab reference computes what autoreg's `+experiment=lab` network computes: these tests
guard that, the window protocol, and (slow) the script end to end."""
from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys

import pytest
import torch

from autoreg.nn.masked import causal_mask
from conftest import ROOT

sys.path.insert(0, str(ROOT / "experiments" / "benchmarks"))
from lab_reference import LabMaskedConv2d, copy_weights, lab_pixelcnn  # noqa: E402
from train_speed import ROWS, Windows, autoreg_lab_module  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("channels", [(1, 64), (64, 64), (64, 1)])
def test_lab_mask_zeroes_exactly_the_causal_taps(kernel, mask_type, channels):
    c_in, c_out = channels
    conv = LabMaskedConv2d(mask_type, c_in, c_out, kernel, 1, kernel // 2)
    assert torch.equal(conv.mask, causal_mask(c_out, c_in, (kernel, kernel), mask_type))
    conv(torch.rand(2, c_in, 9, 9))
    assert torch.all(conv.weight[conv.mask == 0] == 0), "the lab's forward masks its weight in place"


def test_lab_reference_computes_autoregs_lab_network():
    """Same function: the lab network and autoreg's `+experiment=lab` PixelCNN with the copied
    weights give the same probabilities on a random binary batch."""
    torch.manual_seed(0)
    lab = lab_pixelcnn()
    module = autoreg_lab_module()
    copy_weights(lab, module.net)
    x = (torch.rand(4, 1, 28, 28) < 0.5).float()
    with torch.no_grad():
        expected = lab(x)
        got = module.distribution.probs(module.net(x))
    assert got.shape == expected.shape == x.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert sum(p.numel() for p in lab.parameters()) == sum(p.numel() for p in module.net.parameters())


def test_windows_protocol():
    """warmup untimed steps, then one "ready", one rate per "go", and False at "stop": a row runs
    warmup + windows * steps + 1 steps (what the Lightning rows' max_steps is set to)."""
    parent, child = mp.Pipe()
    for command in ("go", "go", "stop"):
        parent.send(command)
    windows = Windows(child, warmup=2, steps=3)
    calls = 0
    while windows.before_step(64):
        calls += 1
    assert calls + 1 == 2 + 2 * 3 + 1
    messages = [parent.recv() for _ in range(3)]
    assert not parent.poll()
    assert messages[0] == ("ready", torch.get_num_threads())
    assert [kind for kind, _ in messages[1:]] == ["rate", "rate"] and all(rate > 0 for _, rate in messages[1:])


@pytest.mark.slow
def test_train_speed_end_to_end(tmp_path):
    out = tmp_path / "train_speed.md"
    cmd = [sys.executable, str(ROOT / "experiments" / "benchmarks" / "train_speed.py"), "--windows", "1", "--steps", "1",
           "--warmup", "0", "--threads", "1", "--quality", "2", "--out", str(out)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    table = [line for line in text.splitlines() if line.startswith("| lab PixelCNN")]
    assert len(table) == len(ROWS)
    assert all(float(line.split("|")[4]) > 0 for line in table)
    assert "Targets:" in text and "bf16-mixed vs 32-true after 2 steps" in text
    assert text.count("| autoreg `+experiment=lab trainer.precision=") == 2
