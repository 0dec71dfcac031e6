"""Recurrent layers of PixelRNN (van den Oord et al. 2016, arXiv 1601.06759, sec. 3.1-3.2).

Both layers split a convolutional LSTM (or GRU) into two convolutions whose sum feeds the gates:

- input-to-state K_is * x: causal (mask B) and computed for the whole image at once, before the
  recurrence starts;
- state-to-state K_ss * h_prev: applied to the previous line's hidden state inside the loop, the
  only sequential part. It only reads earlier lines, so it needs no mask.

Row LSTM: one step per row, top to bottom. K_is is a 1 x k mask-B convolution along the row,
K_ss a 1 x k convolution on the previous row's state. The state at x depends on a triangle of
inputs that widens by k // 2 per row upward (k = 3, one layer) and misses the rest of the context:

    row r-2    1 1 1 1 1 1 .
    row r-1    . 1 1 1 1 . .
    row r      . . 1 x . . .

Diagonal BiLSTM: the map is skewed (`autoreg.nn.skew`, row r shifted right by r) so that every
diagonal becomes a column, then one step per column. K_is is 1 x 1 (mask B); K_ss is a 2 x 1
column convolution reading rows r - 1 and r of the previous column: the pixel above and the pixel
to the left. A second pass runs right to left (the left-to-right pass on the map mirrored along W);
its output is shifted down one row before the two are added, since at (r, j) it has read the
pixels right of j in row r:

    left-to-right at (r, j):  rows <= r, columns <= j   (above-left, incl. the pixel itself)
    right-to-left, shifted:   rows <= r-1, columns >= j (above-right)
    sum:                      the whole context above and to the left: no blind spot

Cells (`LSTMCell`, `GRUCell`) hold the elementwise update; each layer owns its convolutions and a
learned initial state. Inside the loop everything is channels-last, (..., L, G, h) for G gates of h
channels over a line of L positions, so that a state-to-state convolution is one matrix product
per step and each step reads contiguous blocks. The layers take and return (B, C, H, W) tensors
and are fastest when those are channels-last in memory (`torch.channels_last`).

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
import torch.nn.functional as F
from torch import Tensor, nn

from autoreg.nn.chunks import in_cpu_chunks
from autoreg.nn.masked import MaskedConv2d, causal_mask
from autoreg.nn.skew import skew, unskew
from autoreg.sampling.columns import Geometry, column, register_layer


def tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) as 2 sigmoid(2x) - 1 (equal to ~1e-7 in fp32): torch's CPU tanh is several times
    slower than its sigmoid, and the cells call it on every step."""
    return torch.sigmoid(2 * x).mul_(2).sub_(1)


def _sigmoid_backward_(grad: torch.Tensor, y: torch.Tensor) -> None:
    """grad *= y (1 - y) in one kernel, in place (y = sigmoid(z))."""
    torch.ops.aten.sigmoid_backward.grad_input(grad, y, grad_input=grad)


def _tanh_backward_(grad: torch.Tensor, y: torch.Tensor) -> None:
    """grad *= 1 - y^2 in one kernel, in place (y = tanh(z))."""
    torch.ops.aten.tanh_backward.grad_input(grad, y, grad_input=grad)


class LSTMCell:
    """LSTM update (the paper's eq. 3), with s = K_ss * h_prev and x = K_is * input:

        [o, f, i] = sigmoid(x_ofi + s_ofi)
        g         = tanh(x_g + s_g)            (tanh, not sigmoid: g is the candidate content)
        c         = f . c_prev + i . g
        h         = o . tanh(c)

    `c_prev` is the cell state of the same position on the previous line (row or diagonal).
    `step` runs `forward` and, in the backward pass, `backward`: the update's derivative written
    out, a few fused kernels (sigmoid_backward, tanh_backward) instead of autograd's dozen small
    ones (on a CPU: 13% off a Row LSTM model's training time, 5% off a Diagonal BiLSTM's).
    """

    gates = 4
    states = 2  # (h, c)

    @staticmethod
    def step(x: torch.Tensor, s: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """x, s: (..., 4, h) in gate order [o, f, i, g]; state: (h_prev, c_prev) -> (h, c)."""
        return _step(LSTMCell, x, s, state)

    @staticmethod
    def forward(x, s, state):
        """-> (new state, what `backward` needs)."""
        a = x + s
        a[..., 3, :] *= 2  # g's doubled pre-activation makes its sigmoid tanh(z_g) = 2 sigmoid(2 z_g) - 1
        o, f, i, g = a.sigmoid_().unbind(-2)
        g.mul_(2).sub_(1)
        c_prev = state[1]
        c = torch.addcmul(f * c_prev, i, g)
        tanh_c = tanh(c)
        return (o * tanh_c, c), (a, c_prev, tanh_c)

    @staticmethod
    def backward(saved, grads):
        """-> (grad x, grad s, grads of the previous state)."""
        a, c_prev, tanh_c = saved
        grad_h, grad_c = grads
        o, f, i, g = a.unbind(-2)
        grad_c = torch.ops.aten.tanh_backward(grad_h * o, tanh_c).add_(grad_c)
        grad_z = torch.empty_like(a)
        grad_o, grad_f, grad_i, grad_g = grad_z.unbind(-2)
        torch.mul(grad_h, tanh_c, out=grad_o)
        torch.mul(grad_c, c_prev, out=grad_f)
        torch.mul(grad_c, g, out=grad_i)
        torch.mul(grad_c, i, out=grad_g)
        _sigmoid_backward_(grad_z[..., :3, :], a[..., :3, :])
        _tanh_backward_(grad_g, g)
        return grad_z, grad_z, (None, grad_c * f)


class GRUCell:
    """GRU update (Cho et al. 2014) with the same convolutions:

        z = sigmoid(x_z + s_z)                  update gate
        r = sigmoid(x_r + s_r)                  reset gate
        n = tanh(x_n + r . s_n)                 candidate
        h = (1 - z) . n + z . h_prev

    `h_prev` is the hidden state of the same position on the previous line (row or diagonal).
    NOTE: the reset gate scales the state-to-state term, r . (K_ss * h_prev), as cuDNN and
    `torch.nn.GRU` do, rather than the state before the convolution, K_ss * (r . h_prev): that keeps
    one state-to-state product per step for all three gates. `forward`/`backward` as `LSTMCell`'s.
    """

    gates = 3
    states = 1  # (h,)

    @staticmethod
    def step(x: torch.Tensor, s: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """x, s: (..., 3, h) in gate order [z, r, n]; state: (h_prev,) -> (h,)."""
        return _step(GRUCell, x, s, state)

    @staticmethod
    def forward(x, s, state):
        x_zr, x_n = x.split([2, 1], dim=-2)
        s_zr, s_n = s.split([2, 1], dim=-2)
        zr = torch.add(x_zr, s_zr).sigmoid_()
        z, r = zr.unbind(-2)
        s_n = s_n.squeeze(-2)
        n = tanh(torch.addcmul(x_n.squeeze(-2), r, s_n))
        h_prev = state[0]
        return (torch.addcmul(n, z, h_prev - n),), (zr, s_n, n, h_prev)

    @staticmethod
    def backward(saved, grads):
        zr, s_n, n, h_prev = saved
        (grad_h,) = grads
        z, r = zr.unbind(-2)
        grad_h_prev = grad_h * z
        grad_x = zr.new_empty(*zr.shape[:-2], 3, zr.shape[-1])
        grad_z, grad_r, grad_n = grad_x.unbind(-2)
        torch.ops.aten.tanh_backward.grad_input(grad_h - grad_h_prev, n, grad_input=grad_n)
        torch.mul(grad_h, h_prev - n, out=grad_z)
        torch.mul(grad_n, s_n, out=grad_r)
        _sigmoid_backward_(grad_x[..., :2, :], zr)
        grad_s = torch.empty_like(grad_x)
        grad_s[..., :2, :] = grad_x[..., :2, :]
        torch.mul(grad_n, r, out=grad_s[..., 2, :])
        return grad_x, grad_s, (grad_h_prev,)


def _step(cell, x: torch.Tensor, s: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    if torch.is_grad_enabled():
        return _CellStep.apply(cell, x, s, *state)
    return cell.forward(x, s, state)[0]  # sampling: no autograd Function per pixel


class _CellStep(torch.autograd.Function):
    """One cell update, (cell, x, s, *state) -> new state, with the cell's written-out derivative."""

    @staticmethod
    def forward(ctx, cell, x, s, *state):
        new, ctx.saved = cell.forward(x, s, state)
        ctx.cell = cell
        return new

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        grad_x, grad_s, grad_state = ctx.cell.backward(ctx.saved, grads)
        return None, grad_x, grad_s, *grad_state


CELLS = {"lstm": LSTMCell, "gru": GRUCell}


def gate_conv(
    in_channels: int, hidden: int, blocks: int, kernel_size: int | tuple[int, int], data_channels: int
) -> MaskedConv2d:
    """A mask-B convolution producing `blocks` gate blocks of `hidden` channels each.

    The cell update is elementwise, coupling channel m of every gate with hidden channel m, so each
    block carries the hidden state's channel groups (R -> G -> B), not one grouping over all
    blocks * hidden outputs. The layers apply its masked weight themselves (the Row LSTM without
    the always-zero taps right of the centre, the Diagonal BiLSTM as a matrix product).
    """
    conv = MaskedConv2d(in_channels, blocks * hidden, kernel_size, "B", data_channels)
    conv.mask = causal_mask(hidden, in_channels, conv.kernel_size, "B", data_channels).repeat(blocks, 1, 1, 1)
    return conv


def _state_matrix(*shape: int) -> nn.Parameter:
    """A state-to-state kernel as a (..., fan_in, out) matrix, initialised like nn.Conv1d."""
    bound = shape[-2] ** -0.5
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


class RowLSTM(nn.Module):
    """(B, in_channels, H, W) -> (B, hidden, H, W); one step per row, top to bottom."""

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3, cell: str = "lstm", data_channels: int = 1):
        super().__init__()
        self.cell = CELLS[cell]
        self.hidden, self.kernel = hidden, kernel
        self.input_to_state = gate_conv(in_channels, hidden, self.cell.gates, (1, kernel), data_channels)
        # K_ss, the 1 x k convolution, as a (h k, G h) matrix over each position's k-wide window.
        self.state_to_state = _state_matrix(hidden * kernel, self.cell.gates * hidden)
        self.initial_state = nn.Parameter(torch.zeros(self.cell.states, 1, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, height, width = x.shape
        gates, hidden, k = self.cell.gates, self.hidden, self.kernel
        # K_is for all rows at once. Mask B zeroes the taps right of the centre: skip them.
        conv = self.input_to_state
        weight = (conv.weight * conv.mask)[..., : k // 2 + 1]
        xg = F.conv2d(F.pad(x, (k // 2, 0)), weight, conv.bias)
        xg = xg.permute(0, 2, 3, 1).unflatten(-1, (gates, hidden))  # (B, H, W, G, h)
        state = tuple(s.expand(b, width, hidden) for s in self.initial_state)
        rows = []
        for x_row in xg.unbind(1):
            # Zero beyond the row's ends, as a 'same' convolution along the previous row.
            windows = F.pad(state[0], (0, 0, k // 2, k // 2)).unfold(1, k, 1)  # (B, W, h, k)
            s = (windows.reshape(b * width, hidden * k) @ self.state_to_state).view(b, width, gates, hidden)
            state = self.cell.step(x_row, s, state)
            rows.append(state[0])
        return torch.stack(rows, 1).permute(0, 3, 1, 2)


def diagonal_order(height: int, width: int, device=None) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The pixels of the skewed map's columns, top to bottom, without its empty cells.

    Returns `order` (the raster index of each pixel, column by column), `rank` (its inverse: each
    raster pixel's position in `order`) and the length of every column.
    """
    pixels = torch.arange(1, height * width + 1, device=device).view(height, width)
    columns = skew(pixels).t()  # (W + H - 1, H); 0 marks an empty cell
    filled = columns > 0
    rank = torch.zeros_like(columns)
    rank[filled] = torch.arange(height * width, device=device)
    return columns[filled] - 1, unskew(rank.t()).flatten(), filled.sum(1).tolist()


CPU_CHUNK_BYTES = 2**20


class DiagonalBiLSTM(nn.Module):
    """(B, in_channels, H, W) -> (B, hidden, H, W); one step per column of the skewed map, both
    directions in the same step (with separate weights: a batch of two matrix products).

    NOTE: the steps compute only the pixels of each column (`diagonal_order`), not the skewed
    map's empty cells, which would double the work: the input is gathered column by column in one
    indexing op, the outputs put back in raster order by two more. A neighbour outside the image
    (left of column 0, above row 0) holds the learned initial state.
    """

    def __init__(self, in_channels: int, hidden: int, cell: str = "lstm", data_channels: int = 1):
        super().__init__()
        self.cell = CELLS[cell]
        self.hidden = hidden
        gates = self.cell.gates
        # K_is, the 1x1 masked convolution, with blocks [left-to-right gates | right-to-left gates].
        self.input_to_state = gate_conv(in_channels, hidden, 2 * gates, 1, data_channels)
        # The right-to-left output is shifted down a row before use, so it may read every
        # channel of its own pixel.
        self.input_to_state.mask[gates * hidden :] = 1
        # K_ss, the 2 x 1 column convolution, per direction as a (2h, G h) matrix over the
        # previous column's [row r - 1 (above); row r (left)].
        self.state_to_state = _state_matrix(2, 2 * hidden, gates * hidden)
        self.initial_state = nn.Parameter(torch.zeros(self.cell.states, 2, 1, 1, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # NOTE: on a CPU, a batch whose gates per column step (2 directions x H rows x batch x G h)
        # would outgrow ~1 MiB runs in chunks of images, in parallel threads (`autoreg.nn.chunks`).
        # Each step then stays in a core's cache, and the threads share the cores without waiting
        # for one another. The Row LSTM's row steps (B x W positions) keep torch's threads busy:
        # chunks made it slower (experiments/benchmarks/model_speed.py).
        chunk = max(1, CPU_CHUNK_BYTES // (2 * x.shape[2] * self.cell.gates * self.hidden * x.element_size()))
        return in_cpu_chunks(self, self._forward, x, chunk)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b, in_channels, height, width = x.shape
        gates, hidden, pixels = self.cell.gates, self.hidden, height * width
        order, rank, lengths = diagonal_order(height, width, x.device)
        # Right to left is left to right on the map mirrored along W (the columns only).
        mirror = order // width * width + width - 1 - order % width
        x = x.permute(2, 3, 0, 1).reshape(pixels, b, in_channels)  # raster order
        x = x.index_select(0, torch.cat([order, mirror]))  # (direction x column by column, B, C_in)
        # K_is, as one matrix product per direction on every pixel at once.
        conv = self.input_to_state
        w_is = (conv.weight * conv.mask).view(2, gates * hidden, in_channels).transpose(1, 2)
        xg = torch.baddbmm(conv.bias.view(2, 1, -1), x.view(2, -1, in_channels), w_is)
        initial = [s.expand(2, 1, b, hidden) for s in self.initial_state]
        state = [s[:, :0] for s in initial]  # rows lo_prev .. hi_prev of the previous column
        lo_prev, outputs = 0, []
        for c, x_col in enumerate(xg.view(2, pixels, b, gates, hidden).split(lengths, 1)):
            lo, n = max(0, c - width + 1), x_col.shape[1]
            # The previous column's rows r - 1 (above) and r (left), never r + 1; outside the
            # image (above row 0, left of a row's first pixel): the initial state.
            h_prev = state[0]
            above = torch.cat([initial[0], h_prev[:, : n - 1]], 1) if lo == 0 else h_prev[:, :n]
            left = [s[:, lo - lo_prev :] for s in state]
            if c < height:  # row c starts in this column
                left = [torch.cat([s, i], 1) for s, i in zip(left, initial)]
            prev = torch.cat([above, left[0]], -1).view(2, n * b, 2 * hidden)
            s = torch.bmm(prev, self.state_to_state).view(2, n, b, gates, hidden)
            state = self.cell.step(x_col, s, left)
            outputs.append(state[0])
            lo_prev = lo
        # Back to the image, (B, H W, h) in raster order; the right-to-left states mirrored back
        # and shifted down one row: at (r, j) they have read row r right of j, which the output at
        # (r, j) must not see.
        states = torch.cat(outputs, 1).view(2 * pixels, b, hidden).transpose(0, 1)
        out = states.index_select(1, rank)
        out[:, width:] += states.index_select(1, pixels + rank.view(height, width).flip(1).flatten()[:-width])
        return out.view(b, height, width, hidden).permute(0, 3, 1, 2)


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


register_layer(RowLSTM)(_RowLSTMColumn)
register_layer(DiagonalBiLSTM)(_DiagonalBiLSTMColumn)
