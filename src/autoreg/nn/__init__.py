"""Building blocks: masked convolutions, recurrent cells, skew/unskew."""
from autoreg.nn.masked import MaskedConv2d, causal_mask, channel_groups

__all__ = ["MaskedConv2d", "causal_mask", "channel_groups"]
