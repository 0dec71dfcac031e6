"""LightningDataModule for in-memory image datasets (MNIST binarized or 8-bit, CIFAR-10).

Whole splits live in memory as uint8 tensors; a batch is one indexing operation, and scaling to
[0, 1] (and dynamic binarization) happens on the batch after it reaches the device.

Binarization of MNIST (Salakhutdinov & Murray 2008 style stochastic binarization, pixel = 1 with
probability intensity / 255):
- static: sampled once with a fixed generator (seed 0), identical across runs and machines;
- dynamic: the training images are resampled in every batch (so every epoch differs);
  validation and test always use the static binarization so their NLLs stay comparable.
"""
from __future__ import annotations

import torch
import pytorch_lightning as pl
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from autoreg.data.sources import load_splits

SPLIT_SEED = 0  # the validation split and the static binarization never change
IMAGE_SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def static_binarize(images: torch.Tensor) -> torch.Tensor:
    """One fixed stochastic binarization of uint8 images (0/1, uint8)."""
    g = torch.Generator().manual_seed(SPLIT_SEED)
    return (torch.rand(images.shape, generator=g) * 255 < images.float()).to(torch.uint8)


class InMemoryImages(Dataset):
    """Indexed by a list of indices: returns the whole batch (images uint8, labels) at once."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]


class ImageDataModule(pl.LightningDataModule):
    def __init__(
        self,
        dataset: str = "mnist",
        root: str = "data",
        source: str = "auto",
        bits: int = 1,
        binarize: str = "static",
        val_size: float = 0.1,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        **_ignored,
    ):
        super().__init__()
        self.dataset, self.root, self.source = dataset, root, source
        self.bits, self.binarize = bits, binarize
        self.val_size, self.batch_size = val_size, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.image_shape = IMAGE_SHAPES[dataset]
        self.source_used: str | None = None
        self.splits: dict[str, InMemoryImages] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        s = load_splits(self.dataset, self.root, self.source)
        self.source_used = s.source
        train_x, train_y, test_x, test_y = s.train_images, s.train_labels, s.test_images, s.test_labels
        n_val = int(self.val_size) if self.val_size >= 1 else round(self.val_size * len(train_x))
        if not 0 < n_val < len(train_x):
            from autoreg.errors import DataError

            raise DataError(
                f"data.val_size={self.val_size} leaves no training or no validation images "
                f"({len(train_x)} available); use a fraction in (0, 1) or a count below {len(train_x)}"
            )
        order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(SPLIT_SEED))
        val_idx, train_idx = order[:n_val], order[n_val:]
        if self.bits == 1:
            train_x, test_x = static_binarize(train_x), static_binarize(test_x)
            if self.binarize == "dynamic":  # keep grey levels for training, binarize per batch
                self.splits["train"] = InMemoryImages(s.train_images[train_idx], train_y[train_idx])
        self.splits.setdefault("train", InMemoryImages(train_x[train_idx], train_y[train_idx]))
        self.splits["val"] = InMemoryImages(train_x[val_idx], train_y[val_idx])
        self.splits["test"] = InMemoryImages(test_x, test_y)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        data = self.splits[split]
        sampler = RandomSampler(data) if shuffle else SequentialSampler(data)
        size = self.batch_size if shuffle else self.eval_batch_size
        return DataLoader(data, sampler=BatchSampler(sampler, size, drop_last=False), batch_size=None)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        if self.bits == 8:
            return images.float() / 255, labels
        if self.binarize == "dynamic" and self.trainer is not None and self.trainer.training:
            return torch.bernoulli(images.float() / 255), labels
        return images.float(), labels
