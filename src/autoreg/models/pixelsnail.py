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
F-feature gated resnet block (the streams' and the one after each attention; autoreg.nn.conditioning.ClassBias).

Likelihoods: as PixelCNN++ (whole pixels: the logistic mixture; for one-channel images also the
per-sub-pixel heads).

`u_stream=false` drops the u stream, as the reference's CIFAR-10 network (`h12_noup_smallkey`)
does: the ul convolutions then reach only up and to the left, and the attention brings the rest.

NOTE: the reference's CIFAR-10 blocks use elu; ours use PixelCNN++'s concat_elu (as the reference's
`model_spec` does), which doubles each convolution's inputs. Plain convolutions with PyTorch's
initialisation instead of weight normalisation, as in our PixelCNN++.

Fast sampling (`PixelSNAILStepper`): the streams cached as in Fast PixelCNN++ (Ramachandran et al.
2017, arXiv 1704.06001) and a key-value cache per attention block, exact, conditional too.
"""
from __future__ import annotations

import functools
import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoreg.families.pixelsnail import PixelSNAILKeys
from autoreg.models.pixelcnn_pp import CachedBlock, GatedResnet, u_first_region, ul_first_region
from autoreg.nn.conditioning import ClassBias
from autoreg.nn.shifted import (
    DownRightShiftedConv2d,
    DownShiftedConv2d,
    PaddedMap,
    concat_elu,
    down_shift,
    one_by_one,
    right_shift,
)

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


class PointwiseGatedResnet(GatedResnet):
    """A GatedResnet of 1x1 convolutions (the attention block's): the same module and parameters,
    each convolution one matrix product at a single position (fast sampling)."""

    def __init__(self, channels: int, shortcut: int = 0, dropout: float = 0.0):
        super().__init__(channels, PointwiseConv, shortcut, dropout)

    def forward(self, x: Tensor, a: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        h = self.join(one_by_one(self.conv_in, concat_elu(x)), a)
        return self.gate(x, one_by_one(self.conv_out, self.dropout(concat_elu(h))), bias)


class CausalAttention(nn.Module):
    """The attention block's lookup (module docstring): (B, kv_channels, H, W) and (B, q_channels,
    H, W) -> (B, value_channels, H, W), position i a softmax-weighted sum of the values of positions
    j < i in raster order."""

    def __init__(self, kv_channels: int, q_channels: int, key_channels: int, value_channels: int, heads: int,
                 dropout: float = 0.0):
        super().__init__()
        self.key_channels, self.value_channels, self.heads = key_channels, value_channels, heads
        self.kv_features = PointwiseGatedResnet(kv_channels, dropout=dropout)
        self.kv = nn.Conv2d(kv_channels, key_channels + value_channels, 1)
        self.q_features = PointwiseGatedResnet(q_channels, dropout=dropout)
        self.q = nn.Conv2d(q_channels, key_channels, 1)

    def _heads(self, x: Tensor) -> Tensor:
        """(B, heads * d, H, W) -> (B, heads, H * W, d), contiguous: the fused kernels need d at stride 1,
        which a convolution's output (possibly channels-last) does not guarantee."""
        return x.flatten(2).unflatten(1, (self.heads, -1)).transpose(-1, -2).contiguous()

    def keys_values(self, kv_in: Tensor) -> tuple[Tensor, Tensor]:
        """Each position's keys and values, (B, heads, H * W, d): from that position's features only."""
        keys, values = one_by_one(self.kv, self.kv_features(kv_in)).split([self.key_channels, self.value_channels], dim=1)
        return self._heads(keys), self._heads(values)

    def queries(self, q_in: Tensor) -> Tensor:
        """Each position's queries, (B, heads, H * W, d_key)."""
        return self._heads(one_by_one(self.q, self.q_features(q_in)))

    def attend(self, queries: Tensor, keys: Tensor, values: Tensor, h: int, w: int) -> Tensor:
        """Every position's query against the keys of the strictly earlier positions ->
        (B, value_channels, h, w)."""
        mask, has_past = earlier_pixels(h * w, queries.device)
        mixed = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask) * has_past
        return mixed.transpose(-1, -2).reshape(queries.shape[0], self.value_channels, h, w)

    def forward(self, kv_in: Tensor, q_in: Tensor) -> Tensor:
        keys, values = self.keys_values(kv_in)
        return self.attend(self.queries(q_in), keys, values, *q_in.shape[-2:])


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
        self.mix = nn.ModuleList(PointwiseGatedResnet(f, keys.value_channels, dropout) for _ in range(keys.depth))
        self.out = nn.Conv2d(f, distribution.num_params(c), 1)
        self.label_bias = ClassBias(num_classes, 2 * f, keys.depth * (u + n + 1)) if num_classes else None

    def biases(self, y: Tensor | None):
        """The label's bias of every F-feature gated resnet block, in the order `forward` runs them
        (or Nones)."""
        return iter(self.label_bias(y)) if self.label_bias is not None else itertools.repeat(None)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        bias = self.biases(y)
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

    def fast_stepper(self, batch: int, device, dtype, y: Tensor | None) -> PixelSNAILStepper:
        return PixelSNAILStepper(self, batch, device, dtype, y)


class _CachedAttention:
    """An attention block's caches: the keys and values of every position (B, heads, H W, d),
    those of the first `PixelSNAILStepper._final` positions final, and the block's output map (the
    gated resnet after the lookup). The block's input `s` is the ul stream's cached last map."""

    def __init__(self, attention: CausalAttention, mix: PointwiseGatedResnet, s: PaddedMap, out: PaddedMap,
                 bias: Tensor | None, positions: int):
        self.attention, self.mix, self.s, self.out, self.bias = attention, mix, s, out, bias
        b, device, dtype = s.padded.shape[0], s.padded.device, s.padded.dtype
        heads = attention.heads
        self.keys = torch.zeros(b, heads, positions, attention.key_channels // heads, device=device, dtype=dtype)
        self.values = torch.zeros(b, heads, positions, attention.value_channels // heads, device=device, dtype=dtype)


class PixelSNAILStepper:
    """The exact cached sampler (autoreg.sampling.Stepper) of a PixelSNAIL (Chen et al. 2018, arXiv
    1712.09763): Fast PixelCNN++'s caching of the convolutions (Ramachandran et al. 2017, arXiv
    1704.06001) at PixelSNAIL's one resolution, and a key-value cache per attention block.

    Every map of the streams is cached whole (`PaddedMap`), as in autoreg.models.pixelcnn_pp's
    stepper: at the first pixel of row i the u stream's row i at every layer (it reads only the rows
    above); at pixel q = (i, j) the ul stream at (i, j). Each attention block keeps the keys and
    values of the positions before q: a position's key reads the image there, so it is computed
    (committed) once that pixel is on the canvas, at the next step, from the block's cached input.
    The lookup at q is then one query against the keys of positions 0..q-1, all earlier, so without
    a mask (q = 0 reads nothing: zero, as the full pass's mask gives), and the gated resnet after it
    runs at (i, j) alone. Each step is the forward pass's own arithmetic on the same inputs (the
    layers' `region`, the modules' `keys_values`, `queries` and `forward` at one position), so the
    params equal the naive ones to float rounding. Dropout is skipped: sampling runs in eval mode.
    """

    def __init__(self, model: PixelSNAIL, batch: int, device, dtype, y: Tensor | None):
        c, h, w = model.image_shape
        self._model, self._size = model, (h, w)
        self.canvas = torch.zeros(batch, c, h, w, device=device, dtype=dtype)
        features = model.out.in_channels

        def new(channels: int = features) -> PaddedMap:
            return PaddedMap(batch, channels, h, w, device, dtype)

        self._x = new(c + 1)
        self._x.map[:, c] = 1  # the channel of ones (the border stays zero, as forward's padding)
        # Position p = i w + j of a map, flattened: column (i + 1) (w + 2) + j + 1 of its padded buffer.
        self._flat = [(i + 1) * (w + 2) + j + 1 for i in range(h) for j in range(w)]
        self._flat_index = torch.tensor(self._flat, device=device)
        self._where = background(batch, h, w, self.canvas).flatten(2)
        biases = model.biases(y)

        def bias() -> Tensor | None:
            b = next(biases)
            return None if b is None else b.to(dtype)

        self._u_first = new() if model.u_first is not None else None
        self._ul_first = new()
        self._u_blocks: list[CachedBlock] = []  # every block of the u stream, in order
        self._blocks: list[tuple[list[CachedBlock], _CachedAttention]] = []
        u, ul = self._u_first, self._ul_first
        for u_blocks, ul_blocks, attention, mix in zip(model.u_blocks, model.ul_blocks, model.attention, model.mix):
            cached_ul = []
            for k, ul_block in enumerate(ul_blocks):
                if u is not None:
                    self._u_blocks.append(CachedBlock(u_blocks[k], u, new, bias(), []))
                    u = self._u_blocks[-1].out
                cached_ul.append(CachedBlock(ul_block, ul, new, bias(), [] if u is None else [u]))
                ul = cached_ul[-1].out
            self._blocks.append((cached_ul, _CachedAttention(attention, mix, ul, new(), bias(), h * w)))
            ul = self._blocks[-1][1].out
        self._final_map = ul
        self._final = 0  # positions whose keys and values are final in every block
        self._primed = False

    def _columns(self, cached: PaddedMap, start: int, stop: int) -> Tensor:
        """Positions start..stop-1 of a cached map, (B, C, 1, stop - start)."""
        flat = cached.padded.flatten(2)
        if stop - start == 1:  # a slice: much cheaper than indexing
            return flat[:, :, None, self._flat[start] : self._flat[start] + 1]
        return flat[:, :, self._flat_index[start:stop]].unsqueeze(2)

    def _kv_in(self, block: _CachedAttention, start: int, stop: int) -> Tensor:
        """The keys' and values' input at positions start..stop-1: [image, s, background]."""
        c = self.canvas.shape[1]
        image = self._columns(self._x, start, stop)[:, :c]
        return torch.cat([image, self._columns(block.s, start, stop), self._where[:, :, None, start:stop]], dim=1)

    def _commit(self, stop: int) -> None:
        """The keys and values of positions `_final`..stop-1, whose pixels are now on the canvas."""
        start = self._final
        if start >= stop:
            return
        for _, block in self._blocks:
            keys, values = block.attention.keys_values(self._kv_in(block, start, stop))
            block.keys[:, :, start:stop] = keys
            block.values[:, :, start:stop] = values
        self._final = stop

    def _head(self, rows: tuple[int, int], cols: tuple[int, int]) -> Tensor:
        return one_by_one(self._model.out, F.elu(self._final_map.read(rows, cols)))

    def prime(self) -> Tensor:
        """One full pass over the canvas: every map, and every position's keys and values (those
        after the next step's position are committed again once their pixels are drawn)."""
        h, w = self._size
        full = ((0, h), (0, w))
        self._x.map[:, :-1] = 2 * self.canvas - 1
        if self._u_first is not None:
            u_first_region(self._model.u_first, self._x, self._u_first, full)
        ul_first_region(self._model.ul_first_above, self._model.ul_first_left, self._x, self._ul_first, full)
        for block in self._u_blocks:
            block.run(*full)
        for cached_ul, block in self._blocks:
            for cached in cached_ul:
                cached.run(*full)
            s = block.s.map
            attention = block.attention
            where = self._where.view(*self._where.shape[:2], h, w)
            keys, values = attention.keys_values(torch.cat([self._x.map[:, :-1], s, where], dim=1))
            block.keys.copy_(keys)
            block.values.copy_(values)
            mixed = attention.attend(attention.queries(torch.cat([s, where], dim=1)), keys, values, h, w)
            block.out.write(*full, block.mix(s, mixed, block.bias))
        self._primed = True
        return self._head(*full)

    def step(self, q: int) -> Tensor:
        h, w = self._size
        i, j = divmod(q, w)
        if self._primed:  # the full pass's keys and values of the positions before q are final
            self._final, self._primed = q, False
        if q > 0:  # the pixel drawn last, onto the input cache
            a, b = divmod(q - 1, w)
            self._x.map[:, :-1, a, b] = 2 * self.canvas[:, :, a, b] - 1
        self._commit(q)
        rows, cols = (i, i + 1), (j, j + 1)
        if j == 0:
            if self._u_first is not None:
                u_first_region(self._model.u_first, self._x, self._u_first, (rows, (0, w)))
            for block in self._u_blocks:
                block.run(rows, (0, w))
        ul_first_region(self._model.ul_first_above, self._model.ul_first_left, self._x, self._ul_first, (rows, cols))
        for cached_ul, block in self._blocks:
            for cached in cached_ul:
                cached.run(rows, cols)
            s = block.s.read(rows, cols)
            attention = block.attention
            if q == 0:  # no earlier position: the lookup reads nothing
                mixed = s.new_zeros(s.shape[0], attention.value_channels, 1, 1)
            else:
                query = attention.queries(torch.cat([s, self._where[:, :, None, q : q + 1]], dim=1))
                mixed = F.scaled_dot_product_attention(query, block.keys[:, :, :q], block.values[:, :, :q])
                mixed = mixed.transpose(-1, -2).reshape(s.shape[0], attention.value_channels, 1, 1)
            block.out.write(rows, cols, block.mix(s, mixed, block.bias))
        return self._head(rows, cols)[:, :, 0, 0]
