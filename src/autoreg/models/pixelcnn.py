"""PixelCNN (van den Oord et al. 2016, "Pixel Recurrent Neural Networks", arXiv 1601.06759).

A 7x7 mask-A convolution, then `depth` blocks built around a k x k mask-B convolution, then an
output head of 1x1 mask-B convolutions producing the likelihood head's parameters:

    x -> MaskedConv(A, first_kernel) -> [block] x depth -> ReLU, 1x1 -> ... -> params

Residual block (paper fig. 5), `channels` = 2h:

    2h -> ReLU -> 1x1 -> h -> ReLU -> k x k (B) -> h -> ReLU -> 1x1 -> 2h -> (+ input)

Plain block (`residual=false`): ReLU -> k x k (B), channels -> channels.

Class-conditional (`num_classes`): a learned bias per class and channel is added to the input of
every block and of the head (`autoreg.nn.conditioning.ClassBias`, conditional PixelCNN's V^T h).

NOTE: the blocks' receptive field has the well-known blind spot to the right of the current
row's upper part; Gated PixelCNN removes it with two stacks.
"""
from __future__ import annotations

import torch
from torch import nn

from autoreg.families.pixelcnn import PixelCNNKeys
from autoreg.nn.conditioning import ClassBias, run_stages, with_label_biases
from autoreg.nn.masked import MaskedConv2d
from autoreg.sampling import CachedColumns, Residual, register_layer


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, kernel: int, data_channels: int, dilation: int = 1):
        super().__init__()
        h = channels // 2
        self.net = nn.Sequential(
            nn.ReLU(),
            MaskedConv2d(channels, h, 1, "B", data_channels),
            nn.ReLU(),
            MaskedConv2d(h, h, kernel, "B", data_channels, dilation=dilation),
            nn.ReLU(),
            MaskedConv2d(h, channels, 1, "B", data_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class PlainBlock(nn.Sequential):
    def __init__(self, channels: int, kernel: int, data_channels: int, dilation: int = 1):
        super().__init__(nn.ReLU(), MaskedConv2d(channels, channels, kernel, "B", data_channels, dilation=dilation))


def output_head(channels: int, out_channels: int, data_channels: int, layers: int) -> nn.Sequential:
    """`layers` ReLU + 1x1 mask-B convolutions; the last one maps to the head's parameters."""
    modules: list[nn.Module] = []
    for _ in range(layers - 1):
        modules += [nn.ReLU(), MaskedConv2d(channels, channels, 1, "B", data_channels)]
    modules += [nn.ReLU(), MaskedConv2d(channels, out_channels, 1, "B", data_channels)]
    return nn.Sequential(*modules)


class PixelCNN(nn.Module):
    """image (B, C, H, W) in [0, 1] -> params (B, distribution.num_params(C), H, W)."""

    def __init__(self, image_shape: tuple[int, int, int], distribution, keys: PixelCNNKeys, num_classes: int | None = None):
        super().__init__()
        c, channels, depth = image_shape[0], keys.channels, keys.depth
        self.image_shape = tuple(image_shape)
        self.distribution = distribution
        self.num_classes = num_classes
        self.first = MaskedConv2d(c, channels, keys.first_kernel, "A", c)
        block = ResidualBlock if keys.residual else PlainBlock
        self.blocks = nn.Sequential(*(block(channels, keys.kernel, c, keys.dilation) for _ in range(depth)))
        self.head = output_head(channels, distribution.num_params(c), c, keys.head_layers)
        # one bias per block input and one for the head's
        self.label_bias = ClassBias(num_classes, channels, depth + 1) if num_classes else None

    def _stages(self, y: torch.Tensor | None) -> list:
        return with_label_biases([self.first, *self.blocks, self.head], self.label_bias, y)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return run_stages(self._stages(y), x)

    def fast_stepper(self, batch: int, device, dtype, y: torch.Tensor | None) -> CachedColumns:
        return CachedColumns(self._stages(y), self.image_shape, batch, device, dtype)


register_layer(ResidualBlock)(Residual)

