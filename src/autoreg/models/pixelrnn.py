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
every recurrent layer and of the head (`autoreg.nn.conditioning.ClassBias`): the input-to-state convolutions
turn it into a per-class bias of every gate, as conditional PixelCNN's V^T h does.

Fast sampling: the recurrent layers' columns are beside them (autoreg.nn.recurrent).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from autoreg.families.pixelrnn import PixelRNNKeys
from autoreg.models.pixelcnn import output_head
from autoreg.nn.conditioning import ClassBias, run_stages, with_label_biases
from autoreg.nn.masked import MaskedConv2d
from autoreg.nn.recurrent import DiagonalBiLSTM, RowLSTM
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
    """image (B, C, H, W) in [0, 1] -> params (B, distribution.num_params(C), H, W)."""

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
        self.head = output_head(channels, distribution.num_params(c), c, keys.head_layers)
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


register_layer(ResidualRecurrent)(_ResidualRecurrent)
