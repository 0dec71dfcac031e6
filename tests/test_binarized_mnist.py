"""data=binarized_mnist: the benchmark's .amat files (tiny ones written here), used as given."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from autoreg.data import ImageDataModule
from autoreg.data.sources import load_splits, read_amat, write_amat
from autoreg.errors import ConfigError, DataError

from conftest import compose_train

SIZES = {"train": 12, "valid": 5, "test": 7}


def write_tiny_binarized_mnist(root, sizes=SIZES, gz=False, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {split: (rng.random((n, 784)) < 0.2).astype(np.uint8) for split, n in sizes.items()}
    for split, images in arrays.items():
        write_amat(root / f"binarized_mnist_{split}.amat{'.gz' if gz else ''}", images)
    return arrays


def split_sizes(sizes=SIZES) -> str:
    return "data.split_sizes={" + ",".join(f"{k}:{v}" for k, v in sizes.items()) + "}"


@pytest.mark.parametrize("gz", [False, True])
def test_amat_splits_load_as_given(tmp_path, gz):
    arrays = write_tiny_binarized_mnist(tmp_path, gz=gz)
    dm = ImageDataModule(dataset="binarized_mnist", root=str(tmp_path), binarize="fixed", split_sizes=SIZES)
    dm.setup("fit")
    for split, name in (("train", "train"), ("val", "valid"), ("test", "test")):
        images = dm.splits[split].images
        assert images.shape == (SIZES[name], 1, 28, 28) and images.dtype == torch.uint8
        assert np.array_equal(images.view(len(images), -1).numpy(), arrays[name])  # no re-split, no re-binarization
    assert dm.source_used == "local"
    x, _ = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert set(x.unique().tolist()) <= {0.0, 1.0}


def test_loose_whitespace_reads_like_the_canonical_layout(tmp_path):
    images = (np.random.default_rng(1).random((3, 784)) < 0.5).astype(np.uint8)
    path = tmp_path / "loose.amat"
    path.write_text("".join("  " + "\t".join(map(str, row)) + " \r\n" for row in images) + "\n\n")
    assert np.array_equal(read_amat(str(path), 3).view(3, -1).numpy(), images)


@pytest.mark.parametrize("damage, match", [
    (lambda lines: lines[:-1] + [lines[-1][:801]], r"line 3: 401 values, but a binarized MNIST image has 784"),
    (lambda lines: lines[:1] + [lines[1].replace("0", "0.5", 1)] + lines[2:], r"line 2: the value '0.5' is not 0 or 1"),
    (lambda lines: lines[:2], r"holds 2 images, but this split of binarized MNIST has 3"),
])
def test_malformed_file_is_one_line_naming_file_and_line(tmp_path, damage, match):
    path = tmp_path / "binarized_mnist_test.amat"
    write_amat(path, np.zeros((3, 784), np.uint8))
    path.write_text("\n".join(damage(path.read_text().splitlines())) + "\n")
    with pytest.raises(DataError, match=match) as err:
        read_amat(str(path), 3)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_corrupt_gzip_is_one_line(tmp_path):
    path = tmp_path / "binarized_mnist_train.amat.gz"
    path.write_bytes(gzip.compress(b"0 1 " * 100)[:20])
    with pytest.raises(DataError, match="cannot be read") as err:
        read_amat(str(path))
    assert "\n" not in str(err.value)


def test_missing_files_offline_fail_clearly_without_other_data(tmp_path, offline):
    for source in ("auto", "download"):
        with pytest.raises(DataError) as err:
            load_splits("binarized_mnist", str(tmp_path / "empty"), source)
        message = str(err.value)
        assert "binarized_mnist_train.amat" in message and "data.root" in message and "\n" not in message


@pytest.mark.parametrize("override, match", [
    ("model.conditional=true", "needs labelled data"),
    ("data.binarize=dynamic", "data=binarized_mnist comes binarized"),
    ("data.bits=8", "data=binarized_mnist comes binarized"),
    ("data.source=bundled", "data.source=bundled is only available for MNIST"),
])
def test_bad_values_for_the_benchmark_fail_before_any_data(tmp_path, override, match):
    from autoreg.config import validate

    cfg = compose_train(["data=binarized_mnist", f"data.root={tmp_path / 'none'}", override], tmp_path)
    with pytest.raises(ConfigError, match=match):
        validate(cfg)


def test_trains_and_tests_end_to_end_with_the_default_callbacks(tmp_path, tiny_cfg):
    from autoreg.cli import train

    write_tiny_binarized_mnist(tmp_path)
    cfg = tiny_cfg("data=binarized_mnist", f"data.root={tmp_path}", "data.source=auto", split_sizes(),
                   "data.batch_size=4", "data.eval_batch_size=4", "test=true")
    metrics, objects = train(cfg)
    assert len(objects["datamodule"].splits["test"]) == SIZES["test"]
    for key in ("val/nll", "test/nll"):
        assert 0 < metrics[key] < 2 * 784 * np.log(2)
        assert np.isclose(metrics[key.replace("nll", "bpd")], metrics[key] / (784 * np.log(2)))
