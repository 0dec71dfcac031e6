"""LightningDataModule for in-memory image datasets (MNIST binarized or 8-bit, CIFAR-10).

Whole splits live in memory as uint8 tensors (on the GPU when training on one); a batch is one
indexing operation, and scaling to [0, 1] (and dynamic binarization) happens on the batch on the
device.

Binarization of MNIST (Salakhutdinov & Murray 2008 style stochastic binarization, pixel = 1 with
probability intensity / 255):
- fixed (data=binarized_mnist only): the benchmark's own binarization, as its files give it, with
  its own train / valid / test splits;
- static: sampled once with a fixed generator (seed 0), identical across runs and machines;
- dynamic: the training images are resampled in every batch (so every epoch differs);
  validation and test always use the static binarization so their NLLs stay comparable.

Batches come from `ShardedBatches`, which does two jobs a plain RandomSampler cannot:
- resume: the training order of epoch e is a permutation drawn from (seed, e) alone, and the loader
  reports how far into the epoch it is (`state_dict`, which Lightning saves in checkpoints), so a
  resumed run sees exactly the batches the uninterrupted run would have seen;
- DDP: each of `world_size` processes takes its slice of every global batch (batch_size images
  per process). Training drops at most world_size - 1 images per epoch so that every process runs
  the same number of steps; evaluation drops and repeats nothing (a process may get a short or even
  empty last batch), so metrics summed over processes are exactly the single-process ones.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from autoreg.config import IMAGE_SHAPES
from autoreg.data.sources import Splits, load_splits
from autoreg.errors import DataError

SPLIT_SEED = 0  # the validation split and the static binarization never change
NUM_CLASSES = 10  # both datasets label digits / classes 0..9


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


class ShardedBatches:
    """Index batches for process `rank` of `world_size`, one epoch at a time.

    shuffle=True (training): epoch e visits a permutation drawn from (seed, e); global batches of
    batch_size * world_size images are cut from it, and each process takes its contiguous slice.
    shuffle=False (evaluation): the indices in order, same slicing, nothing dropped or repeated.
    `state_dict()` records the epoch and how many images of it all processes together have taken,
    so `load_state_dict()` continues the epoch where a checkpoint left it (with another
    world_size too: the rest of the permutation is cut into the new global batches).
    """

    def __init__(self, size: int, batch_size: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.seen = 0  # images of this epoch taken by all processes together
        self._resume_at: tuple[int, int] | None = None  # (epoch, seen) restored from a checkpoint

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at the start of every training epoch."""
        self.epoch = epoch

    @property
    def _usable(self) -> int:
        return self.size - self.size % self.world_size if self.shuffle else self.size

    def __len__(self) -> int:
        return math.ceil(self._usable / (self.batch_size * self.world_size))

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(seed))[: self._usable]

    def __iter__(self):
        order, step = self._order(), self.batch_size * self.world_size
        start = 0
        if self._resume_at is not None and self._resume_at[0] == self.epoch:
            start = self._resume_at[1]
        self._resume_at = None
        for begin in range(start, len(order), step):
            self.seen = min(begin + step, len(order))
            yield torch.tensor_split(order[begin : begin + step], self.world_size)[self.rank]

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "seen": self.seen, "seed": self.seed, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.seen = state["epoch"], state["seen"]
        self._resume_at = (state["epoch"], state["seen"])


class ResumableLoader(DataLoader):
    """The training DataLoader; Lightning saves its `state_dict()` in checkpoints and restores it
    with `load_state_dict()` when a run resumes mid-epoch."""

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)


def check_images(splits: Splits, dataset: str) -> None:
    """Raise DataError on pixels or labels that cannot be `dataset`'s."""
    shape = IMAGE_SHAPES[dataset]
    given = [("train", splits.train_images, splits.train_labels), ("test", splits.test_images, splits.test_labels)]
    if splits.val_images is not None:
        given.insert(1, ("validation", splits.val_images, splits.val_labels))
    for split, images, labels in given:
        where = f"{splits.origin or splits.source}: the {split} split"
        if images.ndim != 4 or tuple(images.shape[1:]) != shape:
            got = "x".join(map(str, images.shape[1:])) if images.ndim == 4 else f"a {images.ndim}-d array"
            raise DataError(
                f"{where} has images of {got} but {dataset} images are {'x'.join(map(str, shape))} "
                "(channels x height x width); these files hold another dataset: replace them or pick the matching data="
            )
        if images.dtype != torch.uint8:
            raise DataError(f"{where} has {images.dtype} pixels; {dataset} pixels are uint8 (0..255): replace the files")
        if len(labels) != len(images):
            raise DataError(f"{where} has {len(images)} images but {len(labels)} labels; the image and label files do not belong together")
        bad = labels[(labels < 0) | (labels >= NUM_CLASSES)]
        if len(bad):
            raise DataError(
                f"{where} has {len(bad)} label(s) out of range (first: {int(bad[0])}); {dataset} labels are 0..{NUM_CLASSES - 1}: "
                "the label file is corrupt or of another dataset"
            )


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
        split_sizes: dict[str, int] | None = None,
        seed: int = 0,
        **_ignored,
    ):
        """`seed` draws the training order of every epoch (with the epoch number). `split_sizes`:
        the image count each file of a dataset with fixed splits must hold (binarized_mnist)."""
        super().__init__()
        self.dataset, self.root, self.source = dataset, root, source
        self.bits, self.binarize = bits, binarize
        self.val_size, self.batch_size = val_size, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.split_sizes = split_sizes
        self.seed = seed
        self.image_shape = IMAGE_SHAPES[dataset]
        self.source_used: str | None = None
        self.splits: dict[str, InMemoryImages] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        s = load_splits(self.dataset, self.root, self.source, self.split_sizes)
        check_images(s, self.dataset)
        self.source_used = s.source
        if s.val_images is not None:  # splits used as given, already binary
            self.splits = {"train": InMemoryImages(s.train_images, s.train_labels), "val": InMemoryImages(s.val_images, s.val_labels),
                           "test": InMemoryImages(s.test_images, s.test_labels)}
            return
        train_x, train_y, test_x, test_y = s.train_images, s.train_labels, s.test_images, s.test_labels
        n_val = int(self.val_size) if self.val_size >= 1 else round(self.val_size * len(train_x))
        if not 0 < n_val < len(train_x):
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
        data = self._on_device(self.splits[split])
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        size = self.batch_size if shuffle else self.eval_batch_size
        batches = ShardedBatches(len(data), size, shuffle, self.seed, rank, world_size)
        # its own generator: making an iterator must not draw from the global RNG (resumed runs
        # make more iterators than uninterrupted ones, and dynamic binarization uses that RNG)
        cls = ResumableLoader if shuffle else DataLoader
        return cls(data, sampler=batches, batch_size=None, generator=torch.Generator())

    def _on_device(self, data: InMemoryImages) -> InMemoryImages:
        """On a GPU the split moves there once (MNIST's 60000 images are 47 MB as uint8): a batch is
        then one indexing op on the GPU, with no host-to-device copies and no worker processes."""
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if device is not None and device.type == "cuda" and data.images.device != device:
            data.images, data.labels = data.images.to(device), data.labels.to(device)
        return data

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        if self.bits == 8:
            return images.float() / 255, labels
        if self.binarize == "dynamic" and self.trainer is not None and self.trainer.training:
            return torch.bernoulli(images.float() / 255), labels
        return images.float(), labels
