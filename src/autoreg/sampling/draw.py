"""Drawing images (and completing them) with the decode engine: the policy that draws each
sub-pixel from uniforms fixed up front, so the same seed or noise gives the same images whatever
the method or batch size."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from autoreg.sampling.engine import METHODS, decode, resolve_method, stepper


def sample(
    model: nn.Module,
    num: int | None = None,
    *,
    method: str = "fast",
    temperature: float = 1.0,
    seed: int | torch.Generator | None = None,
    known: Tensor | None = None,
    known_mask: Tensor | None = None,
    y: Tensor | int | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    noise: Tensor | None = None,
    return_probs: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Draw `num` images (num, C, H, W) in [0, 1] from `model`, on the model's device.

    method: 'fast' (cached, exact; default), 'naive' (one full forward per sub-pixel) or 'auto'
        (fast where the model has it, else naive: autoreg.sampling.resolve_method).
    temperature: divides the logits; 1.0 samples the model itself, lower is greedier.
    seed: an int or a torch.Generator for the uniforms (drawn on the generator's device, CPU for
        an int); None uses torch's global RNG. Same seed, same images, for any method/batch_size.
    known, known_mask: completion. `known` (num, C, H, W) in [0, 1] and a boolean (or 0/1) mask
        broadcastable to it; masked-in sub-pixels are kept, the rest drawn. `num` may be omitted.
    y: class labels (num,) or one int, passed to `model(x, y)` for conditional models.
    batch_size: draw at most this many images at once (default: all `num`).
    progress: show a progress bar over image rows.
    noise: the uniforms (num, N, H, W) in [0, 1) to draw with instead of `seed`, to compare
        samplers on identical noise; N = `model.distribution.noise_channels(C)` (C for the
        per-channel heads).
    return_probs: also return the probabilities each sub-pixel was drawn with, as the model's
        distribution's `probs` lays them out ((num, C, H, W) for Bernoulli, (num, C, K, H, W) for
        a K-way categorical or, conditional on the pixel's earlier channels, a logistic mixture),
        given pixels included.

    The model is put in eval mode for the call and its training flag restored after. It runs in
    its parameters' dtype even inside an autocast region (fp32 under bf16-mixed training), the
    precision `val/nll` is measured in.
    """
    if method == "auto":
        method = resolve_method(model, method)
    if method not in METHODS:
        raise ValueError(f"sampling method {method!r} is not allowed; choose one of: auto, {', '.join(METHODS)}")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} is invalid: it must be > 0")
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper: dispatch on the real class
    shape = tuple(model.image_shape)
    param = next(model.parameters())
    device, dtype = param.device, param.dtype

    if (known is None) != (known_mask is None):
        raise ValueError("completion needs both `known` (the image) and `known_mask` (which pixels are given)")
    if known is not None:
        if num is None:
            num = known.shape[0]
        if tuple(known.shape) != (num, *shape):
            raise ValueError(f"known has shape {tuple(known.shape)}; expected {(num, *shape)}")
        known_mask = torch.as_tensor(known_mask).bool().expand(num, *shape)
    if num is None or num < 1:
        raise ValueError(f"num={num} is invalid: it must be an integer >= 1")
    noise_shape = (num, model.distribution.noise_channels(shape[0]), *shape[1:])
    if noise is None:
        generator = torch.Generator().manual_seed(seed) if isinstance(seed, int) else seed
        noise = torch.rand(noise_shape, generator=generator, device=generator.device if generator else None)
    elif tuple(noise.shape) != noise_shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)}; expected {noise_shape}")
    if known is not None and model.distribution.joint and (known_mask.any(1) & ~known_mask.all(1)).any():
        raise ValueError(
            f"the {model.distribution.name} likelihood draws whole pixels: known_mask must give all channels of a pixel or none"
        )
    if y is not None:
        y = torch.as_tensor(y, device=device)
        y = y.expand(num) if y.dim() == 0 else y
        classes = getattr(model, "num_classes", None)
        if tuple(y.shape) != (num,) or (classes and not (0 <= int(y.min()) and int(y.max()) < classes)):
            raise ValueError(f"y must be {num} labels (or one) in 0..{(classes or 1) - 1}; got shape {tuple(y.shape)}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is invalid: it must be an integer >= 1")
    batch_size = batch_size or num

    was_training = model.training
    model.eval()
    images, probs = [], []
    starts = range(0, num, batch_size)
    bar = tqdm(total=len(starts) * shape[1], unit="row", desc=f"sampling ({method})", disable=not progress)
    try:
        with torch.inference_mode(), torch.autocast(device.type, enabled=False):
            for s in starts:
                part = slice(s, s + batch_size)
                labels = y[part] if y is not None else None
                columns = stepper(model, method, min(batch_size, num - s), device, dtype, labels)
                x, p = _draw(
                    columns,
                    model.distribution,
                    noise[part].to(device),
                    temperature,
                    known[part].to(device, dtype) if known is not None else None,
                    known_mask[part].to(device) if known is not None else None,
                    return_probs,
                    bar,
                )
                images.append(x)
                probs.append(p)
    finally:
        bar.close()
        model.train(was_training)
    # Concatenated outside inference mode: normal tensors, which callers may modify in place.
    images = torch.cat(images)
    return (images, torch.cat(probs)) if return_probs else images


def class_rows(num_classes: int, num: int) -> Tensor:
    """Labels for a grid of at least `num` images with one row per class: ceil(num / num_classes)
    of class 0, then as many of class 1, ... (a row is len(labels) // num_classes wide)."""
    return torch.arange(num_classes).repeat_interleave(math.ceil(num / num_classes))


def _draw(columns, distribution, u: Tensor, temperature: float, known: Tensor | None, known_mask: Tensor | None,
          return_probs: bool, bar) -> tuple[Tensor, Tensor | None]:
    """One batch: the given pixels on the canvas, the caches primed up to the first pixel to draw,
    the engine's loop with the drawing policy, and the probabilities of given pixels after the last."""
    canvas = columns.canvas
    b, c, h, w = canvas.shape
    todo, start, stop = _plan(canvas, known, known_mask)
    # Positions before `start` are all given: one full pass fills the caches (and their probs).
    # From an empty canvas there is nothing to fill: the caches start as zeros.
    params = columns.prime() if start > 0 else None
    draw = _Draw(distribution, u, temperature, known, known_mask)
    if return_probs:
        draw.probs = draw.table(params if params is not None else u.new_zeros(b, distribution.num_params(c), h, w), canvas)
    bar.update(start // w)
    decode(columns, distribution, draw, todo, start, stop, bar)
    bar.update(h - stop // w)
    if return_probs and start < stop < h * w:
        # Given pixels after the last drawn one: the canvas is final, one full pass has them all.
        draw.probs.flatten(-2)[..., stop:] = draw.table(columns.prime(), canvas).flatten(-2)[..., stop:]
    return canvas, draw.probs


def _plan(canvas: Tensor, known: Tensor | None, known_mask: Tensor | None) -> tuple[list[bool], int, int]:
    """Writes the given pixels to the canvas; returns per pixel whether it has something to draw,
    and the first and one-past-the-last such pixel."""
    h, w = canvas.shape[2:]
    if known is None:
        todo = [True] * (h * w)
    else:
        canvas.copy_(torch.where(known_mask, known, 0))
        todo = (~known_mask).any(dim=(0, 1)).flatten().tolist()  # pixels with something to draw
    drawn = [q for q, draw in enumerate(todo) if draw]
    start, stop = (drawn[0], drawn[-1] + 1) if drawn else (h * w, h * w)
    return todo, start, stop


class _Draw:
    """The engine's policy for sampling: each value from the head's `sample` on the position's own
    uniforms, a given sub-pixel kept; with `probs` set, the probabilities of every sub-pixel are
    recorded into it (a per-channel head's step for channel c is exact for channel c; a given
    pixel's single step, for all its channels)."""

    def __init__(self, distribution, u: Tensor, temperature: float, known: Tensor | None, known_mask: Tensor | None):
        self.distribution, self.temperature, self.known, self.known_mask = distribution, temperature, known, known_mask
        h, w = u.shape[2:]
        self._width = w
        self._noise = [u[:, :, i, j] for i in range(h) for j in range(w)]
        self.probs: Tensor | None = None

    def table(self, params: Tensor, x: Tensor) -> Tensor:
        """The head's probabilities for params (B, P, H', W') (a joint head's given the pixels `x`)."""
        return self.distribution.probs(params, self.temperature, x)

    def _keep_given(self, value: Tensor, q: int, channels: slice) -> Tensor:
        if self.known is None:
            return value
        i, j = divmod(q, self._width)
        return torch.where(self.known_mask[:, channels, i, j], self.known[:, channels, i, j], value)

    def sub_pixel(self, params: Tensor, q: int, channel: int, pixel: Tensor) -> Tensor:
        b, k = params.shape[0], self.distribution.params_per_channel
        if self.probs is not None:
            self._record(params, q, slice(channel, channel + 1), pixel)
        own = params[:, channel * k : (channel + 1) * k].reshape(b, k, 1, 1)
        value = self.distribution.sample(own, self._noise[q][:, channel].reshape(b, 1, 1, 1), self.temperature).view(b, 1)
        return self._keep_given(value, q, slice(channel, channel + 1)).view(b)

    def pixel(self, params: Tensor, q: int, pixel: Tensor) -> Tensor:
        b, c = pixel.shape
        drawn = self.distribution.sample(params.view(b, -1, 1, 1), self._noise[q].reshape(b, -1, 1, 1), self.temperature)
        value = self._keep_given(drawn.view(b, c), q, slice(None))
        if self.probs is not None:
            self._record(params, q, slice(None), value)
        return value

    def given(self, params: Tensor, q: int) -> None:
        if self.probs is not None:
            i, j = divmod(q, self._width)
            self._record(params, q, slice(None), self.known[:, :, i, j])

    def _record(self, params: Tensor, q: int, channels: slice, pixel: Tensor) -> None:
        b = params.shape[0]
        i, j = divmod(q, self._width)
        table = self.table(params.view(b, -1, 1, 1), pixel.reshape(b, -1, 1, 1))
        self.probs[:, channels, ..., i, j] = table[:, channels, ..., 0, 0]
