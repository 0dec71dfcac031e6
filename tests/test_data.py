"""Data: the real torchvision path on tiny IDX files, the offline fallback, the strict download."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from autoreg.data import ImageDataModule
from autoreg.data.sources import load_splits
from autoreg.errors import DataError

from conftest import write_tiny_mnist


def test_idx_files_load_through_torchvision(tmp_path):
    arrays = write_tiny_mnist(tmp_path)
    splits = load_splits("mnist", str(tmp_path), "auto")
    assert splits.source == "local"
    assert splits.train_images.shape == (40, 1, 28, 28) and splits.train_images.dtype == torch.uint8
    assert np.array_equal(splits.train_images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(splits.test_labels.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_datamodule_splits_and_batches(tmp_path):
    write_tiny_mnist(tmp_path)
    dm = ImageDataModule(root=str(tmp_path), val_size=8, batch_size=16, bits=8)
    dm.setup("fit")
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [32, 8, 10]
    x, y = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    again = ImageDataModule(root=str(tmp_path), val_size=8, bits=8)
    again.setup("fit")
    assert torch.equal(dm.splits["val"].images, again.splits["val"].images)  # fixed split


def test_static_binarization_is_fixed_and_binary(tmp_path):
    write_tiny_mnist(tmp_path)
    runs = []
    for seed in (0, 1):
        torch.manual_seed(seed)  # the global seed must not change the static binarization
        dm = ImageDataModule(root=str(tmp_path), val_size=0.25, binarize="static")
        dm.setup("fit")
        runs.append(dm.splits["train"].images)
    assert torch.equal(runs[0], runs[1]) and set(runs[0].unique().tolist()) <= {0, 1}


def test_offline_auto_falls_back_to_bundled_with_warning(tmp_path, offline, caplog):
    with caplog.at_level(logging.WARNING):
        splits = load_splits("mnist", str(tmp_path / "empty"), "auto")
    assert splits.source == "bundled" and len(splits.train_images) + len(splits.test_images) == 5000
    assert any("BUNDLED OFFLINE SUBSET" in r.message and "data.source=download" in r.message for r in caplog.records)


def test_offline_download_fails_clearly(tmp_path, offline):
    with pytest.raises(DataError) as err:
        load_splits("mnist", str(tmp_path / "empty"), "download")
    message = str(err.value)
    assert "data.source=download" in message and "data.source=bundled" in message and "\n" not in message


def test_bundled_digits_are_real(tmp_path):
    splits = load_splits("mnist", str(tmp_path), "bundled")
    images = splits.train_images.float() / 255
    # real digits: mostly black background, a bright stroke in the centre, all ten classes
    assert images.mean() < 0.2 and images[:, :, 10:18, 10:18].mean() > 2 * images.mean()
    assert splits.train_labels.unique().tolist() == list(range(10))


def test_too_large_val_size_is_an_error(tmp_path):
    write_tiny_mnist(tmp_path)
    with pytest.raises(DataError, match="data.val_size=40"):
        ImageDataModule(root=str(tmp_path), val_size=40).setup("fit")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_splits_live_on_the_gpu_when_training_there(tmp_path):
    from types import SimpleNamespace

    write_tiny_mnist(tmp_path)
    dm = ImageDataModule(root=str(tmp_path), val_size=8, batch_size=16)
    dm.setup("fit")
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)), global_rank=0, world_size=1)
    x, y = next(iter(dm.train_dataloader()))
    assert x.is_cuda and y.is_cuda and dm.splits["train"].images.is_cuda


def write_tiny_cifar(root, monkeypatch, n_train: int = 20, n_test: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Tiny CIFAR-10 python pickles in torchvision's layout (<root>/cifar-10-batches-py); the
    class's md5 list is pointed at these files, since torchvision checks every file's md5."""
    import hashlib
    import pickle

    import torchvision

    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    arrays, md5 = {}, {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_train // 5
        arrays[name] = rng.integers(0, 256, (n, 3072), dtype=np.uint8)  # rows: R plane, G plane, B plane
        (base / name).write_bytes(pickle.dumps({"data": arrays[name], "labels": rng.integers(0, 10, n).tolist()}))
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))
    for name in names + ["batches.meta"]:
        md5[name] = hashlib.md5((base / name).read_bytes()).hexdigest()
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[name, md5[name]] for name in names[:5]])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5["batches.meta"]})
    return arrays


def test_cifar10_pickles_load_in_channel_order(tmp_path, monkeypatch, offline):
    arrays = write_tiny_cifar(tmp_path, monkeypatch)
    s = load_splits("cifar10", str(tmp_path), "auto")
    assert s.source == "local" and s.train_images.shape == (20, 3, 32, 32) and s.test_images.shape == (8, 3, 32, 32)
    first = arrays["data_batch_1"][0].reshape(3, 32, 32)  # CIFAR rows are channel planes: R, then G, then B
    assert torch.equal(s.train_images[0], torch.from_numpy(first))


def test_cifar10_trains_end_to_end(tmp_path, monkeypatch, offline, tiny_cfg):
    from autoreg.cli import train

    write_tiny_cifar(tmp_path / "data", monkeypatch)
    cfg = tiny_cfg("data=cifar10", f"data.root={tmp_path / 'data'}", "data.source=auto", "data.batch_size=4",
                   "data.val_size=4", "trainer.limit_train_batches=2", "callbacks.samples.num=1", "test=true")
    metrics, objects = train(cfg)
    assert objects["module"].image_shape == (3, 32, 32) and objects["datamodule"].source_used == "local"
    for key in ("val/nll", "test/nll"):
        # 256-way categorical per sub-pixel: an untrained model is near ln(256) nats per dimension
        assert 0 < metrics[key] < 2 * 3 * 32 * 32 * np.log(256)
        assert np.isclose(metrics[key.replace("nll", "bpd")], metrics[key] / (3 * 32 * 32 * np.log(2)))
