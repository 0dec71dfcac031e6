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
"""
from __future__ import annotations

import torch
from torch import nn

from autoreg.models.pixelcnn import output_head
from autoreg.nn import CELLS, DiagonalBiLSTM, MaskedConv2d, RowLSTM

ARCHS = ("row_lstm", "diagonal_bilstm")
DIAGONAL_KERNEL = 3  # the only `kernel` the Diagonal BiLSTM accepts (the shared default)
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

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        distribution,
        arch: str = "row_lstm",
        cell: str = "lstm",
        depth: int = 2,
        channels: int = 64,
        kernel: int = 3,
        head_layers: int = 2,
    ):
        super().__init__()
        c = image_shape[0]
        if arch not in ARCHS:
            raise ValueError(f"arch={arch!r} is not allowed; choose one of: {', '.join(ARCHS)}")
        if cell not in CELLS:
            raise ValueError(f"cell={cell!r} is not allowed; choose one of: {', '.join(CELLS)}")
        if depth < 1 or head_layers < 1:
            raise ValueError(f"depth={depth}, head_layers={head_layers}: both must be >= 1")
        if channels < 2 or channels % 2:
            raise ValueError(f"channels={channels} must be even and >= 2 (2h features, h per gate)")
        if arch == "row_lstm" and (kernel < 1 or kernel % 2 == 0):
            raise ValueError(f"kernel={kernel} must be odd and >= 1 for the Row LSTM")
        if arch == "diagonal_bilstm" and kernel != DIAGONAL_KERNEL:
            raise ValueError(f"kernel={kernel}: the Diagonal BiLSTM's kernels are fixed; use {DIAGONAL_KERNEL}")
        self.image_shape = tuple(image_shape)
        self.distribution = distribution
        h = channels // 2
        self.first = MaskedConv2d(c, channels, FIRST_KERNEL, "A", c)

        def recurrent() -> nn.Module:
            if arch == "row_lstm":
                return RowLSTM(channels, h, kernel, cell, c)
            return DiagonalBiLSTM(channels, h, cell, c)

        self.layers = nn.Sequential(*(ResidualRecurrent(recurrent(), channels, c) for _ in range(depth)))
        self.head = output_head(channels, c * distribution.params_per_channel, c, head_layers)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        # Channels-last memory: the recurrent layers step through contiguous (W or H, C) blocks.
        x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.layers(self.first(x))).contiguous()
