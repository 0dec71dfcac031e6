"""PixelCNN++ (Salimans, Karpathy, Chen & Kingma 2017, "PixelCNN++: Improving the PixelCNN with
Discretized Logistic Mixture Likelihood and Other Modifications", arXiv 1701.05517; reference code
openai/pixel-cnn, model.py).

What it changes against PixelCNN (paper sec. 2):
1. the likelihood: a discretized logistic mixture per pixel, its channels coupled linearly
   (autoreg.distributions.DiscretizedLogisticMixture), instead of a 256-way softmax per sub-pixel;
   the network sees earlier pixels only, never a channel of the current one;
2. no masks: two streams of shifted convolutions (autoreg.nn.shifted), "u" seeing the rows above
   and "ul" the rows above and the current row to the left, so there is no blind spot;
3. three resolutions (H, H/2, H/4) with strided down- and transposed up-sampling, and a U-Net's
   shortcut connections from the upward pass into the downward one;
4. gated resnet blocks with concat_elu, and dropout inside every block.

    up pass (nr_resnet blocks per resolution)        down pass (nr_resnet, then nr_resnet + 1)
    u0, ul0 ─ blocks ─┬─ stride 2 ─ blocks ─┬─ stride 2 ─ blocks ─┐
                      │                     │                     │ (H/4)
                      │                     └─ shortcuts ─ blocks ┘ ─ up x2 ┐
                      └──────────────────────── shortcuts ─ blocks ─ up x2 ─┘ (H/2)
                                              shortcuts ─ blocks ─> elu ─> 1x1 ─> params  (H)

A gated resnet block (`GatedResnet`, reference `gated_resnet`), F features, `a` the shortcut
input (the u stream for ul blocks; in the down pass the upward pass's output, concatenated with u
for ul):

    x -> concat_elu -> conv -> (+ 1x1(concat_elu(a))) -> concat_elu -> dropout -> conv (2F)
      -> [p, q] -> x + p * sigmoid(q)

Streams, first layers: u0 = down_shift(2x3 down-shifted conv of x); ul0 = down_shift(1x3
down-shifted conv of x) + right_shift(2x1 down-right-shifted conv of x); x carries an extra
channel of ones (so zero padding differs from black). u blocks use 2x3 down-shifted convolutions,
ul blocks 2x2 down-right-shifted ones. Heights and widths need not be multiples of 4: 28 -> 14 ->
7 (MNIST) works as 32 -> 16 -> 8 (CIFAR-10) does; the upsampling crops to the shortcut's size.

Class-conditional (`num_classes`): a learned bias per class added to the second convolution of
every block (the reference's `h` projection, conditional PixelCNN's V^T h; autoreg.nn.ClassBias).

Likelihoods: `logistic_mixture` for 8-bit data (the paper's, any number of channels). For
single-channel images the per-sub-pixel heads also apply, since a pixel is then one sub-pixel
(`bernoulli` for binarized MNIST, `categorical` for 8-bit); with more channels they would need
the channel order inside a pixel, which this network does not have, so they are refused.

NOTE: the reference normalises every weight (weight normalisation with a data-dependent
initialisation); we use plain convolutions with PyTorch's initialisation, the second convolution
of each block scaled by 0.1 (the reference's init_scale). Sampling is naive only (a full forward
pass per pixel); Fast PixelCNN++ caching (arXiv 1704.06001) is not implemented.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoreg.families.pixelcnn_pp import PixelCNNppKeys
from autoreg.nn import ClassBias
from autoreg.nn.shifted import (
    DownRightShiftedConv2d,
    DownRightShiftedConvTranspose2d,
    DownShiftedConv2d,
    DownShiftedConvTranspose2d,
    concat_elu,
    down_shift,
    right_shift,
)

RESOLUTIONS = 3  # H, H/2, H/4 (the paper's)


class GatedResnet(nn.Module):
    """x + p * sigmoid(q): the reference's `gated_resnet` (module docstring). `conv` makes the
    stream's causal convolution; `shortcut` is the number of channels of the input `a` (0: none)."""

    def __init__(self, channels: int, conv: type[nn.Conv2d], shortcut: int = 0, dropout: float = 0.0):
        super().__init__()
        self.conv_in = conv(2 * channels, channels)
        self.shortcut = nn.Conv2d(2 * shortcut, channels, 1) if shortcut else None
        self.dropout = nn.Dropout(dropout)
        self.conv_out = conv(2 * channels, 2 * channels)
        with torch.no_grad():  # the reference's init_scale=0.1: each block starts near the identity
            self.conv_out.weight.mul_(0.1)

    def forward(self, x: Tensor, a: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        """`bias` (B, 2F): the label's bias of the second convolution, or None."""
        h = self.conv_in(concat_elu(x))
        if self.shortcut is not None:
            h = h + self.shortcut(concat_elu(a))
        h = self.conv_out(self.dropout(concat_elu(h)))
        if bias is not None:
            h = h + bias[:, :, None, None]
        p, q = h.chunk(2, dim=1)
        return x + p * torch.sigmoid(q)


def _blocks(count: int, channels: int, conv: type[nn.Conv2d], shortcut: int, dropout: float) -> nn.ModuleList:
    return nn.ModuleList(GatedResnet(channels, conv, shortcut, dropout) for _ in range(count))


class PixelCNNpp(nn.Module):
    """image (B, C, H, W) in [0, 1] -> params (B, distribution.num_params(C), H, W)."""

    def __init__(self, image_shape: tuple[int, int, int], distribution, keys: PixelCNNppKeys, num_classes: int | None = None):
        super().__init__()
        c, dropout = image_shape[0], keys.dropout
        self.image_shape = tuple(image_shape)
        self.distribution = distribution
        self.num_classes = num_classes
        f, n = keys.channels, keys.nr_resnet
        self.u_first = DownShiftedConv2d(c + 1, f, (2, 3))
        self.ul_first_above = DownShiftedConv2d(c + 1, f, (1, 3))
        self.ul_first_left = DownRightShiftedConv2d(c + 1, f, (2, 1))
        # up pass: per resolution, n blocks of each stream; strided convolutions between resolutions
        self.up_u = nn.ModuleList(_blocks(n, f, DownShiftedConv2d, 0, dropout) for _ in range(RESOLUTIONS))
        self.up_ul = nn.ModuleList(_blocks(n, f, DownRightShiftedConv2d, f, dropout) for _ in range(RESOLUTIONS))
        self.down_u_stride = nn.ModuleList(DownShiftedConv2d(f, f, (2, 3), stride=2) for _ in range(RESOLUTIONS - 1))
        self.down_ul_stride = nn.ModuleList(DownRightShiftedConv2d(f, f, (2, 2), stride=2) for _ in range(RESOLUTIONS - 1))
        # down pass: n blocks at the lowest resolution, n + 1 at the others (one per shortcut)
        counts = [n] + [n + 1] * (RESOLUTIONS - 1)
        self.down_u = nn.ModuleList(_blocks(k, f, DownShiftedConv2d, f, dropout) for k in counts)
        self.down_ul = nn.ModuleList(_blocks(k, f, DownRightShiftedConv2d, 2 * f, dropout) for k in counts)
        self.up_u_stride = nn.ModuleList(DownShiftedConvTranspose2d(f, f) for _ in range(RESOLUTIONS - 1))
        self.up_ul_stride = nn.ModuleList(DownRightShiftedConvTranspose2d(f, f) for _ in range(RESOLUTIONS - 1))
        self.out = nn.Conv2d(f, distribution.num_params(c), 1)
        blocks = 2 * (RESOLUTIONS * n + sum(counts))
        self.label_bias = ClassBias(num_classes, 2 * f, blocks) if num_classes else None

    def _biases(self, y: Tensor | None) -> Iterator[Tensor | None]:
        """The label's bias of every block, in the order `forward` runs them (or Nones)."""
        if self.label_bias is None:
            while True:
                yield None
        yield from self.label_bias(y)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        bias = self._biases(y)
        x = torch.cat([2 * x - 1, torch.ones_like(x[:, :1])], dim=1)  # [-1, 1], and a channel of ones
        us = [down_shift(self.u_first(x))]
        uls = [down_shift(self.ul_first_above(x)) + right_shift(self.ul_first_left(x))]
        for r in range(RESOLUTIONS):
            if r > 0:
                us.append(self.down_u_stride[r - 1](us[-1]))
                uls.append(self.down_ul_stride[r - 1](uls[-1]))
            for u_block, ul_block in zip(self.up_u[r], self.up_ul[r]):
                us.append(u_block(us[-1], bias=next(bias)))
                uls.append(ul_block(uls[-1], us[-1], next(bias)))
        u, ul = us.pop(), uls.pop()
        for r in range(RESOLUTIONS):
            if r > 0:
                size = us[-1].shape[-2:]
                u, ul = self.up_u_stride[r - 1](u, size), self.up_ul_stride[r - 1](ul, size)
            for u_block, ul_block in zip(self.down_u[r], self.down_ul[r]):
                u = u_block(u, us.pop(), next(bias))
                ul = ul_block(ul, torch.cat([u, uls.pop()], dim=1), next(bias))
        return self.out(F.elu(ul))

