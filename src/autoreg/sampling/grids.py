"""Image grids of samples and completions, for TensorBoard (autoreg.callbacks.SampleGrid) and sample.py."""
from __future__ import annotations

import torch
from torchvision.utils import make_grid

from autoreg.sampling.draw import sample


def grid_image(images: torch.Tensor, nrow: int, scale: int = 1) -> torch.Tensor:
    """A (C, H', W') grid of `images` (N, C, H, W), grey padding, each pixel repeated `scale` x
    `scale` times (nearest neighbour, so strokes stay sharp at TensorBoard's card size)."""
    grid = make_grid(images.float().cpu(), nrow=nrow, pad_value=0.5)
    return grid.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)


def completion_rows(net: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, completions: int, y=None, **kwargs) -> torch.Tensor:
    """Rows of [original, bottom half hidden, `completions` redrawn bottom halves] for the images
    `x` (N, C, H, W) in [0, 1] (the PixelRNN paper's fig. 1 layout). A conditional model completes
    each image for label `y`, or for its own label (`labels`) when None. `kwargs` go to the sampler."""
    device = next(net.parameters()).device
    known_mask = torch.zeros_like(x, dtype=torch.bool)
    known_mask[:, :, : x.shape[2] // 2] = True
    if getattr(net, "num_classes", None) and y is None:
        y = labels.repeat_interleave(completions).to(device)
    filled = sample(net, known=x.repeat_interleave(completions, 0).to(device),
                    known_mask=known_mask.repeat_interleave(completions, 0).to(device), y=y, **kwargs).cpu()
    hidden = torch.where(known_mask, x, torch.full_like(x, 0.5))
    rows = [torch.cat([x[i : i + 1], hidden[i : i + 1], filled[i * completions : (i + 1) * completions]]) for i in range(len(x))]
    return torch.cat(rows)
