"""Gated PixelCNN's model keys (van den Oord et al. 2016, arXiv 1606.05328): vertical + horizontal
stacks of gated layers (no blind spot), skips summed into a 1x1 head. Sized for a CPU
(experiments/defaults). The network: autoreg.models.gated_pixelcnn."""
from __future__ import annotations

from dataclasses import dataclass

from autoreg.checks import require_int
from autoreg.errors import ConfigError
from autoreg.families import Family


@dataclass(frozen=True)
class GatedPixelCNNKeys(Family):
    NAME = "gated_pixelcnn"
    NETWORK = "autoreg.models.gated_pixelcnn:GatedPixelCNN"

    channels: int = 24     # features per stack (2x before each gate); a multiple of the data's channels (24: MNIST, RGB)
    depth: int = 4         # gated layers; the field reaches depth * (kernel // 2) columns each side and one row more up
    kernel: int = 5        # k of the (k//2+1) x k vertical and 1 x k horizontal convolutions (odd, >= 3)
    head_layers: int = 2   # ReLU + 1x1 mask-B layers in the output head (the last maps to the likelihood)

    def check(self, image_shape: tuple[int, int, int], likelihood: str) -> None:
        for key in ("channels", "depth", "head_layers"):
            require_int(f"model.{key}", getattr(self, key))
        require_int("model.kernel", self.kernel, minimum=3, odd=True)
        c = image_shape[0]
        if self.channels % c:
            raise ConfigError(
                f"model.channels={self.channels} is invalid for {c}-channel images: it must be a multiple of {c} "
                "(the gates pair features within each colour's group)"
            )
