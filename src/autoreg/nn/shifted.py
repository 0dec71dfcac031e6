"""Shifted convolutions (Salimans et al. 2017, "PixelCNN++", arXiv 1701.05517, sec. 2.5; reference
code openai/pixel-cnn, nn.py): causal convolutions without masks.

A masked k x k convolution multiplies most of its kernel by zero. PixelCNN++ instead gives each
stream a small dense kernel placed, by zero padding on one side only, where the context is:

    down-shifted (2 x 3): output (i, j) reads rows i-1..i, columns j-1..j+1

        x x x        the "u" stream: after the first layer's `down_shift` it never sees its own
        x o x        row, so stacking keeps it strictly above (a field growing upward, no blind
                     spot: every column within reach)

    down-right-shifted (2 x 2): output (i, j) reads rows i-1..i, columns j-1..j

        x x          the "ul" stream: after the first layer's `right_shift` it never sees its own
        x o          pixel; it reads the u stream at the same position for the rows above

With stride 2 (the downsampling layers) output (p, q) is the same convolution at (2p, 2q), so a
coarse row p of the u stream sees fine rows < 2p. The transposed versions (upsampling) crop the
full transposed convolution so that fine pixel (i, j) reads coarse row i // 2 only, which sees
fine rows < 2 (i // 2) <= i: the crops of openai/pixel-cnn's `down_shifted_deconv2d` /
`down_right_shifted_deconv2d`, cut to any output size (28 -> 14 -> 7 and back, 32 -> 16 -> 8).

Padding is always zeros; the model adds a channel of ones to its input so that the network can
tell the image's zeros from the padding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def down_shift(x: Tensor) -> Tensor:
    """Row i of the output is row i - 1 of `x` (row 0 is zeros)."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def right_shift(x: Tensor) -> Tensor:
    """Column j of the output is column j - 1 of `x` (column 0 is zeros)."""
    return F.pad(x, (1, 0))[..., :-1]


def concat_elu(x: Tensor) -> Tensor:
    """elu([x, -x]) along channels (PixelCNN++ sec. 2.5): both signs of every feature pass, so the
    nonlinearity discards nothing. Doubles the channels."""
    return F.elu(torch.cat([x, -x], dim=1))


class DownShiftedConv2d(nn.Conv2d):
    """Output (i, j) reads input rows i-kh+1 .. i and columns j-(kw-1)/2 .. j+(kw-1)/2 (kw odd):
    zero padding on top and on both sides. With stride s, output (p, q) is the one at (s p, s q),
    and the output is ceil(H / s) x ceil(W / s)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int] = (2, 3), stride: int = 1):
        if kernel_size[1] % 2 == 0:
            raise ValueError(f"a down-shifted convolution needs an odd kernel width, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        kh, kw = self.kernel_size
        return super().forward(F.pad(x, ((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0)))


class DownRightShiftedConv2d(nn.Conv2d):
    """Output (i, j) reads input rows i-kh+1 .. i and columns j-kw+1 .. j: zero padding on top and
    left. With stride s, output (p, q) is the one at (s p, s q)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int] = (2, 2), stride: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        kh, kw = self.kernel_size
        return super().forward(F.pad(x, (kw - 1, 0, kh - 1, 0)))


class DownShiftedConvTranspose2d(nn.ConvTranspose2d):
    """The 2 x 3, stride-2 upsampling of the u stream: output (i, j) reads input row i // 2 only,
    columns (j - 1) / 2 .. (j + 1) / 2 (the transposed convolution cropped one column left)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int] = (2, 3), stride: int = 2):
        if kernel_size[0] != stride or kernel_size[1] % 2 == 0:
            raise ValueError(f"kernel {kernel_size} with stride {stride}: the rows must equal the stride and the width be odd")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        """Upsampled to `size` (H, W) <= (stride * x's H, stride * x's W)."""
        h, w = size
        left = (self.kernel_size[1] - 1) // 2
        return super().forward(x)[:, :, :h, left : left + w]


class DownRightShiftedConvTranspose2d(nn.ConvTranspose2d):
    """The 2 x 2, stride-2 upsampling of the ul stream: output (i, j) reads input (i // 2, j // 2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int] = (2, 2), stride: int = 2):
        if tuple(kernel_size) != (stride, stride):
            raise ValueError(f"kernel {kernel_size} with stride {stride}: the kernel must be stride x stride")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        h, w = size
        return super().forward(x)[:, :, :h, :w]
