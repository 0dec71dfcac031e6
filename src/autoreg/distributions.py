"""Likelihood heads: turn a model's raw outputs (`params`) into an exact NLL and samples.

Every head works on images `x` scaled to [0, 1] (binary pixels are 0/1, 8-bit pixels are k/255)
and returns the NLL per image in nats: the sum over pixels and channels of -log p(x_i | x_<i).
`params` has `params_per_channel * C` channels, in C contiguous groups (the order of
`autoreg.nn.channel_groups`), so group c may depend on colour channels < c of the same pixel.

Sampling draws from the same distribution the NLL measures, by inverse-CDF on given uniform noise
`u` (one uniform per sub-pixel): the same noise gives the same image, which lets two samplers be
compared exactly. `temperature` divides the logits (1.0 is the model itself).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def bits_per_dim(nll: torch.Tensor, num_dims: int) -> torch.Tensor:
    """Nats per image -> bits per dimension (sub-pixel)."""
    return nll / (num_dims * math.log(2))


class Bernoulli:
    """p(x_i = 1 | x_<i) = sigmoid(logit_i): binarized images (PixelCNN on binarized MNIST)."""

    name = "bernoulli"
    params_per_channel = 1
    levels = 2

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(params.float(), x.float(), reduction="none")
        return bce.flatten(1).sum(1)

    def probs(self, params: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """p(x = 1) per sub-pixel, shape (B, C, H, W)."""
        return torch.sigmoid(params.float() / temperature)

    def sample(self, params: torch.Tensor, u: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        return (u < self.probs(params, temperature)).float()


class Categorical:
    """A 256-way softmax per sub-pixel (PixelRNN paper, sec. 5.3): 8-bit images, any number of
    channels, channel-autoregressive within a pixel through the masks."""

    name = "categorical"

    def __init__(self, levels: int = 256):
        self.levels = levels
        self.params_per_channel = levels

    def _logits(self, params: torch.Tensor) -> torch.Tensor:
        b, _, h, w = params.shape
        return params.float().view(b, -1, self.levels, h, w)  # (B, C, K, H, W)

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        target = (x * (self.levels - 1)).round().long()
        ce = F.cross_entropy(self._logits(params).transpose(1, 2), target, reduction="none")
        return ce.flatten(1).sum(1)

    def probs(self, params: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Probabilities of every level, shape (B, C, K, H, W)."""
        return torch.softmax(self._logits(params) / temperature, dim=2)

    def sample(self, params: torch.Tensor, u: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        cdf = self.probs(params, temperature).cumsum(dim=2)
        level = (cdf < u.unsqueeze(2)).sum(dim=2).clamp(max=self.levels - 1)
        return level.float() / (self.levels - 1)


def distribution_for(bits: int):
    """The likelihood head for data of `bits` bits per sub-pixel (1: Bernoulli, 8: Categorical)."""
    if bits == 1:
        return Bernoulli()
    if bits == 8:
        return Categorical(256)
    raise ValueError(f"no likelihood head for {bits}-bit data; allowed: 1, 8")
