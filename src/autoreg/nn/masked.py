"""Masked convolutions (van den Oord et al. 2016, "Pixel Recurrent Neural Networks", sec. 3.4).

A masked convolution sees only pixels that come before the current one in raster order, and,
at the current pixel, only the colour channels that come before (mask A) or up to and including
(mask B) the current channel, in the order R -> G -> B. Mask A is used by the first layer (which
must not see the pixel it predicts); mask B by every later layer.

Spatial mask for k = 5 (1 = tap kept, C = centre):

    1 1 1 1 1
    1 1 1 1 1
    1 1 C 0 0      centre: channel mask (A: earlier channels only; B: earlier and same)
    0 0 0 0 0
    0 0 0 0 0

Channels are split into `data_channels` contiguous groups; group g of the outputs may read groups
< g (mask A) or <= g (mask B) of the inputs at the centre tap. With one data channel (MNIST) the
centre tap is simply dropped (A) or kept (B).

NOTE: the mask is applied to the weight inside the convolution call (`weight * mask`), never by
rewriting `weight.data` in place, so autograd and the optimizer see the masked parameterisation.

Only the rows the mask keeps are computed (the shifted convolution of PixelCNN++, Salimans et al.
2017, as one conv): every causal mask is zero below the centre row, so a kh x kw kernel (kh odd,
> 1) runs as its top kh // 2 + 1 rows on the input padded by dilation * (kh // 2) rows on top only.
Output (i, j) then reads exactly the input rows the full 'same' convolution weights by nonzero
taps: the same sum without terms that are exactly zero. A 7 x 7 kernel computes 28 taps, not 49.
(Its split into a rows-above conv plus a current-row conv, 25 taps, was no faster on the CPU.)
`weight` stays full kh x kw, so checkpoints and the readers of `weight * mask` (the fast sampler,
the PixelRNN layers) are unaffected. NOTE: a mask that kept taps below the centre row would be cut.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoreg.sampling.columns import Geometry, register_layer
from autoreg.sampling.engine import FastSamplingUnsupported


def channel_groups(num_channels: int, data_channels: int) -> torch.Tensor:
    """Group index (0..data_channels-1) of each of `num_channels` feature channels, contiguous."""
    return torch.arange(num_channels) * data_channels // num_channels


def causal_mask(
    out_channels: int,
    in_channels: int,
    kernel_size: tuple[int, int],
    mask_type: str,
    data_channels: int = 1,
) -> torch.Tensor:
    """The (out, in, kh, kw) 0/1 mask of a raster-order, channel-ordered causal convolution.

    The kernel's centre is (kh // 2, kw // 2); rows below it and taps right of it are masked.
    """
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    kh, kw = kernel_size
    ch, cw = kh // 2, kw // 2
    mask = torch.ones(out_channels, in_channels, kh, kw)
    mask[:, :, ch, cw:] = 0
    mask[:, :, ch + 1 :] = 0
    out_group = channel_groups(out_channels, data_channels)[:, None]
    in_group = channel_groups(in_channels, data_channels)[None, :]
    allowed = in_group < out_group if mask_type == "A" else in_group <= out_group
    mask[:, :, ch, cw] = allowed.float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """A 'same'-padded convolution whose weight is multiplied by a causal mask in each call.

    Computes only the kernel rows the mask keeps (the top kh // 2 + 1); see the module docstring.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        mask_type: str,
        data_channels: int = 1,
        dilation: int = 1,
        bias: bool = True,
    ):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        super().__init__(
            in_channels,
            out_channels,
            (kh, kw),
            padding=(dilation * (kh // 2), dilation * (kw // 2)),
            dilation=dilation,
            bias=bias,
        )
        self.mask_type = mask_type
        self.register_buffer(
            "mask", causal_mask(out_channels, in_channels, (kh, kw), mask_type, data_channels), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh = self.kernel_size[0]
        if kh == 1 or kh % 2 == 0:  # no rows below the centre (or no centre row): nothing to skip
            return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding, self.dilation)
        # The top kh // 2 + 1 rows only (the rest are masked to zero), on the input shifted down by
        # padding its top alone; see the module docstring.
        rows = kh // 2 + 1
        weight = self.weight[:, :, :rows] * self.mask[:, :, :rows]
        top, side = self.padding
        return F.conv2d(F.pad(x, (0, 0, top, 0)), weight, self.bias, self.stride, (0, side), self.dilation)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mask_type={self.mask_type}"


@register_layer(MaskedConv2d)
class _MaskedConvColumn:
    """A MaskedConv2d at one position: gather the unmasked taps, one matrix product.

    Taps whose mask is zero for every channel pair are dropped from the gather and the weight.
    A layer whose only tap is the centre (1x1) reads just `v`, with no cache.
    """

    def __init__(self, conv: MaskedConv2d, geometry: Geometry, cache: Tensor | None):
        if conv.stride != (1, 1) or conv.groups != 1 or any(k % 2 == 0 for k in conv.kernel_size):
            raise FastSamplingUnsupported(
                f"fast sampling needs odd kernels, stride 1 and groups 1 ({conv}); use sampling.method=naive"
            )
        kh, kw = conv.kernel_size
        dh, dw = conv.dilation
        weight = (conv.weight * conv.mask).to(geometry.dtype)
        taps = [(a, b) for a in range(kh) for b in range(kw) if conv.mask[:, :, a, b].any()]
        # (taps * C_in, C_out), rows in the order the gather lays out the inputs.
        self._weight = torch.stack([weight[:, :, a, b] for a, b in taps], 1).flatten(1).t().contiguous()
        self._bias = conv.bias
        self._conv = conv
        self._spatial = taps != [(kh // 2, kw // 2)]
        if not self._spatial:
            return
        b, h, w = geometry.batch, geometry.height, geometry.width
        self._own_cache = cache is None
        self._cache = (
            torch.zeros(b, h * w + 1, conv.in_channels, device=geometry.device, dtype=geometry.dtype)
            if cache is None
            else cache
        )
        self._pixels = self._cache.unbind(1)
        i = torch.arange(h).view(h, 1, 1)
        j = torch.arange(w).view(1, w, 1)
        rows = i + torch.tensor([(a - kh // 2) * dh for a, _ in taps])
        cols = j + torch.tensor([(bb - kw // 2) * dw for _, bb in taps])
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        index = torch.where(inside, rows * w + cols, h * w).view(h * w, len(taps))
        self._index = index.to(geometry.device).unbind(0)

    def step(self, v: Tensor, q: int) -> Tensor:
        if self._spatial:
            if self._own_cache:
                self._pixels[q].copy_(v)
            v = torch.index_select(self._cache, 1, self._index[q]).view(v.shape[0], -1)
        if self._bias is None:
            return v @ self._weight
        return torch.addmm(self._bias, v, self._weight)

    def full(self, x: Tensor) -> Tensor:
        if self._spatial and self._own_cache:
            self._cache[:, :-1].copy_(x.flatten(2).transpose(1, 2))
        return self._conv(x)
