"""Drawing images from autoregressive models: a naive reference sampler and a fast exact one.

A model factorises p(x) = prod_i p(x_i | x_<i) in raster order, R -> G -> B within a pixel
(van den Oord et al. 2016, "Pixel Recurrent Neural Networks", arXiv 1601.06759), so a sample is
drawn one sub-pixel at a time. Sampling, completion and compression share one decode loop
(`engine.decode`): a "column source" (`Stepper`) gives the model's parameters at the current
position and a policy turns them into the sub-pixel (drawn from noise: `draw`; range-coded:
autoreg.compression). The two column sources:

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
dtype, y) -> Stepper` (autoreg.families); most build a `CachedColumns` over their layers
(`columns`). A layer's column lives beside the layer, registered with `register_layer` (MaskedConv2d:
autoreg.nn.masked; Row LSTM, Diagonal BiLSTM: autoreg.nn.recurrent); element-wise activations,
nn.Sequential, residual blocks (`Residual`) and label biases (`Shift`) have theirs in `columns`. A
model without a `fast_stepper`, or with a layer without a column, makes `method='fast'` fail with
an error pointing to `sampling.method=naive`; `method='auto'` (`resolve_method`) picks fast
where it works.
"""
from autoreg.sampling.columns import CachedColumns, Column, Geometry, Residual, Shift, canvas_cache, column, register_layer
from autoreg.sampling.draw import class_rows, sample
from autoreg.sampling.engine import (
    METHODS,
    FastSamplingUnsupported,
    NaiveStepper,
    Policy,
    Stepper,
    decode,
    has_fast_path,
    resolve_method,
    stepper,
)

__all__ = [
    "METHODS", "CachedColumns", "Column", "FastSamplingUnsupported", "Geometry", "NaiveStepper", "Policy", "Residual",
    "Shift", "Stepper", "canvas_cache", "class_rows", "column", "decode", "has_fast_path", "register_layer",
    "resolve_method", "sample", "stepper",
]
