"""Building blocks: masked convolutions, recurrent cells, skew/unskew, class conditioning."""
from autoreg.nn.conditioning import ClassBias, run_stages, with_label_biases
from autoreg.nn.masked import MaskedConv2d, causal_mask, channel_groups
from autoreg.nn.recurrent import CELLS, DiagonalBiLSTM, GRUCell, LSTMCell, RowLSTM, diagonal_order, gate_conv
from autoreg.nn.skew import skew, unskew

__all__ = [
    "CELLS",
    "ClassBias",
    "DiagonalBiLSTM",
    "GRUCell",
    "LSTMCell",
    "MaskedConv2d",
    "RowLSTM",
    "causal_mask",
    "channel_groups",
    "diagonal_order",
    "gate_conv",
    "run_stages",
    "skew",
    "unskew",
    "with_label_biases",
]
