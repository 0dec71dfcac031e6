"""The raster-order decode engine that sampling, completion and compression share.

A model factorises p(x) = prod_i p(x_i | x_<i) in raster order, R -> G -> B within a pixel, so an
image is decoded one sub-pixel at a time: the model's params at the current position (from a
`Stepper`), then a `Policy` turns them into the sub-pixel's value, which goes on the canvas before
the next step. Sampling's policy draws from fixed uniforms (autoreg.sampling.draw), compression's
range-codes (autoreg.compression); both see the same params on the same path, so what one
decodes the other can measure.
"""
from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from autoreg.errors import ConfigError, UserError

METHODS = ("fast", "naive")


class FastSamplingUnsupported(UserError, TypeError):
    """The model (or one of its layers) has no fast sampling path."""


class Stepper(Protocol):
    """A column source for one batch: the engine's only model-specific part.

    The engine writes into `canvas` (B, C, H, W, zeros at first) in place, in raster order.

    `step(q)` returns the params (B, P) at flat position q = i * W + j. It is called for q in
    increasing order from the first pixel to decode, once per channel of the pixel, each time after
    the pixel's earlier channels were written to the canvas (once for a pixel given in the whole
    batch, and once per pixel for a head that draws whole pixels: `distribution.joint`).

    `prime()` returns the params (B, P, H, W) of a full pass over the canvas as it is and fills
    the caches. It is called only in completion: before the first step, when pixels before it are
    given, and after the last, when the probabilities of the given pixels after it are asked for.
    """

    canvas: Tensor

    def prime(self) -> Tensor: ...

    def step(self, q: int) -> Tensor: ...


class Policy(Protocol):
    """What the engine does with the params at a position (B, P): the values to put on the canvas."""

    def sub_pixel(self, params: Tensor, q: int, channel: int, pixel: Tensor) -> Tensor:
        """Channel `channel` (B,) of position q, for a per-channel head; `pixel` (B, C) holds the
        pixel's earlier channels."""

    def pixel(self, params: Tensor, q: int, pixel: Tensor) -> Tensor:
        """The whole pixel (B, C) at q, for a head that draws whole pixels (`distribution.joint`)."""

    def given(self, params: Tensor, q: int) -> None:
        """Position q is given in every image: its params, from the one step that fills the caches."""


def decode(stepper: Stepper, distribution, policy: Policy, todo: list[bool] | None = None, start: int = 0,
           stop: int | None = None, bar=None) -> Tensor:
    """Positions start..stop-1 of `stepper.canvas` in raster order, each from `policy` (positions
    where `todo` is false are given: one step for the caches); `bar` advances one per image row.
    Returns the canvas."""
    canvas = stepper.canvas
    b, c, h, w = canvas.shape
    stop = h * w if stop is None else stop
    # Per-position views made once: indexing a tensor costs microseconds, as much as the math.
    pixels = [canvas[:, :, i, j] for i in range(h) for j in range(w)]
    for q in range(start, stop):
        if todo is not None and not todo[q]:
            policy.given(stepper.step(q), q)
        elif distribution.joint:
            pixels[q].copy_(policy.pixel(stepper.step(q).view(b, -1), q, pixels[q]))
        else:
            for channel in range(c):
                pixels[q][:, channel] = policy.sub_pixel(stepper.step(q), q, channel, pixels[q])
        if bar is not None and q % w == w - 1:
            bar.update(1)
    return canvas


def stepper(model: nn.Module, method: str, batch: int, device, dtype, y: Tensor | None) -> Stepper:
    """The column source `method` names for `batch` images of `model` (labels `y` or None)."""
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper: dispatch on the real class
    if method == "naive":
        return NaiveStepper(model, batch, device, dtype, y)
    if hasattr(model, "fast_stepper"):
        return model.fast_stepper(batch, device, dtype, y)
    raise FastSamplingUnsupported(f"fast sampling is not implemented for {type(model).__name__}; use sampling.method=naive")


class NaiveStepper:
    """The reference: a full forward pass of the model per call."""

    def __init__(self, model: nn.Module, batch: int, device, dtype, y: Tensor | None):
        self.model, self.y = model, y
        self.canvas = torch.zeros(batch, *model.image_shape, device=device, dtype=dtype)
        self._width = model.image_shape[2]

    def prime(self) -> Tensor:
        return self.model(self.canvas, self.y)

    def step(self, q: int) -> Tensor:
        i, j = divmod(q, self._width)
        return self.model(self.canvas, self.y)[:, :, i, j]


def has_fast_path(model: nn.Module) -> bool:
    """Whether `method='fast'` works for `model`: its class and every layer in it have a column."""
    model = getattr(model, "_orig_mod", model)
    param = next(model.parameters())
    try:
        with torch.inference_mode():
            y = torch.zeros(1, dtype=torch.long, device=param.device) if getattr(model, "num_classes", None) else None
            stepper(model, "fast", 1, param.device, param.dtype, y)
    except FastSamplingUnsupported:
        return False
    return True


def resolve_method(model: nn.Module, method: str, key: str = "sampling.method") -> str:
    """`auto`: the fast cached sampler where the model has one, else the naive one; `fast` and
    `naive` as given; anything else is one line naming `key`."""
    if method == "auto":
        return "fast" if has_fast_path(model) else "naive"
    if method not in METHODS:
        raise ConfigError(f"{key}={method} is not allowed; choose one of: auto, {', '.join(METHODS)}")
    return method
