"""Shipped models (autoreg.pretrained): every one loads by name and scores the NLL its manifest
states on the first 200 benchmark test images; export round-trips; a foreign format is one line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autoreg import pretrained
from autoreg.checkpoint import export_pretrained
from autoreg.errors import CheckpointError
from autoreg.module import AutoregressiveModule

from conftest import ROOT, TINY, compose_train

BENCHMARK = ROOT.parent / "shared" / "data" / "binarized_mnist"
SHIPPED = sorted(pretrained.manifest())


def test_something_ships():
    assert SHIPPED, "no shipped model in src/autoreg/pretrained/manifest.json"
    for name, entry in pretrained.manifest().items():
        assert (pretrained.HERE / entry["file"]).stat().st_size < 5e6 and entry["format"] == pretrained.FORMAT, name


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_scores_its_manifest_figure(name):
    if not BENCHMARK.is_dir():
        pytest.skip(f"the benchmark copy {BENCHMARK} is absent on this machine")
    from autoreg.data.sources import read_amat

    entry = pretrained.manifest()[name]
    module = AutoregressiveModule.from_checkpoint(name).eval()
    images = read_amat(str(BENCHMARK / "binarized_mnist_test.amat.gz"), 10000)[:200].float()
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        nll = float(module.nll(images).double().mean())
    assert nll == pytest.approx(entry["test_nll_first200"], rel=1e-4)


@pytest.mark.parametrize("name", SHIPPED[:1])
def test_sample_py_takes_a_shipped_name(name, tmp_path):
    out = tmp_path / "grid.png"
    proc = subprocess.run([sys.executable, str(ROOT / "sample.py"), f"ckpt={name}", "num=4", f"out={out}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.is_file()


def test_export_round_trips_and_a_foreign_format_is_one_line(tmp_path):
    from autoreg.cli import train

    run = tmp_path / "run"
    train(compose_train(TINY + ["callbacks.samples.num=0", "optim.ema_decay=0.9"], run))
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    path = export_pretrained(ckpt, "tiny", {"test_nll": 1.0}, directory=tmp_path)
    module = AutoregressiveModule.from_checkpoint(str(path))
    for k, v in module.state_dict().items():
        assert torch.equal(v, ckpt["state_dict"][k].float())  # the evaluated (average) weights, fp32
    assert "current_model_state" not in torch.load(path, weights_only=True)  # weights only
    shipped = torch.load(path, weights_only=True)
    torch.save({**shipped, "autoreg_format": 99}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format 99") as err:
        AutoregressiveModule.from_checkpoint(str(tmp_path / "future.pt"))
    assert "\n" not in str(err.value)


def test_unknown_name_lists_the_shipped_models():
    with pytest.raises(CheckpointError, match="or the name of a shipped model") as err:
        AutoregressiveModule.from_checkpoint("no_such_model")
    assert all(name in str(err.value) for name in SHIPPED)
    assert not Path("no_such_model").exists()


@pytest.mark.parametrize("name", SHIPPED[:1])
def test_compress_py_codes_the_benchmark_with_a_shipped_name(name, tmp_path):
    if not BENCHMARK.is_dir():
        pytest.skip(f"the benchmark copy {BENCHMARK} is absent on this machine")
    out = tmp_path / "x.arz"
    proc = subprocess.run([sys.executable, str(ROOT / "compress.py"), f"ckpt={name}", "split=test", "num=5",
                           f"data_root={BENCHMARK}", f"out={out}", "progress=false"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "compressed 5 images (test split)" in proc.stdout + proc.stderr and out.stat().st_size > 46
