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

Fast sampling (Ramachandran et al. 2017, "Fast Generation for Convolutional Autoregressive
Models", arXiv 1704.06001) keeps every layer's output in a `PaddedMap`, the map inside the zero
border these kernels read, and computes only a region of a layer (a row, one position) from the
cache of its input: `region` of the convolutions, the transposed ones' `forward` on a region.
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


def one_by_one(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """A 1 x 1 convolution `conv` of `x`; at a single position (fast sampling) as one matrix
    product, which costs much less than a convolution call there."""
    if x.shape[-2:] != (1, 1):
        return conv(x)
    return torch.addmm(conv.bias, x.flatten(1), conv.weight.flatten(1).t())[:, :, None, None]


class PaddedMap:
    """A cached activation map (B, C, H, W), `map`, inside one zero row on top and one zero column
    on each side (`padded`): all the padding the shifted kernels here (at most 2 rows, 3 columns)
    read. concat_elu maps zeros to zeros, so the border also pads a block's activated input."""

    def __init__(self, batch: int, channels: int, height: int, width: int, device, dtype):
        self.padded = torch.zeros(batch, channels, height + 1, width + 2, device=device, dtype=dtype)
        self.map = self.padded[:, :, 1:, 1:-1]

    def write(self, rows: tuple[int, int], cols: tuple[int, int], value: Tensor) -> None:
        self.map[:, :, rows[0] : rows[1], cols[0] : cols[1]] = value

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> Tensor:
        return self.map[:, :, rows[0] : rows[1], cols[0] : cols[1]]


class _Region:
    """The output at a region of positions, from a `PaddedMap` of the input (fast sampling)."""

    def region(self, x: PaddedMap, rows: tuple[int, int], cols: tuple[int, int], pre=None) -> Tensor:
        """Output rows r0..r1-1 and columns c0..c1-1 (B, C_out, r1 - r0, c1 - c0) from `x`, with
        `pre` (element-wise and zero at zero, e.g. concat_elu) applied to the input first."""
        (kh, kw), s, left = self.kernel_size, self.stride[0], self._left
        (r0, r1), (c0, c1) = rows, cols
        # Output (p, q) reads input rows s p - kh + 1 .. s p and columns s q - left .. s q - left + kw - 1.
        slab = x.padded[:, :, s * r0 - kh + 2 : s * (r1 - 1) + 2, s * c0 - left + 1 : s * (c1 - 1) - left + kw + 1]
        slab = slab if pre is None else pre(slab)
        if r1 - r0 == 1 and c1 - c0 == 1:  # one position: one matrix product, much cheaper than a conv call
            out = torch.addmm(self.bias, slab.reshape(slab.shape[0], -1), self.weight.flatten(1).t())
            return out[:, :, None, None]
        return F.conv2d(slab, self.weight, self.bias, self.stride)


class DownShiftedConv2d(_Region, nn.Conv2d):
    """Output (i, j) reads input rows i-kh+1 .. i and columns j-(kw-1)/2 .. j+(kw-1)/2 (kw odd):
    zero padding on top and on both sides. With stride s, output (p, q) is the one at (s p, s q),
    and the output is ceil(H / s) x ceil(W / s)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int] = (2, 3), stride: int = 1):
        if kernel_size[1] % 2 == 0:
            raise ValueError(f"a down-shifted convolution needs an odd kernel width, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride)
        self._left = (kernel_size[1] - 1) // 2

    def forward(self, x: Tensor) -> Tensor:
        kh, kw = self.kernel_size
        return super().forward(F.pad(x, ((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0)))


class DownRightShiftedConv2d(_Region, nn.Conv2d):
    """Output (i, j) reads input rows i-kh+1 .. i and columns j-kw+1 .. j: zero padding on top and
    left. With stride s, output (p, q) is the one at (s p, s q)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int] = (2, 2), stride: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride)
        self._left = kernel_size[1] - 1

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
