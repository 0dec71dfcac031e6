"""Skew and unskew a feature map (van den Oord et al. 2016, arXiv 1601.06759, sec. 3.2).

The Diagonal BiLSTM skews its input so that each diagonal of the image becomes a column: row r
is shifted right by r positions, turning an H x W map into an H x (W + H - 1) map whose empty
cells are zero. Column c of the skewed map holds the pixels (r, c - r); the left and upper
neighbours of a pixel both sit in the previous column, so a column-wise recurrence with a 2 x 1
kernel visits the image one diagonal at a time.

    a b c          a b c . .
    d e f   skew   . d e f .
    g h i   --->   . . g h i

Both directions are one pad and one reshape, no loop over rows: padding every row with H zeros
makes rows W + H long; read back with rows W + H - 1 long, row r starts r places further right.
The rows and columns are dimensions `dim` and `dim + 1`; any dimensions after them (channels, in
a channels-last layout) move with their pixel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _pad_end(x: torch.Tensor, dim: int, amount: int) -> torch.Tensor:
    """Append `amount` zeros along `dim` (F.pad lists dimensions from the last one)."""
    return F.pad(x, [0, 0] * (x.dim() - dim - 1) + [0, amount])


def skew(x: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """(..., H, W, ...) -> (..., H, W + H - 1, ...): row r shifted right by r, zeros elsewhere."""
    dim %= x.dim()
    h, w = x.shape[dim], x.shape[dim + 1]
    flat = _pad_end(x, dim + 1, h).flatten(dim, dim + 1)  # every row now ends with H zeros
    return flat.narrow(dim, 0, h * (w + h - 1)).unflatten(dim, (h, w + h - 1))


def unskew(x: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """(..., H, W + H - 1, ...) -> (..., H, W, ...): the inverse of `skew`."""
    dim %= x.dim()
    h, w = x.shape[dim], x.shape[dim + 1] - x.shape[dim] + 1
    flat = _pad_end(x.flatten(dim, dim + 1), dim, h)
    return flat.unflatten(dim, (h, w + h)).narrow(dim + 1, 0, w)  # row r of this view starts at (r, r)
