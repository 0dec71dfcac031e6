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
every block (the reference's `h` projection, conditional PixelCNN's V^T h; autoreg.nn.conditioning.ClassBias).

Likelihoods: `logistic_mixture` for 8-bit data (the paper's, any number of channels). For
single-channel images the per-sub-pixel heads also apply, since a pixel is then one sub-pixel
(`bernoulli` for binarized MNIST, `categorical` for 8-bit); with more channels they would need
the channel order inside a pixel, which this network does not have, so they are refused.

NOTE: the reference normalises every weight (weight normalisation with a data-dependent
initialisation); we use plain convolutions with PyTorch's initialisation, the second convolution
of each block scaled by 0.1 (the reference's init_scale).

Fast sampling (`PixelCNNppStepper`): Fast PixelCNN++'s caching (Ramachandran et al. 2017, arXiv
1704.06001), exact, conditional too.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoreg.families.pixelcnn_pp import PixelCNNppKeys
from autoreg.nn.conditioning import ClassBias
from autoreg.nn.shifted import (
    DownRightShiftedConv2d,
    DownRightShiftedConvTranspose2d,
    DownShiftedConv2d,
    DownShiftedConvTranspose2d,
    PaddedMap,
    concat_elu,
    one_by_one,
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
        h = self.join(self.conv_in(concat_elu(x)), a)
        return self.gate(x, self.conv_out(self.dropout(concat_elu(h))), bias)

    def join(self, h: Tensor, a: Tensor | None) -> Tensor:
        """The first convolution's output `h` with the shortcut input's term added."""
        return h if self.shortcut is None else h + one_by_one(self.shortcut, concat_elu(a))

    @staticmethod
    def gate(x: Tensor, h: Tensor, bias: Tensor | None) -> Tensor:
        """x + p * sigmoid(q), [p, q] the second convolution's output `h` (plus the label's bias)."""
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

    def fast_stepper(self, batch: int, device, dtype, y: Tensor | None) -> PixelCNNppStepper:
        return PixelCNNppStepper(self, batch, device, dtype, y)


Region = tuple[tuple[int, int], tuple[int, int]]  # (rows, columns), each [start, stop)


def u_first_region(conv: DownShiftedConv2d, x: PaddedMap, out: PaddedMap, region: Region) -> None:
    """u0 = down_shift(conv(x)) at `region` of `out`: row i reads the first layer's row i - 1; row 0
    stays zero."""
    (r0, r1), cols = region
    a = max(r0, 1)
    if a < r1:
        out.write((a, r1), cols, conv.region(x, (a - 1, r1 - 1), cols))


def ul_first_region(above: DownShiftedConv2d, left: DownRightShiftedConv2d, x: PaddedMap, out: PaddedMap,
                    region: Region) -> None:
    """ul0 = down_shift(above(x)) + right_shift(left(x)) at `region` of `out`, zero where shifted in."""
    (r0, r1), (c0, c1) = region
    value = x.padded.new_zeros(x.padded.shape[0], above.out_channels, r1 - r0, c1 - c0)
    a, b = max(r0, 1), max(c0, 1)
    if a < r1:
        value[:, :, a - r0 :] = above.region(x, (a - 1, r1 - 1), (c0, c1))
    if b < c1:
        value[..., b - c0 :] += left.region(x, (r0, r1), (b - 1, c1 - 1))
    out.write((r0, r1), (c0, c1), value)


class CachedBlock:
    """A GatedResnet's caches: its hidden map (the first convolution's output, joined with the
    shortcut term) and its output map, read from the cache of its input `x` and from the maps its
    shortcut input concatenates."""

    def __init__(self, block: GatedResnet, x: PaddedMap, new, bias: Tensor | None, shortcut: list[PaddedMap]):
        self.block, self.x, self.bias, self.shortcut = block, x, bias, shortcut
        self.hidden, self.out = new(), new()

    def run(self, rows: tuple[int, int], cols: tuple[int, int]) -> None:
        block, reads = self.block, [m.read(rows, cols) for m in self.shortcut]
        a = None if not reads else reads[0] if len(reads) == 1 else torch.cat(reads, 1)
        self.hidden.write(rows, cols, block.join(block.conv_in.region(self.x, rows, cols, concat_elu), a))
        h = block.conv_out.region(self.hidden, rows, cols, concat_elu)
        self.out.write(rows, cols, block.gate(self.x.read(rows, cols), h, self.bias))


class _Stream:
    """One stream's caches (u or ul), per level L (H / 2^L): the up pass's maps (the first layer's
    or the down-sampling's output, then each block's), its blocks, the down pass's input (the
    coarsest level: the up pass's last map; the others: the up-sampling's output) and blocks."""

    def __init__(self, down_strides: nn.ModuleList, up_strides: nn.ModuleList):
        self.down_strides = down_strides  # [L - 1]: level L - 1 -> L
        self.up_strides = up_strides[::-1]  # [L]: level L + 1 -> L
        self.up: list[list[PaddedMap]] = []
        self.up_blocks: list[list[CachedBlock]] = []
        self.down_in: list[PaddedMap | None] = [None] * RESOLUTIONS
        self.down_blocks: list[list[CachedBlock]] = [[] for _ in range(RESOLUTIONS)]

    def run(self, regions: list[Region | None], first, sizes: list[tuple[int, int]]) -> None:
        """Every cached map at `regions[L]` of its level (None: none at that level), in the
        forward pass's order; `first(region)` fills the level-0 first map."""
        for level, region in enumerate(regions):
            if region is None:
                break
            if level == 0:
                first(region)
            else:
                self.up[level][0].write(*region, self.down_strides[level - 1].region(self.up[level - 1][-1], *region))
            for block in self.up_blocks[level]:
                block.run(*region)
        for level in reversed(range(RESOLUTIONS)):
            region = regions[level]
            if region is None:
                continue
            coarse = regions[level + 1] if level + 1 < RESOLUTIONS else None
            if coarse is not None:  # the 2 x 2 positions of this level under each new coarse one
                (p0, p1), (q0, q1) = coarse
                h, w = sizes[level]
                rows, cols = (2 * p0, min(2 * p1, h)), (2 * q0, min(2 * q1, w))
                coarse_map = self.down_blocks[level + 1][-1].out.read(*coarse)
                self.down_in[level].write(rows, cols, self.up_strides[level](coarse_map, (rows[1] - rows[0], cols[1] - cols[0])))
            for block in self.down_blocks[level]:
                block.run(*region)


class PixelCNNppStepper:
    """The exact cached sampler (autoreg.sampling.Stepper) of a PixelCNNpp (Ramachandran et al.
    2017, "Fast Generation for Convolutional Autoregressive Models", arXiv 1704.06001).

    Every map of the forward pass (each block's hidden and output map too) is cached whole
    (`PaddedMap`), and each step computes only the positions it makes final, from the caches:

    - at the first pixel of row i, the u stream's row i at every layer of level 0 (it reads only
      the rows above), and row i / 2^L of level L when 2^L divides i: the paper's schedule, a
      level-L position updates once per 2^L x 2^L block of pixels it covers;
    - at pixel (i, j), the ul stream's position (i, j) at every layer of level 0, and
      (i / 2^L, j / 2^L) at level L when 2^L divides both; a new coarse position is up-sampled to
      the 2 x 2 positions of the level above that read it; then the head at (i, j).

    Both are the forward pass's own arithmetic on the same inputs (the layers' `region`, the
    blocks' `join` and `gate`), so the params equal the naive ones to float rounding. Dropout is
    skipped: sampling runs in eval mode.
    """

    def __init__(self, model: PixelCNNpp, batch: int, device, dtype, y: Tensor | None):
        for layer in model.modules():
            if isinstance(layer, (DownShiftedConv2d, DownRightShiftedConv2d)):
                layer.check_border()
        c, h, w = model.image_shape
        self._model, self._width = model, w
        self.canvas = torch.zeros(batch, c, h, w, device=device, dtype=dtype)
        self._sizes = [(h, w)]
        for _ in range(RESOLUTIONS - 1):
            self._sizes.append(((self._sizes[-1][0] + 1) // 2, (self._sizes[-1][1] + 1) // 2))
        features = model.out.in_channels

        def new(level: int, channels: int = features) -> PaddedMap:
            return PaddedMap(batch, channels, *self._sizes[level], device, dtype)

        self._x = new(0, c + 1)
        self._x.map[:, c] = 1  # the channel of ones (the border stays zero, as forward's padding)
        biases = model._biases(y)

        def bias() -> Tensor | None:
            b = next(biases)
            return None if b is None else b.to(dtype)

        u = self._u = _Stream(model.down_u_stride, model.up_u_stride)
        ul = self._ul = _Stream(model.down_ul_stride, model.up_ul_stride)
        for level in range(RESOLUTIONS):  # the up pass, in forward's order (its label biases' order)
            maker = lambda level=level: new(level)  # noqa: E731
            for stream in (u, ul):
                stream.up.append([maker()])
                stream.up_blocks.append([])
            for u_block, ul_block in zip(model.up_u[level], model.up_ul[level]):
                cached_u = CachedBlock(u_block, u.up[level][-1], maker, bias(), [])
                cached_ul = CachedBlock(ul_block, ul.up[level][-1], maker, bias(), [cached_u.out])
                for stream, cached in ((u, cached_u), (ul, cached_ul)):
                    stream.up_blocks[level].append(cached)
                    stream.up[level].append(cached.out)
        for r, (u_blocks, ul_blocks) in enumerate(zip(model.down_u, model.down_ul)):  # the down pass, coarsest first
            level = RESOLUTIONS - 1 - r
            maker = lambda level=level: new(level)  # noqa: E731
            for stream in (u, ul):
                stream.down_in[level] = stream.up[level][-1] if r == 0 else maker()
            # forward pops the up pass's maps: the coarsest level's last one is the down pass's input
            skips = [stream.up[level][:-1 if r == 0 else None][::-1] for stream in (u, ul)]
            x_u, x_ul = u.down_in[level], ul.down_in[level]
            for u_block, ul_block, skip_u, skip_ul in zip(u_blocks, ul_blocks, *skips, strict=True):
                cached_u = CachedBlock(u_block, x_u, maker, bias(), [skip_u])
                cached_ul = CachedBlock(ul_block, x_ul, maker, bias(), [cached_u.out, skip_ul])
                u.down_blocks[level].append(cached_u)
                ul.down_blocks[level].append(cached_ul)
                x_u, x_ul = cached_u.out, cached_ul.out
        self._final = x_ul
        self._rows = [self._regions(i) for i in range(h)]
        self._positions = [self._regions(i, j) for i in range(h) for j in range(w)]

    def _regions(self, i: int, j: int | None = None) -> list[Region | None]:
        """Per level, what the step at row i (j None: the u stream's rows) or pixel (i, j) makes final."""
        regions: list[Region | None] = []
        for level, (_, w) in enumerate(self._sizes):
            s = 2**level
            if i % s or (j is not None and j % s):
                regions.append(None)
            else:
                regions.append(((i // s, i // s + 1), (0, w) if j is None else (j // s, j // s + 1)))
        return regions

    def _u_first(self, region: Region) -> None:
        u_first_region(self._model.u_first, self._x, self._u.up[0][0], region)

    def _ul_first(self, region: Region) -> None:
        ul_first_region(self._model.ul_first_above, self._model.ul_first_left, self._x, self._ul.up[0][0], region)

    def _head(self, region: Region) -> Tensor:
        return one_by_one(self._model.out, F.elu(self._final.read(*region)))

    def prime(self) -> Tensor:
        self._x.map[:, :-1] = 2 * self.canvas - 1
        regions = [((0, h), (0, w)) for h, w in self._sizes]
        self._u.run(regions, self._u_first, self._sizes)
        self._ul.run(regions, self._ul_first, self._sizes)
        return self._head(regions[0])

    def step(self, q: int) -> Tensor:
        i, j = divmod(q, self._width)
        if q > 0:  # the pixel drawn last, onto the input cache
            a, b = divmod(q - 1, self._width)
            self._x.map[:, :-1, a, b] = 2 * self.canvas[:, :, a, b] - 1
        if j == 0:
            self._u.run(self._rows[i], self._u_first, self._sizes)
        regions = self._positions[q]
        self._ul.run(regions, self._ul_first, self._sizes)
        return self._head(regions[0])[:, :, 0, 0]

