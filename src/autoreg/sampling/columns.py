"""The fast path's building blocks: layers compiled into "columns" that compute one position from
cached inputs (autoreg.sampling). A layer type gets its column with `register_layer`, beside the
layer (MaskedConv2d's in autoreg.nn.masked, the recurrent layers' in autoreg.nn.recurrent); the
generic ones here cover nn.Sequential, element-wise activations, residual blocks and label biases."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

from autoreg.sampling.engine import FastSamplingUnsupported


class Geometry:
    """What a column builder needs to know: batch and image size, device, dtype."""

    def __init__(self, batch: int, height: int, width: int, device, dtype):
        self.batch, self.height, self.width, self.device, self.dtype = batch, height, width, device, dtype


class Column(Protocol):
    """A layer at one position. `step(v, q)`: the layer's output (B, C_out) at position q, given its
    input there, `v` (B, C_in), and its own caches of earlier positions. `full(x)`: the layer on a
    whole (B, C_in, H, W) batch, also filling the caches."""

    def step(self, v: Tensor, q: int) -> Tensor: ...

    def full(self, x: Tensor) -> Tensor: ...


# A column builder: (layer, geometry, input cache or None) -> Column. The input cache is a
# (B, H*W + 1, C_in) tensor that already holds the layer's input (the model's canvas), so the
# layer needs not keep its own copy; builders that take no spatial input ignore it.
ColumnBuilder = Callable[[nn.Module, Geometry, "Tensor | None"], Column]
_LAYERS: dict[type, ColumnBuilder] = {}


def register_layer(*types: type) -> Callable[[ColumnBuilder], ColumnBuilder]:
    """Register a column builder for layers of these types (and their subclasses)."""

    def register(builder: ColumnBuilder) -> ColumnBuilder:
        for t in types:
            _LAYERS[t] = builder
        return builder

    return register


def column(layer: nn.Module, geometry: Geometry, cache: Tensor | None = None) -> Column:
    """The column of `layer`, built by the builder registered for its class (or a base class)."""
    for cls in type(layer).__mro__:
        if cls in _LAYERS:
            return _LAYERS[cls](layer, geometry, cache)
    raise FastSamplingUnsupported(
        f"fast sampling does not support the layer {type(layer).__name__}; use sampling.method=naive"
    )


def canvas_cache(image_shape, batch: int, device, dtype) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
    """(cache, canvas, pixels): the first layer's input cache, (B, H*W + 1, C) channels-last, its
    extra row a zero that every tap outside the image points to (so no padding is needed); the
    canvas the driver draws into, a (B, C, H, W) view of it; and per position q a (B, C) view."""
    c, h, w = image_shape
    cache = torch.zeros(batch, h * w + 1, c, device=device, dtype=dtype)
    return cache, cache[:, : h * w].view(batch, h, w, c).permute(0, 3, 1, 2), cache.unbind(1)


class CachedColumns:
    """A Stepper for a feed-forward stack of layers (the model's input goes to `layers[0]`).
    `layers` holds modules, or (B, C) tensors: a label's bias added there (`Shift`;
    autoreg.nn.conditioning.with_label_biases lays them out). The canvas lives in the first layer's input
    cache (`canvas_cache`)."""

    def __init__(self, layers: Sequence[nn.Module | Tensor], image_shape, batch: int, device, dtype):
        self._input, self.canvas, self._pixels = canvas_cache(image_shape, batch, device, dtype)
        geometry = Geometry(batch, *image_shape[1:], device, dtype)
        self._net = _Chain(
            [Shift(layer.to(dtype)) if isinstance(layer, Tensor) else column(layer, geometry, self._input if n == 0 else None)
             for n, layer in enumerate(layers)]
        )

    def prime(self) -> Tensor:
        return self._net.full(self.canvas)

    def step(self, q: int) -> Tensor:
        return self._net.step(self._pixels[q], q)


class _Chain:
    """Columns applied one after the other."""

    def __init__(self, columns: Sequence[Column]):
        self._layers = list(columns)

    def step(self, v: Tensor, q: int) -> Tensor:
        for layer in self._layers:
            v = layer.step(v, q)
        return v

    def full(self, x: Tensor) -> Tensor:
        for layer in self._layers:
            x = layer.full(x)
        return x


def _sequential(layers: nn.Sequential, geometry: Geometry, cache: Tensor | None) -> _Chain:
    # Only the first layer reads the stack's input, so only it may share the input's cache.
    return _Chain([column(layer, geometry, cache if n == 0 else None) for n, layer in enumerate(layers)])


class Shift:
    """Adds a (B, C) constant at every position: a class-conditional bias (autoreg.nn.conditioning.ClassBias),
    known before sampling starts."""

    def __init__(self, bias: Tensor):
        self._bias = bias

    def step(self, v: Tensor, q: int) -> Tensor:
        return v + self._bias

    def full(self, x: Tensor) -> Tensor:
        return x + self._bias[:, :, None, None]


class Residual:
    """x + column(x), for residual blocks whose `net` holds the branch (x + block.net(x))."""

    def __init__(self, block: nn.Module, geometry: Geometry, cache: Tensor | None):
        self._net = column(block.net, geometry, cache)

    def step(self, v: Tensor, q: int) -> Tensor:
        return v + self._net.step(v, q)

    def full(self, x: Tensor) -> Tensor:
        return x + self._net.full(x)


class _Pointwise:
    """An element-wise layer: the same function at one position as everywhere."""

    def __init__(self, layer: nn.Module, geometry: Geometry, cache: Tensor | None):
        self._forward = layer.forward  # skips nn.Module.__call__'s hook handling, per position

    def step(self, v: Tensor, q: int) -> Tensor:
        return self._forward(v)

    def full(self, x: Tensor) -> Tensor:
        return self._forward(x)


register_layer(nn.Sequential)(_sequential)
register_layer(nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Identity)(_Pointwise)
