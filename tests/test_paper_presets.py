"""The paper presets (conf/experiment/paper_*.yaml): each composes at its paper's size, names its
published figure, passes the config check, and trains for two steps when scaled down (tiny
CIFAR-10 files in torchvision's layout, or tiny binarized-MNIST .amat files)."""
from __future__ import annotations

import math
import re

import pytest

from autoreg.config import validate

from conftest import ROOT, compose_train

pytestmark = pytest.mark.usefixtures("one_thread")

# preset -> (model keys at the paper's size, the published figure in its header, overrides that shrink it)
PRESETS = {
    "paper_cifar10_pixelcnn": ({"name": "pixelcnn", "depth": 15, "channels": 256, "kernel": 3}, "3.14 test bits/dim",
                               ["model.depth=1", "model.channels=8"]),
    "paper_cifar10_row_lstm": ({"name": "pixelrnn", "arch": "row_lstm", "depth": 12, "channels": 256}, "3.07 test bits/dim",
                               ["model.depth=1", "model.channels=8"]),
    "paper_cifar10_diagonal_bilstm": ({"name": "pixelrnn", "arch": "diagonal_bilstm", "depth": 12, "channels": 256},
                                      "3.00 test bits/dim", ["model.depth=1", "model.channels=8"]),
    "paper_cifar10_gated_pixelcnn": ({"name": "gated_pixelcnn", "depth": 20, "channels": 384, "kernel": 5},
                                     "3.03 test bits/dim", ["model.depth=1", "model.channels=6"]),
    "paper_cifar10_pixelcnn_pp": ({"name": "pixelcnn_pp", "nr_resnet": 5, "channels": 160, "dropout": 0.5,
                                   "likelihood": {"name": "logistic_mixture", "nr_logistic_mix": 10}}, "2.92 test bits/dim", ["model.nr_resnet=1", "model.channels=8"]),
    "paper_cifar10_pixelsnail": ({"name": "pixelsnail", "depth": 12, "nr_resnet": 4, "channels": 256, "key_channels": 16,
                                  "value_channels": 128, "heads": 1, "dropout": 0.5, "u_stream": False,
                                  "likelihood": {"name": "logistic_mixture", "nr_logistic_mix": 10}},
                                 "2.85 test bits/dim", ["model.depth=1", "model.nr_resnet=1", "model.channels=8"]),
    "paper_mnist_pixelcnn": ({"name": "pixelcnn", "depth": 15, "channels": 32}, "81.30 nats",
                             ["model.depth=1", "model.channels=8"]),
    "paper_mnist_row_lstm": ({"name": "pixelrnn", "arch": "row_lstm", "depth": 7, "channels": 32}, "80.54 nats",
                             ["model.depth=1", "model.channels=8"]),
    "paper_mnist_diagonal_bilstm": ({"name": "pixelrnn", "arch": "diagonal_bilstm", "depth": 7, "channels": 32}, "79.20 nats",
                                    ["model.depth=1", "model.channels=8"]),
    "paper_mnist_gated_pixelcnn": ({"name": "gated_pixelcnn", "depth": 15, "channels": 16, "kernel": 5},
                                   "none on this benchmark", ["model.depth=1", "model.channels=8"]),
    "paper_mnist_pixelcnn_pp": ({"name": "pixelcnn_pp", "nr_resnet": 1, "channels": 32, "likelihood": {"name": "bernoulli"}},
                                "none on this benchmark", ["model.channels=8"]),
    "paper_mnist_pixelsnail": ({"name": "pixelsnail", "depth": 4, "nr_resnet": 2, "channels": 16, "heads": 2},
                               "none on this benchmark", ["model.depth=1", "model.nr_resnet=1", "model.channels=8"]),
}
TWO_STEPS = [
    "trainer.max_steps=2", "trainer.max_epochs=-1", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
    "trainer.num_sanity_val_steps=0", "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false",
    "callbacks.samples.num=0", "callbacks.samples.completions=0", "callbacks.progress_bar.refresh_rate=0",
    "data.batch_size=2", "data.eval_batch_size=2",
]


def test_every_paper_preset_is_listed_here():
    assert {p.stem for p in (ROOT / "conf" / "experiment").glob("paper_*.yaml")} == set(PRESETS)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_has_the_papers_size_and_figure(preset):
    keys, figure, _ = PRESETS[preset]
    cfg = compose_train([f"+experiment={preset}"])
    validate(cfg)
    assert {k: cfg.model[k] for k in keys} == keys
    assert cfg.data.name == ("cifar10" if "cifar10" in preset else "binarized_mnist") and cfg.test is True
    lines = (ROOT / "conf" / "experiment" / f"{preset}.yaml").read_text().splitlines()
    header = " ".join(line.lstrip("# ") for line in lines if line.startswith("#"))
    assert f"Published: {figure}" in header and re.search(r"arXiv \d{4}\.\d{5}", header)
    assert f"+experiment={preset} trainer=gpu" in header
    gpu = compose_train([f"+experiment={preset}", "trainer=gpu"])
    assert gpu.trainer.accelerator == "gpu" and gpu.trainer.precision == "bf16-mixed"


@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_trains_two_steps_scaled_down(preset, tmp_path, monkeypatch, offline):
    from autoreg.cli import train
    from test_binarized_mnist import split_sizes, write_tiny_binarized_mnist
    from test_data import write_tiny_cifar

    *_, shrink = PRESETS[preset]
    if "cifar10" in preset:
        write_tiny_cifar(tmp_path / "data", monkeypatch)
        data = [f"data.root={tmp_path / 'data'}", "data.source=auto", "data.val_size=4"]
    else:
        write_tiny_binarized_mnist(tmp_path)
        data = [f"data.root={tmp_path}", split_sizes()]
    metrics, _ = train(compose_train([f"+experiment={preset}", *shrink, *data, *TWO_STEPS], tmp_path))
    assert metrics["global_step"] == 2
    assert math.isfinite(metrics["test/nll"]) and metrics["test/bpd"] > 0
