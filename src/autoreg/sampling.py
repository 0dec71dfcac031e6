"""Drawing images from autoregressive models: a naive reference sampler and a fast exact one.

A model factorises p(x) = prod_i p(x_i | x_<i) in raster order, R -> G -> B within a pixel
(van den Oord et al. 2016, "Pixel Recurrent Neural Networks", arXiv 1601.06759), so a sample is
drawn one sub-pixel at a time. Both samplers share one driver loop; they differ only in how they
get the model's parameters at the current position (a "column source", see `Stepper`):

- naive: a full forward pass of the whole image per sub-pixel (H * W * C passes). Obviously
  right, and slow: each pass recomputes every position although only one input changed.
- fast (default): activation caching (Ramachandran et al. 2017, "Fast Generation for
  Convolutional Autoregressive Models", arXiv 1704.06001). A causal layer's output at position q
  depends only on its input at positions <= q (< q for the mask-A first layer). So every layer
  keeps its input in a cache; once the pixels before q are drawn, the network's outputs at q
  come from one "column": for each layer, gather the k x k window of unmasked taps around q from
  the cache and multiply it with the masked weight flattened to a (taps * C_in, C_out) matrix.
  Each pixel then costs one column of the network instead of a whole forward pass.
  Within a pixel the column is recomputed once per colour channel: the output for channel c may
  read channels < c of the same pixel, which are only known after they are drawn.

Both draw from uniforms fixed up front (one per sub-pixel, or `distribution.noise_channels(C)` per
pixel for a head that draws whole pixels, autoreg.distributions), so the same seed or the same
noise gives the same images, whatever the method or batch size; fast and naive agree to float
rounding (tests/test_sampling.py checks probabilities within 1e-5 and identical pixels).

Completion: given pixels (`known` where `known_mask` is true) are kept and the others drawn in
raster order, conditioned on every given pixel before them. One full forward pass fills the
caches up to the first pixel to draw, so completing the bottom half costs half a sample (the
Diagonal BiLSTM's column fills its caches position by position: one sample more).

Extending the fast path: a model family gives its class a method `fast_stepper(batch, device,
dtype, y) -> Stepper` (autoreg.models); most build a `CachedColumns` over their layers. Layers
built from MaskedConv2d, element-wise activations, nn.Sequential, residual blocks (`Residual`) and
label biases (`Shift`) have columns here; a family registers the columns of its own layer types
with `register_layer` in its model file (Row LSTM, Diagonal BiLSTM: autoreg.models.pixelrnn). A model without a
`fast_stepper`, or with a layer without a column, makes `method='fast'` fail with an error pointing
to `sampling.method=naive`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from autoreg.errors import UserError
from autoreg.nn import MaskedConv2d

METHODS = ("fast", "naive")


class FastSamplingUnsupported(UserError, TypeError):
    """The model (or one of its layers) has no fast sampling path."""


class Stepper(Protocol):
    """A column source for one batch: the samplers' only model-specific part.

    The driver draws into `canvas` (B, C, H, W, zeros at first) in place, in raster order.

    `step(q)` returns the params (B, C*K) at flat position q = i * W + j. It is called for q in
    increasing order from the first pixel to draw, once per channel of the pixel, each time after
    the pixel's earlier channels were written to the canvas (once for a pixel given in the whole
    batch, and once per pixel for a head that draws whole pixels: `distribution.joint`).

    `prime()` returns the params (B, C*K, H, W) of a full pass over the canvas as it is and fills
    the caches. It is called only in completion: before the first step, when pixels before it are
    given, and after the last, when the probabilities of the given pixels after it are asked for.
    """

    canvas: Tensor

    def prime(self) -> Tensor: ...

    def step(self, q: int) -> Tensor: ...


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

    method: 'fast' (cached, exact; default) or 'naive' (one full forward per sub-pixel).
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
    if method not in METHODS:
        raise ValueError(f"sampling method {method!r} is not allowed; choose one of: {', '.join(METHODS)}")
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
                stepper = _stepper(model, method, min(batch_size, num - s), device, dtype, labels)
                x, p = _draw(
                    stepper,
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


def has_fast_path(model: nn.Module) -> bool:
    """Whether `method='fast'` works for `model`: its class and every layer in it have a column."""
    model = getattr(model, "_orig_mod", model)
    param = next(model.parameters())
    try:
        with torch.inference_mode():
            y = torch.zeros(1, dtype=torch.long, device=param.device) if getattr(model, "num_classes", None) else None
            _stepper(model, "fast", 1, param.device, param.dtype, y)
    except FastSamplingUnsupported:
        return False
    return True


def resolve_method(model: nn.Module, method: str) -> str:
    """`auto`: the fast cached sampler where the model has one, else the naive one."""
    if method == "auto":
        return "fast" if has_fast_path(model) else "naive"
    return method


def _draw(
    stepper: Stepper,
    distribution,
    u: Tensor,
    temperature: float,
    known: Tensor | None,
    known_mask: Tensor | None,
    return_probs: bool,
    bar,
) -> tuple[Tensor, Tensor | None]:
    """The driver loop shared by both samplers; fills and returns `stepper.canvas`."""
    canvas = stepper.canvas
    b, c, h, w = canvas.shape
    if distribution.joint:
        return _draw_pixels(stepper, distribution, u, temperature, known, known_mask, return_probs, bar)
    k = distribution.params_per_channel
    todo, start, stop = _plan(canvas, known, known_mask)
    # Positions before `start` are all given: one full pass fills the caches (and their probs).
    # From an empty canvas there is nothing to fill: the caches start as zeros.
    params = stepper.prime() if start > 0 else None
    probs = None
    if return_probs:
        probs = distribution.probs(params if params is not None else u.new_zeros(b, c * k, h, w), temperature)
    bar.update(start // w)
    # Per-position views made once: indexing a tensor costs microseconds, as much as the math.
    pixels = [canvas[:, :, i, j] for i in range(h) for j in range(w)]
    noise = [u[:, :, i, j] for i in range(h) for j in range(w)]
    for q in range(start, stop):
        i, j = divmod(q, w)
        for ch in range(c if todo[q] else 1):  # a given pixel needs one pass, for the caches
            params = stepper.step(q)
            if return_probs:
                # Pass ch is exact for channel ch; a given pixel's single pass, for all channels.
                done = slice(ch, ch + 1) if todo[q] else slice(None)
                pixel_probs = distribution.probs(params.view(b, c * k, 1, 1), temperature)
                probs[:, done, ..., i, j] = pixel_probs[:, done, ..., 0, 0]
            if not todo[q]:
                continue
            value = distribution.sample(
                params[:, ch * k : (ch + 1) * k].reshape(b, k, 1, 1), noise[q][:, ch].reshape(b, 1, 1, 1), temperature
            ).view(b)
            if known is not None:
                value = torch.where(known_mask[:, ch, i, j], known[:, ch, i, j], value)
            pixels[q][:, ch] = value
        if j == w - 1:
            bar.update(1)
    bar.update(h - stop // w)
    if return_probs and start < stop < h * w:
        # Given pixels after the last drawn one: the canvas is final, one full pass has them all.
        tail = distribution.probs(stepper.prime(), temperature)
        probs.flatten(-2)[..., stop:] = tail.flatten(-2)[..., stop:]
    return canvas, probs


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


def _draw_pixels(
    stepper: Stepper,
    distribution,
    u: Tensor,
    temperature: float,
    known: Tensor | None,
    known_mask: Tensor | None,
    return_probs: bool,
    bar,
) -> tuple[Tensor, Tensor | None]:
    """`_draw` for a head that draws whole pixels (`distribution.joint`): one step per pixel, and
    `distribution.sample` draws all its channels from the pixel's own uniforms. Given pixels are
    whole (`sample` checks), so a pixel is given or drawn per image."""
    canvas = stepper.canvas
    b, c, h, w = canvas.shape
    todo, start, stop = _plan(canvas, known, known_mask)
    params = stepper.prime() if start > 0 else None
    probs = None
    if return_probs:
        first = params if params is not None else u.new_zeros(b, distribution.num_params(c), h, w)
        probs = distribution.probs(first, temperature, canvas)
    bar.update(start // w)
    pixels = [canvas[:, :, i, j] for i in range(h) for j in range(w)]
    noise = [u[:, :, i, j] for i in range(h) for j in range(w)]
    for q in range(start, stop):
        i, j = divmod(q, w)
        params = stepper.step(q).view(b, -1, 1, 1)
        if todo[q]:
            value = distribution.sample(params, noise[q].reshape(b, -1, 1, 1), temperature).view(b, c)
            if known is not None:
                value = torch.where(known_mask[:, :, i, j], known[:, :, i, j], value)
            pixels[q].copy_(value)
        if return_probs:
            probs[..., i, j] = distribution.probs(params, temperature, pixels[q].view(b, c, 1, 1))[..., 0, 0]
        if j == w - 1:
            bar.update(1)
    bar.update(h - stop // w)
    if return_probs and start < stop < h * w:
        probs.flatten(-2)[..., stop:] = distribution.probs(stepper.prime(), temperature, canvas).flatten(-2)[..., stop:]
    return canvas, probs


def _stepper(model: nn.Module, method: str, batch: int, device, dtype, y: Tensor | None) -> Stepper:
    if method == "naive":
        return NaiveStepper(model, batch, device, dtype, y)
    if hasattr(model, "fast_stepper"):
        return model.fast_stepper(batch, device, dtype, y)
    raise FastSamplingUnsupported(
        f"fast sampling is not implemented for {type(model).__name__}; use sampling.method=naive"
    )


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


# ---------------------------------------------------------------------------------------------
# The fast path: layers compiled into "columns" that compute one position from cached inputs.
# ---------------------------------------------------------------------------------------------


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
    autoreg.nn.with_label_biases lays them out). The canvas lives in the first layer's input
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


class _MaskedConvColumn:
    """A MaskedConv2d at one position: gather the unmasked taps, one matrix product.

    Taps whose mask is zero for every channel pair are dropped from the gather and the weight.
    A layer whose only tap is the centre (1x1) reads just `v`, with no cache.
    """

    def __init__(self, conv: MaskedConv2d, geometry: Geometry, cache: Tensor | None):
        if conv.stride != (1, 1) or conv.groups != 1 or any(k % 2 == 0 for k in conv.kernel_size):
            raise FastSamplingUnsupported(
                f"fast sampling needs odd kernels, stride 1 and groups 1 ({conv}); use sampling.method=naive"
            )
        kh, kw = conv.kernel_size
        dh, dw = conv.dilation
        weight = (conv.weight * conv.mask).to(geometry.dtype)
        taps = [(a, b) for a in range(kh) for b in range(kw) if conv.mask[:, :, a, b].any()]
        # (taps * C_in, C_out), rows in the order the gather lays out the inputs.
        self._weight = torch.stack([weight[:, :, a, b] for a, b in taps], 1).flatten(1).t().contiguous()
        self._bias = conv.bias
        self._conv = conv
        self._spatial = taps != [(kh // 2, kw // 2)]
        if not self._spatial:
            return
        b, h, w = geometry.batch, geometry.height, geometry.width
        self._own_cache = cache is None
        self._cache = (
            torch.zeros(b, h * w + 1, conv.in_channels, device=geometry.device, dtype=geometry.dtype)
            if cache is None
            else cache
        )
        self._pixels = self._cache.unbind(1)
        i = torch.arange(h).view(h, 1, 1)
        j = torch.arange(w).view(1, w, 1)
        rows = i + torch.tensor([(a - kh // 2) * dh for a, _ in taps])
        cols = j + torch.tensor([(bb - kw // 2) * dw for _, bb in taps])
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        index = torch.where(inside, rows * w + cols, h * w).view(h * w, len(taps))
        self._index = index.to(geometry.device).unbind(0)

    def step(self, v: Tensor, q: int) -> Tensor:
        if self._spatial:
            if self._own_cache:
                self._pixels[q].copy_(v)
            v = torch.index_select(self._cache, 1, self._index[q]).view(v.shape[0], -1)
        if self._bias is None:
            return v @ self._weight
        return torch.addmm(self._bias, v, self._weight)

    def full(self, x: Tensor) -> Tensor:
        if self._spatial and self._own_cache:
            self._cache[:, :-1].copy_(x.flatten(2).transpose(1, 2))
        return self._conv(x)


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
    """Adds a (B, C) constant at every position: a class-conditional bias (autoreg.nn.ClassBias),
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


register_layer(MaskedConv2d)(_MaskedConvColumn)
register_layer(nn.Sequential)(_sequential)
register_layer(nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Identity)(_Pointwise)
