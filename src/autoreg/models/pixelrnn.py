"""PixelRNN (van den Oord et al. 2016, "Pixel Recurrent Neural Networks", arXiv 1601.06759, sec. 3).

A 7x7 mask-A convolution, then `depth` residual recurrent layers (Row LSTM or Diagonal BiLSTM,
with LSTM or GRU cells, see `autoreg.nn.recurrent`), then PixelCNN's output head:

    x -> MaskedConv(A, 7x7) -> [residual recurrent layer] x depth -> ReLU, 1x1 -> ... -> params

Residual recurrent layer (paper fig. 5, right), `channels` = 2h:

    2h -> input-to-state (h per gate) -> recurrence -> h -> 1x1 (B) -> 2h -> (+ input)

`kernel` is the Row LSTM's k (its 1 x k input-to-state and state-to-state convolutions). The
Diagonal BiLSTM's kernels are fixed by the paper (1x1 input-to-state, 2x1 state-to-state), so it
accepts only the default kernel=3 and rejects any other value instead of ignoring it.

NOTE: the Diagonal BiLSTM layer sees its whole input context, but the model as a whole cannot see
the last sub-pixel of the row above (pixel (r-1, W-1), last channel) from (r, j) when j < W-4: the
later layers read the first layer's output only at positions up to (r, j), no 7x7 mask-A window
there reaches column W-1 of row r-1, and the window at (r-1, W-1) itself stops before that
channel. Any causal stack on this first layer has the gap; the paper uses it, and so do we.

Class-conditional (`num_classes`): a learned bias per class and channel is added to the input of
every recurrent layer and of the head (`autoreg.nn.ClassBias`): the input-to-state convolutions
turn it into a per-class bias of every gate, as conditional PixelCNN's V^T h does.

Fast sampling (Row LSTM; `_RowLSTMColumn`): the state at (i, j) reads the layer's input at
(i, j - k//2 .. j) (the 1 x k mask-B input-to-state conv, cached like any masked conv), the hidden
states of row i - 1 at (i - 1, j - k//2 .. j + k//2) (the state-to-state conv) and, for the LSTM,
the cell state at (i - 1, j). So the layer keeps every row's states in a cache whose row -1 is the
learned initial state, and each position computes only its own gates: one small matrix product
per convolution and the cell's elementwise update (the same `cell.step` as the layer).

Fast sampling (Diagonal BiLSTM; `_DiagonalBiLSTMColumn`): along the diagonals, the left-to-right
state at (i, j) reads the states at (i - 1, j) and (i, j - 1), so it too steps once per position
from cached states; the right-to-left states, which the output reads one row down, are computed
for a whole row when its last position is stepped.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from autoreg.families.pixelrnn import PixelRNNKeys
from autoreg.models.pixelcnn import output_head
from autoreg.nn import ClassBias, DiagonalBiLSTM, MaskedConv2d, RowLSTM, run_stages, with_label_biases
from autoreg.sampling import CachedColumns, Geometry, column, register_layer

FIRST_KERNEL = 7


class ResidualRecurrent(nn.Module):
    def __init__(self, layer: nn.Module, channels: int, data_channels: int):
        super().__init__()
        self.layer = layer
        self.up = MaskedConv2d(channels // 2, channels, 1, "B", data_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.layer(x))


class PixelRNN(nn.Module):
    """image (B, C, H, W) in [0, 1] -> params (B, C * distribution.params_per_channel, H, W)."""

    def __init__(self, image_shape: tuple[int, int, int], distribution, keys: PixelRNNKeys, num_classes: int | None = None):
        super().__init__()
        c, channels, depth = image_shape[0], keys.channels, keys.depth
        self.image_shape = tuple(image_shape)
        self.distribution = distribution
        self.num_classes = num_classes
        h = channels // 2
        self.first = MaskedConv2d(c, channels, FIRST_KERNEL, "A", c)

        def recurrent() -> nn.Module:
            if keys.arch == "row_lstm":
                return RowLSTM(channels, h, keys.kernel, keys.cell, c)
            return DiagonalBiLSTM(channels, h, keys.cell, c)

        self.layers = nn.Sequential(*(ResidualRecurrent(recurrent(), channels, c) for _ in range(depth)))
        self.head = output_head(channels, c * distribution.params_per_channel, c, keys.head_layers)
        # one bias per recurrent layer input and one for the head's
        self.label_bias = ClassBias(num_classes, channels, depth + 1) if num_classes else None

    def _stages(self, y: Tensor | None) -> list:
        return with_label_biases([self.first, *self.layers, self.head], self.label_bias, y)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        # Channels-last memory: the recurrent layers step through contiguous (W or H, C) blocks.
        return run_stages(self._stages(y), x.contiguous(memory_format=torch.channels_last)).contiguous()

    def fast_stepper(self, batch: int, device, dtype, y: Tensor | None) -> CachedColumns:
        return CachedColumns(self._stages(y), self.image_shape, batch, device, dtype)


class _ResidualRecurrent:
    """PixelRNN's residual recurrent layer: x + up(layer(x))."""

    def __init__(self, block: ResidualRecurrent, geometry: Geometry, cache: Tensor | None):
        self._layer = column(block.layer, geometry, cache)
        self._up = column(block.up, geometry)

    def step(self, v: Tensor, q: int) -> Tensor:
        return v + self._up.step(self._layer.step(v, q), q)

    def full(self, x: Tensor) -> Tensor:
        return x + self._up.full(self._layer.full(x))


class _RowLSTMColumn:
    """A Row LSTM (LSTM or GRU cell) at one position, from the cached states of the row above.

    The states (h, and c for the LSTM) live in one cache (states, B, H + 1, W + 2p, h), p = k // 2:
    cache row i + 1 holds image row i, cache row 0 the learned initial state (row -1), and the p
    zero columns each side are the state-to-state convolution's zero padding. The 1 x k window of
    row i - 1 around j is then a plain view, (B, k h) after flattening, and the state-to-state
    matrix is permuted once from the layer's (h k) window order to this (k h) order.
    """

    def __init__(self, layer: RowLSTM, geometry: Geometry, cache: Tensor | None):
        b, height, width = geometry.batch, geometry.height, geometry.width
        hidden, k, p = layer.hidden, layer.kernel, layer.kernel // 2
        self._cell, self._gates, self._hidden, self._k, self._p = layer.cell, layer.cell.gates, hidden, k, p
        self._input = column(layer.input_to_state, geometry, cache)
        self._state_to_state = (
            layer.state_to_state.view(hidden, k, -1).transpose(0, 1).reshape(k * hidden, -1).to(geometry.dtype)
        )
        states = layer.cell.states
        self._states = torch.zeros(
            states, b, height + 1, width + 2 * p, hidden, device=geometry.device, dtype=geometry.dtype
        )
        self._states[:, :, 0, p : p + width] = layer.initial_state.view(states, 1, 1, hidden)
        hs = self._states
        # Per-position views, made once (indexing costs as much as the math at this size).
        self._windows = [hs[0, :, i, j : j + k].view(b, k * hidden) for i in range(height) for j in range(width)]
        self._above = [tuple(hs[:, :, i, p + j].unbind(0)) for i in range(height) for j in range(width)]
        self._here = [tuple(hs[:, :, i + 1, p + j].unbind(0)) for i in range(height) for j in range(width)]

    def step(self, v: Tensor, q: int) -> Tensor:
        x = self._input.step(v, q).view(-1, self._gates, self._hidden)
        s = (self._windows[q] @ self._state_to_state).view_as(x)
        state = self._cell.step(x, s, self._above[q])
        for cached, new in zip(self._here[q], state):
            cached.copy_(new)
        return state[0]

    def full(self, x: Tensor) -> Tensor:
        b, _, height, width = x.shape
        gates, hidden, k, p = self._gates, self._hidden, self._k, self._p
        xg = self._input.full(x).permute(0, 2, 3, 1).unflatten(-1, (gates, hidden))  # (B, H, W, G, h)
        hs = self._states
        for i in range(height):
            windows = hs[0, :, i].unfold(1, k, 1).transpose(-1, -2).reshape(b * width, k * hidden)
            s = (windows @ self._state_to_state).view(b, width, gates, hidden)
            state = self._cell.step(xg[:, i], s, tuple(hs[:, :, i, p : p + width].unbind(0)))
            hs[:, :, i + 1, p : p + width] = torch.stack(state)
        return hs[0, :, 1:, p : p + width].permute(0, 3, 1, 2)


class _DiagonalBiLSTMColumn:
    """A Diagonal BiLSTM (LSTM or GRU cell) at one position, from cached states.

    Left to right, the state at (i, j) reads the layer's input at (i, j) (the 1x1 mask-B
    input-to-state conv) and the states at (i - 1, j) (above) and (i, j - 1) (left, whose cell
    state it continues): one cell step per position. Right to left, the state at (i, j) reads the
    whole input pixel at (i, j) and the states at (i - 1, j) and (i, j + 1), so it needs row i
    complete; the output at (i, j) is the left-to-right h at (i, j) plus the right-to-left h at
    (i - 1, j), so row i's right-to-left pass (W cell steps, its gates in one product over the
    cached input row) runs when row i's last position is stepped, in time for row i + 1.

    Each direction's states live in one cache (states, B, H + 1, W + 1, h): cache row i + 1 holds
    image row i, and cache row 0 and the outer column (left of column 0 for left to right, right
    of column W - 1 for right to left) hold the learned initial state, the layer's value outside
    the image. The input cache (H, W, B, C_in) keeps the rows for the right-to-left gates.
    """

    def __init__(self, layer: DiagonalBiLSTM, geometry: Geometry, cache: Tensor | None):
        b, height, width = geometry.batch, geometry.height, geometry.width
        hidden, gates, states = layer.hidden, layer.cell.gates, layer.cell.states
        device, dtype = geometry.device, geometry.dtype
        self._cell, self._gates, self._hidden, self._width = layer.cell, gates, hidden, width
        conv = layer.input_to_state  # blocks [left-to-right gates | right-to-left gates]
        weight = (conv.weight * conv.mask).to(dtype).view(2, gates * hidden, conv.in_channels)
        self._w_is, self._b_is = weight.transpose(1, 2).contiguous(), conv.bias.to(dtype).view(2, gates * hidden)
        self._w_ss = layer.state_to_state.to(dtype)  # (2, 2h, G h) over [above; left (or right)]
        self._inputs = torch.zeros(height, width, b, conv.in_channels, device=device, dtype=dtype)
        initial = layer.initial_state.to(dtype).view(states, 2, 1, 1, hidden)
        self._ltr = torch.zeros(states, b, height + 1, width + 1, hidden, device=device, dtype=dtype)
        self._rtl = torch.zeros_like(self._ltr)
        for cache_, direction, outer in ((self._ltr, 0, 0), (self._rtl, 1, width)):
            cache_[:, :, 0] = initial[:, direction]
            cache_[:, :, :, outer] = initial[:, direction]
        # Per-position views, made once (indexing costs as much as the math at this size).
        ltr, rtl = self._ltr, self._rtl
        positions = [(i, j) for i in range(height) for j in range(width)]
        self._input_at = [self._inputs[i, j] for i, j in positions]
        self._above = [ltr[0, :, i, j + 1] for i, j in positions]
        self._left = [tuple(ltr[:, :, i + 1, j].unbind(0)) for i, j in positions]
        self._here = [tuple(ltr[:, :, i + 1, j + 1].unbind(0)) for i, j in positions]
        self._rtl_above = [rtl[0, :, i, j] for i, j in positions]  # also the output's row i - 1 term

    def step(self, v: Tensor, q: int) -> Tensor:
        i, j = divmod(q, self._width)
        self._input_at[q].copy_(v)
        x = torch.addmm(self._b_is[0], v, self._w_is[0]).view(-1, self._gates, self._hidden)
        s = (torch.cat([self._above[q], self._left[q][0]], -1) @ self._w_ss[0]).view_as(x)
        state = self._cell.step(x, s, self._left[q])
        for cached, new in zip(self._here[q], state):
            cached.copy_(new)
        if j == self._width - 1:
            self._right_to_left(i)
        return state[0] + self._rtl_above[q] if i > 0 else state[0]

    def _right_to_left(self, i: int) -> None:
        """Row i's right-to-left states, from its cached input row and row i - 1's states."""
        width, b = self._width, self._inputs.shape[2]
        rows = self._inputs[i].view(width * b, -1)
        xs = torch.addmm(self._b_is[1], rows, self._w_is[1]).view(width, b, self._gates, self._hidden)
        rtl = self._rtl
        for j in reversed(range(width)):
            right = tuple(rtl[:, :, i + 1, j + 1].unbind(0))
            s = (torch.cat([rtl[0, :, i, j], right[0]], -1) @ self._w_ss[1]).view_as(xs[j])
            rtl[:, :, i + 1, j] = torch.stack(self._cell.step(xs[j], s, right))

    def full(self, x: Tensor) -> Tensor:
        # NOTE: position by position, to fill the caches: as costly as drawing the whole image, so
        # a Diagonal BiLSTM completion costs a sample plus the part drawn (the layer's own forward
        # is faster but keeps no per-direction states).
        pixels = x.permute(2, 3, 0, 1)  # (H, W, B, C_in)
        height, width = pixels.shape[:2]
        out = torch.stack([self.step(pixels[q // width, q % width], q) for q in range(height * width)])
        return out.view(height, width, *out.shape[1:]).permute(2, 3, 0, 1)


register_layer(ResidualRecurrent)(_ResidualRecurrent)
register_layer(RowLSTM)(_RowLSTMColumn)
register_layer(DiagonalBiLSTM)(_DiagonalBiLSTMColumn)
