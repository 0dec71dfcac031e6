"""Shared fixtures: configs composed exactly as train.py composes them, sized to run in seconds."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize
from omegaconf import DictConfig

from autoreg.analysis.events import read_events  # noqa: F401  (the tests' TensorBoard reader)
from autoreg.data.sources import write_idx, write_mnist  # noqa: F401  (write_idx: used by test modules)
from autoreg.resolvers import register_resolvers

register_resolvers()  # as train.py does before Hydra composes

ROOT = Path(__file__).resolve().parents[1]

# Sample quality on, at its smallest num; its classifiers cached for the session (trained on first
# use, as for users) outside the repo's outputs/. Runs with the callback exactly as shipped:
# test_train (one process) and test_ddp.
QUALITY_FAST = ["callbacks.sample_quality.num=2", "callbacks.sample_quality.classifier_dir=${oc.env:AUTOREG_TEST_CLASSIFIERS}"]

TINY = [
    "model.channels=8",
    "model.depth=1",
    "data.source=bundled",
    "data.batch_size=32",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1",
    "trainer.enable_model_summary=false",
    "callbacks.samples.num=4",
    "callbacks.progress_bar.refresh_rate=0",
    *QUALITY_FAST,
]


def compose_train(overrides: list[str] = (), output_dir: Path | None = None) -> DictConfig:
    """The train config with `overrides`; `paths.output_dir` set (no Hydra run dir in tests)."""
    extra = [f"paths.output_dir={output_dir}"] if output_dir else ["paths.output_dir=unused"]
    with initialize(version_base="1.3", config_path="../conf"):
        return compose(config_name="train", overrides=list(overrides) + extra)


def run_command(command, args: list[str], monkeypatch):
    """One of autoreg.apps' commands run in this process with `args` as its command line."""
    monkeypatch.setattr(sys, "argv", [command.__name__, *args])
    return command()


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's (intra-op) thread count set to n for the block, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def test_classifiers(tmp_path_factory):
    """The session's feature-classifier dir (QUALITY_FAST), also for train.py run as a subprocess."""
    path = tmp_path_factory.mktemp("classifiers")
    os.environ["AUTOREG_TEST_CLASSIFIERS"] = str(path)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and two-thread ops stall badly when other processes
    share the cores; tests opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    with torch_threads(1):
        yield


@pytest.fixture
def tiny_cfg(tmp_path):
    def make(*overrides: str) -> DictConfig:
        return compose_train(TINY + list(overrides), tmp_path)

    return make


def write_tiny_mnist(root: Path, n_train: int = 40, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Tiny MNIST in torchvision's on-disk layout (<root>/MNIST/raw/*-ubyte)."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    write_mnist(root, *arrays.values())
    return arrays


@pytest.fixture
def offline(monkeypatch):
    """Make every torchvision download fail fast, as on a machine without internet."""
    import torchvision

    for cls in (torchvision.datasets.MNIST, torchvision.datasets.CIFAR10):
        if hasattr(cls, "mirrors"):
            monkeypatch.setattr(cls, "mirrors", ["http://127.0.0.1:9/"])
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", "http://127.0.0.1:9/cifar.tar.gz")
    monkeypatch.setattr("autoreg.data.sources.BINARIZED_MNIST_URL", "http://127.0.0.1:9/")
