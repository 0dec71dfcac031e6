"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders",
arXiv 1606.05328).

PixelCNN's stacked masks leave a blind spot above and right of the pixel (autoreg.models.pixelcnn).
Gated PixelCNN splits the network into two stacks that together see the whole context:

- the vertical stack sees every pixel of the rows strictly above, within reach: (k//2+1) x k
  convolutions shifted down, the first reading image rows i-k//2-1 .. i-1 (the image shifted down
  a row), the later ones rows i-k//2 .. i of the previous vertical layer (itself above row i);
- the horizontal stack sees the current row left of the pixel: 1 x k masked convolutions, mask A
  in the first layer, mask B after, so colour c reads colours < c (A) or <= c (B) of its pixel.

Information flows vertical -> horizontal only (a 1x1 "link" of the vertical pre-activation added
to the horizontal one, at the same position). Never the reverse: the vertical convolutions read
columns right of the pixel, so current-row features in the vertical stack would reach a pixel
from the later pixels of its row. Both stacks use the gated unit tanh(W_f * x) . sigmoid(W_g * x).
One layer (`channels` = F; every arrow F features, 2F before a gate):

    v --> (k//2+1) x k conv --> + V_v^T y --+--> gate ------------------------------> v'
                                            |
                                        1x1 (link)
                                            v
    h --> 1 x k conv (A/B) ---------------> + --> + V_h^T y --> gate --+--> 1x1 (B) --> + --> h'
    |                                                                  |               ^
    |                                                                  +--> 1x1 (B) ---|---> skip
    +----------------------- residual (from the second layer on) ----------------------+

The skips of all layers are summed into PixelCNN's output head (ReLU + 1x1 mask-B layers).
Receptive field of `depth` = L layers, h = k // 2: the rows i-Lh-1 .. i-1 at columns j-Lh .. j+Lh
(a full rectangle, no blind spot) and the current row at columns j-Lh .. j-1.

Class-conditional (`num_classes`): the paper's V^T y, a learned bias per class added to the
pre-activations of both stacks in every layer (separate ones for the two stacks;
`autoreg.nn.conditioning.ClassBias`); the link reads the vertical pre-activation with its bias.

Colour channels (C): every horizontal feature map is split into C contiguous groups (as
`autoreg.nn.masked.channel_groups`), group c computed from colours <= c of the pixel, so the head's
parameters for colour c read only colours < c. The gate must not mix groups: a 2F pre-activation
is viewed as (C groups, 2, F/C), a and b of group c both from group c, so `channels` must be a
multiple of C. The vertical stack needs no groups (it sees only rows above) but uses the same gate.

NOTE: the paper shifts the vertical stack's output down in the link; shifting its first input
instead (openai/pixel-cnn's down-shift) gives the same field and lets the link stay at the same
position. The head reads the skips (as WaveNet and pytorch-generative do), so the last layer has
no residual 1x1 and no vertical gate (nothing would read them).

Fast sampling (`GatedStepper`): at the first step of row i, row i of every vertical layer and its
link term are computed from the cached vertical outputs of the rows above (one small convolution
on a (k//2+1)-row slab per layer); then each position runs only the horizontal stack, the skips
and the head as columns (autoreg.sampling) on cached horizontal inputs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoreg.families.gated_pixelcnn import GatedPixelCNNKeys
from autoreg.models.pixelcnn import output_head
from autoreg.nn.conditioning import ClassBias
from autoreg.nn.masked import MaskedConv2d
from autoreg.sampling import Geometry, canvas_cache, column


def gate(x: Tensor, groups: int) -> Tensor:
    """tanh(a) * sigmoid(b) of (B, 2F, ...) pre-activations -> (B, F, ...), where each of the
    `groups` contiguous colour groups of 2F/groups channels holds its own a then b halves."""
    a, b = x.unflatten(1, (groups, 2, -1)).unbind(2)
    return (torch.tanh(a) * torch.sigmoid(b)).flatten(1, 2)


class VerticalConv(nn.Conv2d):
    """A (k//2+1) x k convolution whose output at row i reads input rows i-k//2 .. i (`shift` 0) or
    i-k//2-1 .. i-1 (`shift` 1), columns j-k//2 .. j+k//2: zero padding on top only."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, shift: int):
        super().__init__(in_channels, out_channels, (kernel // 2 + 1, kernel))
        self.shift = shift

    def forward(self, x: Tensor) -> Tensor:
        rows, k = self.kernel_size
        return super().forward(F.pad(x, (k // 2, k // 2, rows - 1 + self.shift, -self.shift)))

    def row(self, x: Tensor, i: int) -> Tensor:
        """Output row i (B, C_out, W) alone, from the rows of `x` (B, C_in, >= i + 1 - shift, W) it reads."""
        rows, k = self.kernel_size
        first = i - self.shift - rows + 1
        slab = x[:, :, max(first, 0) : i - self.shift + 1]
        return super().forward(F.pad(slab, (k // 2, k // 2, max(-first, 0), 0)))[:, :, 0]


class GatedLayer(nn.Module):
    """One layer of both stacks (module docstring): (v, h) -> (v', h', skip)."""

    def __init__(self, in_channels: int, channels: int, kernel: int, data_channels: int, first: bool, last: bool):
        super().__init__()
        c = data_channels
        self.groups = c
        self.first = first
        self.vertical = VerticalConv(in_channels, 2 * channels, kernel, shift=1 if first else 0)
        self.horizontal = MaskedConv2d(in_channels, 2 * channels, (1, kernel), "A" if first else "B", c)
        self.link = nn.Conv2d(2 * channels, 2 * channels, 1)  # reads rows above only: no mask needed
        self.skip = MaskedConv2d(channels, channels, 1, "B", c)
        self.out = None if last else MaskedConv2d(channels, channels, 1, "B", c)

    def forward(self, v: Tensor, h: Tensor, bias: Tensor | None = None):
        """`bias` (2, B, 2F): the label's vertical and horizontal biases, or None."""
        v_pre = self.vertical(v)
        h_pre = self.horizontal(h)
        if bias is not None:
            v_pre = v_pre + bias[0, :, :, None, None]
            h_pre = h_pre + bias[1, :, :, None, None]
        gated = gate(h_pre + self.link(v_pre), self.groups)
        skip = self.skip(gated)
        if self.out is None:
            return None, None, skip
        h_out = self.out(gated) if self.first else h + self.out(gated)
        return gate(v_pre, self.groups), h_out, skip


class GatedPixelCNN(nn.Module):
    """image (B, C, H, W) in [0, 1] -> params (B, distribution.num_params(C), H, W)."""

    def __init__(self, image_shape: tuple[int, int, int], distribution, keys: GatedPixelCNNKeys, num_classes: int | None = None):
        super().__init__()
        c, channels, depth = image_shape[0], keys.channels, keys.depth
        self.image_shape = tuple(image_shape)
        self.distribution = distribution
        self.num_classes = num_classes
        self.layers = nn.ModuleList(
            GatedLayer(c if n == 0 else channels, channels, keys.kernel, c, first=n == 0, last=n == depth - 1)
            for n in range(depth)
        )
        self.head = output_head(channels, distribution.num_params(c), c, keys.head_layers)
        # per layer: the vertical stack's bias, then the horizontal stack's
        self.label_bias = ClassBias(num_classes, 2 * channels, 2 * depth) if num_classes else None

    def _biases(self, y: Tensor | None) -> list[Tensor | None]:
        """Per layer, the label's (2, B, 2F) biases (vertical, horizontal), or None."""
        if self.label_bias is None:
            return [None] * len(self.layers)
        return list(self.label_bias(y).unflatten(0, (len(self.layers), 2)))

    def _trace(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """The params, and per layer its vertical output and horizontal input (the fast sampler's caches)."""
        v = h = x
        skips, vertical, horizontal = 0, [], []
        for layer, bias in zip(self.layers, self._biases(y)):
            horizontal.append(h)
            v, h, skip = layer(v, h, bias)
            vertical.append(v)
            skips = skips + skip
        return self.head(skips), vertical, horizontal

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self._trace(x, y)[0]

    def fast_stepper(self, batch: int, device, dtype, y: Tensor | None) -> GatedStepper:
        return GatedStepper(self, batch, device, dtype, y)


class GatedStepper:
    """The exact cached sampler (autoreg.sampling.Stepper) of a GatedPixelCNN; module docstring.

    Caches: the canvas, in the first horizontal layer's input cache (`canvas_cache`, as
    `CachedColumns` keeps it); each vertical layer's output (B, F, H, W) but the last's; per
    layer, the current row's link term (B, W, 2F) with the horizontal label bias folded in; the
    later horizontal layers' inputs, in their columns.
    """

    def __init__(self, model: GatedPixelCNN, batch: int, device, dtype, y: Tensor | None):
        c, h, w = model.image_shape
        self._model, self._y, self._width, self._groups = model, y, w, c
        self._input, self.canvas, self._pixels = canvas_cache(model.image_shape, batch, device, dtype)
        geometry = Geometry(batch, h, w, device, dtype)
        layers = model.layers
        self._biases = [b if b is None else b.to(dtype) for b in model._biases(y)]
        self._horizontal = [column(layer.horizontal, geometry, self._input if n == 0 else None)
                            for n, layer in enumerate(layers)]
        self._skip = [column(layer.skip, geometry) for layer in layers]
        self._out = [column(layer.out, geometry) for layer in layers[:-1]]
        self._head = column(model.head, geometry)
        features = layers[0].skip.in_channels
        self._vertical = [torch.zeros(batch, features, h, w, device=device, dtype=dtype) for _ in layers[:-1]]
        self._link = torch.zeros(len(layers), batch, w, 2 * features, device=device, dtype=dtype)
        self._link_at = [rows.unbind(1) for rows in self._link]  # per layer and column, (B, 2F) views
        self._row = None  # the image row the link terms are for

    def _start_row(self, i: int) -> None:
        """Row i of every vertical layer, from the canvas and the vertical caches of rows above."""
        v = self.canvas
        for n, (layer, bias) in enumerate(zip(self._model.layers, self._biases)):
            pre = layer.vertical.row(v, i)  # (B, 2F, W)
            if bias is not None:
                pre = pre + bias[0, :, :, None]
            link = layer.link(pre.unsqueeze(2)).squeeze(2)
            if bias is not None:
                link = link + bias[1, :, :, None]
            self._link[n].copy_(link.transpose(1, 2))
            if n < len(self._vertical):
                self._vertical[n][:, :, i] = gate(pre, self._groups)
                v = self._vertical[n]
        self._row = i

    def prime(self) -> Tensor:
        params, vertical, horizontal = self._model._trace(self.canvas, self._y)
        for cache, v in zip(self._vertical, vertical):
            cache.copy_(v)
        for col, h in zip(self._horizontal, horizontal):
            col.full(h)  # fills the layer's input cache (its output is already in `params`)
        self._row = None  # the first step recomputes its row's link terms from the caches
        return params

    def step(self, q: int) -> Tensor:
        i, j = divmod(q, self._width)
        if i != self._row:
            self._start_row(i)
        h = self._pixels[q]
        skips = None
        for n, horizontal in enumerate(self._horizontal):
            gated = gate(horizontal.step(h, q) + self._link_at[n][j], self._groups)
            skip = self._skip[n].step(gated, q)
            skips = skip if skips is None else skips + skip
            if n < len(self._out):
                out = self._out[n].step(gated, q)
                h = out if n == 0 else h + out
        return self._head.step(skips, q)

