"""PixelRNN's model keys (van den Oord et al. 2016, arXiv 1601.06759, sec. 3): a mask-A 7x7 first
layer, `depth` residual recurrent layers (Row LSTM or Diagonal BiLSTM), a 1x1 head. Defaults are
sized for a CPU; the paper used 7-12 layers of h = 16-128. The network: autoreg.models.pixelrnn."""
from __future__ import annotations

from dataclasses import dataclass

from autoreg.checks import require_choice, require_int
from autoreg.errors import ConfigError
from autoreg.families import Family

ARCHS = ("row_lstm", "diagonal_bilstm")
CELLS = ("lstm", "gru")  # autoreg.nn.recurrent.CELLS
DIAGONAL_KERNEL = 3  # the only `kernel` the Diagonal BiLSTM accepts (the default)


@dataclass(frozen=True)
class PixelRNNKeys(Family):
    NAME = "pixelrnn"
    NETWORK = "autoreg.models.pixelrnn:PixelRNN"

    arch: str = "row_lstm"  # row_lstm (rows top to bottom, triangular context) | diagonal_bilstm (full context)
    cell: str = "lstm"      # recurrent unit: lstm | gru
    depth: int = 2          # number of residual recurrent layers
    channels: int = 32      # features between layers (2h; each recurrent layer has h units per gate), even
    kernel: int = DIAGONAL_KERNEL  # Row LSTM: k of its 1 x k input-to-state and state-to-state convs (odd);
                                   # Diagonal BiLSTM: kernels fixed by the paper (1x1, 2x1), any other value is an error
    head_layers: int = 2    # ReLU + 1x1 mask-B layers in the output head (the last maps to the likelihood)

    def check(self, image_shape: tuple[int, int, int], likelihood: str) -> None:
        require_choice("model.arch", self.arch, ARCHS)
        require_choice("model.cell", self.cell, CELLS)
        for key in ("depth", "head_layers"):
            require_int(f"model.{key}", getattr(self, key))
        require_int("model.channels", self.channels, minimum=2)
        if self.channels % 2:
            raise ConfigError(
                f"model.channels={self.channels} is invalid: it must be even "
                "(2h features, h per gate inside each recurrent layer)"
            )
        if self.arch == "row_lstm":
            require_int("model.kernel", self.kernel, odd=True)
        elif self.kernel != DIAGONAL_KERNEL:
            raise ConfigError(
                f"model.kernel={self.kernel} is not used by model.arch=diagonal_bilstm (its kernels are fixed: "
                f"1x1 input-to-state, 2x1 state-to-state); leave it at {DIAGONAL_KERNEL} or use model.arch=row_lstm"
            )
