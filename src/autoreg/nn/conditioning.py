"""Class conditioning: a learned embedding of the label that enters every layer.

Conditional PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders", arXiv 1606.05328, eq. 4) adds V^T h to a layer's pre-activations, h a one-hot class
vector: that is one learned bias vector per class and layer. `ClassBias` holds them for all the
layers of a network in one embedding table. It starts at zero, so a conditional model starts as
its unconditional twin and learns how far each class moves each layer. A bias per channel
(rather than FiLM's scale and bias) is the paper's own form, keeps every layer's shape, and
leaves the fast samplers one addition per layer and position.
"""
from __future__ import annotations

import torch
from torch import nn


class ClassBias(nn.Module):
    """labels (B,) -> biases (layers, B, channels): layer n's input gets `bias[n]` per channel."""

    def __init__(self, num_classes: int, channels: int, layers: int):
        super().__init__()
        self.num_classes, self.channels, self.layers = num_classes, channels, layers
        self.embedding = nn.Embedding(num_classes, layers * channels)
        nn.init.zeros_(self.embedding.weight)

    def forward(self, y: torch.Tensor | None) -> torch.Tensor:
        if y is None:
            raise ValueError("this model is class-conditional: it needs labels y (B,) in 0..num_classes-1")
        return self.embedding(y.long()).view(-1, self.layers, self.channels).transpose(0, 1)



def with_label_biases(layers: list[nn.Module], label_bias: ClassBias | None, y: torch.Tensor | None) -> list:
    """`layers` in order with, for a conditional model, the label's (B, C) bias before each layer
    but the first (`label_bias` holds len(layers) - 1 of them); unchanged for an unconditional one."""
    if label_bias is None:
        return list(layers)
    stages = [layers[0]]
    for layer, bias in zip(layers[1:], label_bias(y)):
        stages += [bias, layer]
    return stages


def run_stages(stages: list, x: torch.Tensor) -> torch.Tensor:
    """Apply `with_label_biases`' stages: layers are called, biases added per channel."""
    for stage in stages:
        x = x + stage[:, :, None, None] if isinstance(stage, torch.Tensor) else stage(x)
    return x
