"""Lossless compression with a trained model: an exact likelihood is a code length.

An entropy coder driven by a model's conditional probabilities stores x in -log2 p(x) bits plus a
small constant (Shannon 1948; arithmetic / range coding: Witten, Neal & Cleary 1987, "Arithmetic
coding for data compression"), so a model with an NLL of L nats per image stores an image in
about L / ln 2 bits. Images are coded sub-pixel by sub-pixel in the model's own order (raster
scan, R -> G -> B within a pixel) with a range coder from `constriction` (Bamler 2022, "Understanding
Entropy Coding With Asymmetric Numeral Systems (ANS): a Statistician's Perspective", arXiv
2201.01741). A range coder is a queue: symbols come out of the decoder in the order they went in,
which is the order an autoregressive decoder can compute their probabilities in. (ANS, a stack,
would need every probability before the first symbol is written, and decodes in reverse.)

The decoder must use the probabilities the encoder used, bit for bit, or it decodes garbage. So:
- both sides compute them on the same incremental path: the sampler's `Stepper` (the fast cached
  columns, or `method='naive'`: a full forward pass per sub-pixel, for families without a fast
  path), run on the same device, over the same batches of images, in fp32 with autocast off;
  the file records the method, the device and the batch size, and decoding uses them;
- constriction's `Categorical(perfect=False)` turns each float table into 24-bit fixed-point
  frequencies, deterministically, giving every value at least 2^-24 (so no pixel is uncodable);
- the file carries a hash of the model (its config and weights), a CRC of the whole file and a CRC
  of the images. Decoding refuses another model and a corrupt or truncated file before decoding,
  and writes nothing unless the decoded images match the CRC taken at encoding (which catches a
  machine whose arithmetic differs from the encoder's).

A batch of images is coded together: one step of the model gives one sub-pixel of every image,
coded as B symbols. Class labels of a conditional model go first in each batch, coded uniformly
over the classes (log2(num_classes) bits per image beyond the model's conditional NLL).

File layout (little-endian): `HEADER` fields (magic, model hash, image shape, levels, method,
device, batch size, image count, classes, image CRC), the CRC32 of everything else, then the
range coder's 32-bit words.

Heads plug in through `distribution.table` (autoreg.distributions.Likelihood): the probabilities of
one sub-pixel's `levels` values given the pixel's earlier channels.

The package: `format` (the file), `coder` (the coding loop, `compress` and `decompress`), `images`
(PNG files and data splits in and out), `cli` (compress.py's task).
"""
from autoreg.compression.coder import CodingStats, check_images, compress, decompress, sub_pixel_probs
from autoreg.compression.format import HEADER_BYTES, CompressedFileError, Header, read_header
from autoreg.compression.images import input_paths, png_bytes, read_pngs, split_images

__all__ = ["HEADER_BYTES", "CodingStats", "CompressedFileError", "Header", "check_images", "compress", "decompress",
           "input_paths", "png_bytes", "read_header", "read_pngs", "split_images", "sub_pixel_probs"]
