"""PixelSNAIL (Chen, Mishra, Rohaninejad & Abbeel 2018, "PixelSNAIL: An Improved Autoregressive
Generative Model", ICML, arXiv 1712.09763, sec. 3; reference code neocxi/pixelsnail-public).

Causal convolutions reach only a bounded neighbourhood of the past; a soft-attention lookup reaches
all of it at once. PixelSNAIL interleaves the two: `depth` blocks, each (F = `channels`)

    u  ─ nr_resnet gated resnets, 2x3 down-shifted ────────────────────────────────────────> u
    ul ─ nr_resnet gated resnets, 2x2 down-right-shifted, reading u ─> s ─> 1x1 gated resnet ─> ul
                                                                            ^ shortcut input a
    keys, values = 1x1(1x1 gated resnet([image, s, background])) ─┐         │
    queries      = 1x1(1x1 gated resnet([s, background])) ────────┴─ causal attention ─> a

and after the last block elu -> 1x1 -> the likelihood's parameters. The streams and their first
layers are PixelCNN++'s (autoreg.models.pixelcnn_pp.GatedResnet, autoreg.nn.shifted) at one
resolution: u sees the rows above, ul the rows above and the current row to the left, so the
convolutions alone have no blind spot. The background is two channels, (i - H/2) / H and
(j - W/2) / W, the position of each pixel. Keys and values read the image itself, so pixel j's key
holds x_j: the attention mask must be strictly lower-triangular in raster order (position i reads
positions j < i, never itself), and the first pixel, with no past, reads nothing (its attention
output is zero). Through the image in the keys, the params of every pixel depend on every earlier
pixel from the first block on.

    the attention mask over a 3 x 3 image (row: query i, column: key j; 1: may read)
        i=0  . . . . . . . . .    (no key: the output is zero)
        i=1  1 . . . . . . . .
        i=2  1 1 . . . . . . .
        ...
        i=8  1 1 1 1 1 1 1 1 .

Every projection of the attention block is per position (1x1 gated resnets and 1x1 convolutions),
so the key and value of pixel j depend on the features at j alone and the attention is PyTorch's
`scaled_dot_product_attention` over (B, heads, H*W, d) sequences. A cached sampler can thus compute
each pixel's keys and values once, when it is drawn, and keep them; a new pixel then costs one query
against that cache per block.

Class-conditional (`num_classes`): a learned bias per class added to the second convolution of every
F-feature gated resnet block (the streams' and the one after each attention; autoreg.nn.ClassBias).

Likelihoods: as PixelCNN++ (whole pixels: the logistic mixture; for one-channel images also the
per-sub-pixel heads).

`u_stream=false` drops the u stream, as the reference's CIFAR-10 network (`h12_noup_smallkey`)
does: the ul convolutions then reach only up and to the left, and the attention brings the rest.

NOTE: the reference's CIFAR-10 blocks use elu; ours use PixelCNN++'s concat_elu (as the reference's
`model_spec` does), which doubles each convolution's inputs. Plain convolutions with PyTorch's
initialisation instead of weight normalisation, as in our PixelCNN++. Sampling is naive only (a
full forward pass per pixel).
"""
from __future__ import annotations

import functools
import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoreg.families.pixelsnail import PixelSNAILKeys
from autoreg.models.pixelcnn_pp import GatedResnet
from autoreg.nn import ClassBias
from autoreg.nn.shifted import DownRightShiftedConv2d, DownShiftedConv2d, down_shift, right_shift

PointwiseConv = functools.partial(nn.Conv2d, kernel_size=1)  # the reference's `nin`
BACKGROUND = 2  # channels of the positional background


def background(batch: int, h: int, w: int, like: Tensor) -> Tensor:
    """(batch, 2, h, w): each pixel's row and column, (i - h/2) / h and (j - w/2) / w (the reference's)."""
    rows = (torch.arange(h, dtype=like.dtype, device=like.device) - h / 2) / h
    cols = (torch.arange(w, dtype=like.dtype, device=like.device) - w / 2) / w
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij")).expand(batch, BACKGROUND, h, w)


def earlier_pixels(n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """The attention mask of n positions in raster order, (n, n), True where query i may read key j
    (j < i), and (n, 1), True where a query has any key (all but the first). The first row is given
    its own key so that no row is empty (an empty softmax is NaN in some backends); its output is
    then multiplied by zero."""
    mask = torch.ones(n, n, dtype=torch.bool, device=device).tril(-1)
    mask[0, 0] = True
    has_past = (torch.arange(n, device=device) > 0)[:, None]
    return mask, has_past


class CausalAttention(nn.Module):
    """The attention block's lookup (module docstring): (B, kv_channels, H, W) and (B, q_channels,
    H, W) -> (B, value_channels, H, W), position i a softmax-weighted sum of the values of positions
    j < i in raster order."""

    def __init__(self, kv_channels: int, q_channels: int, key_channels: int, value_channels: int, heads: int,
                 dropout: float = 0.0):
        super().__init__()
        self.key_channels, self.value_channels, self.heads = key_channels, value_channels, heads
        self.kv_features = GatedResnet(kv_channels, PointwiseConv, dropout=dropout)
        self.kv = nn.Conv2d(kv_channels, key_channels + value_channels, 1)
        self.q_features = GatedResnet(q_channels, PointwiseConv, dropout=dropout)
        self.q = nn.Conv2d(q_channels, key_channels, 1)

    def _heads(self, x: Tensor) -> Tensor:
        """(B, heads * d, H, W) -> (B, heads, H * W, d), contiguous: the fused kernels need d at stride 1,
        which a convolution's output (possibly channels-last) does not guarantee."""
        return x.flatten(2).unflatten(1, (self.heads, -1)).transpose(-1, -2).contiguous()

    def keys_values(self, kv_in: Tensor) -> tuple[Tensor, Tensor]:
        """Each position's keys and values, (B, heads, H * W, d): from that position's features only."""
        keys, values = self.kv(self.kv_features(kv_in)).split([self.key_channels, self.value_channels], dim=1)
        return self._heads(keys), self._heads(values)

    def queries(self, q_in: Tensor) -> Tensor:
        """Each position's queries, (B, heads, H * W, d_key)."""
        return self._heads(self.q(self.q_features(q_in)))

    def forward(self, kv_in: Tensor, q_in: Tensor) -> Tensor:
        b, _, h, w = q_in.shape
        keys, values = self.keys_values(kv_in)
        mask, has_past = earlier_pixels(h * w, q_in.device)
        mixed = F.scaled_dot_product_attention(self.queries(q_in), keys, values, attn_mask=mask) * has_past
        return mixed.transpose(-1, -2).reshape(b, self.value_channels, h, w)


class PixelSNAIL(nn.Module):
    """image (B, C, H, W) in [0, 1] -> params (B, distribution.num_params(C), H, W)."""

    def __init__(self, image_shape: tuple[int, int, int], distribution, keys: PixelSNAILKeys, num_classes: int | None = None):
        super().__init__()
        c = image_shape[0]
        self.image_shape = tuple(image_shape)
        self.distribution = distribution
        self.num_classes = num_classes
        f, n, dropout = keys.channels, keys.nr_resnet, keys.dropout
        self.ul_first_above = DownShiftedConv2d(c + 1, f, (1, 3))
        self.ul_first_left = DownRightShiftedConv2d(c + 1, f, (2, 1))
        u = n if keys.u_stream else 0  # u blocks per block
        self.u_first = DownShiftedConv2d(c + 1, f, (2, 3)) if u else None
        self.u_blocks = nn.ModuleList(
            nn.ModuleList(GatedResnet(f, DownShiftedConv2d, 0, dropout) for _ in range(u)) for _ in range(keys.depth))
        self.ul_blocks = nn.ModuleList(
            nn.ModuleList(GatedResnet(f, DownRightShiftedConv2d, f if u else 0, dropout) for _ in range(n))
            for _ in range(keys.depth))
        self.attention = nn.ModuleList(
            CausalAttention(c + f + BACKGROUND, f + BACKGROUND, keys.key_channels, keys.value_channels, keys.heads, dropout)
            for _ in range(keys.depth))
        self.mix = nn.ModuleList(GatedResnet(f, PointwiseConv, keys.value_channels, dropout) for _ in range(keys.depth))
        self.out = nn.Conv2d(f, distribution.num_params(c), 1)
        self.label_bias = ClassBias(num_classes, 2 * f, keys.depth * (u + n + 1)) if num_classes else None

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        bias = iter(self.label_bias(y)) if self.label_bias is not None else itertools.repeat(None)
        b, _, h, w = x.shape
        image = 2 * x - 1
        x = torch.cat([image, torch.ones_like(x[:, :1])], dim=1)  # a channel of ones: the image's zeros are not padding
        u = down_shift(self.u_first(x)) if self.u_first is not None else None
        ul = down_shift(self.ul_first_above(x)) + right_shift(self.ul_first_left(x))
        where = background(b, h, w, image)
        for u_blocks, ul_blocks, attention, mix in zip(self.u_blocks, self.ul_blocks, self.attention, self.mix):
            for k, ul_block in enumerate(ul_blocks):
                if u is not None:
                    u = u_blocks[k](u, bias=next(bias))
                ul = ul_block(ul, u, next(bias))
            mixed = attention(torch.cat([image, ul, where], dim=1), torch.cat([ul, where], dim=1))
            ul = mix(ul, mixed, next(bias))
        return self.out(F.elu(ul))
