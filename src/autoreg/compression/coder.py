"""The coder: the decode engine (autoreg.sampling.engine) with a policy that range-codes each
sub-pixel with the model's probabilities, so encoding and decoding run one loop on one path."""
from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import constriction
import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from autoreg.compression.format import CRC, CompressedFileError, Header, images_crc, model_hash, read_header
from autoreg.errors import CheckpointError, ConfigError, DataError
from autoreg.sampling import decode, resolve_method, stepper

if TYPE_CHECKING:
    from autoreg.module import AutoregressiveModule

# 24-bit fixed point, at least one unit for every value; the same quantisation on both sides.
CATEGORICAL = constriction.stream.model.Categorical(perfect=False)
TINY = np.finfo(np.float64).tiny  # a probability that underflowed to 0 still has a finite code length


def sub_pixel_probs(distribution, params: Tensor, channel: int, pixel: Tensor) -> Tensor:
    """(B, levels) probabilities of sub-pixel `channel` of a pixel (the head's `table`), checked to
    give one per level."""
    probs = distribution.table(params, channel, pixel)
    if probs.shape[1] != distribution.levels:
        raise TypeError(f"{type(distribution).__name__}.table gave {probs.shape[1]} values per sub-pixel; "
                        f"coding needs one per level ({distribution.levels})")
    return probs


class _Encoder:
    """Writes the given symbols; returns them, so encoding and decoding share one loop."""

    def __init__(self):
        self._coder = constriction.stream.queue.RangeEncoder()

    def code(self, probs: np.ndarray, symbols: np.ndarray) -> np.ndarray:
        self._coder.encode(symbols, CATEGORICAL, probs)
        return symbols

    def words(self) -> np.ndarray:
        return self._coder.get_compressed()


class _Decoder:
    """Reads the symbols back, given the same probabilities."""

    def __init__(self, words: np.ndarray):
        self._coder = constriction.stream.queue.RangeDecoder(words)

    def code(self, probs: np.ndarray, symbols: None) -> np.ndarray:
        return self._coder.decode(CATEGORICAL, probs)


@dataclass


class CodingStats:
    """What one encode or decode took, and the model's code length along the way."""

    seconds: float
    nll_bits: float  # -log2 p with the probabilities the coder used, summed over the images (and labels)


class _Code:
    """The decode engine's policy for coding (autoreg.sampling.engine): each sub-pixel coded with
    the probabilities its params give after the pixel's earlier channels are on the canvas (a head
    that draws whole pixels gives one step per pixel, coded channel by channel); the code length
    adds up in `bits`."""

    def __init__(self, coder, distribution, given: Tensor | None, device, dtype):
        self.coder, self.distribution, self.device, self.dtype = coder, distribution, device, dtype
        # (H*W, C, B), so that each sub-pixel's B symbols are contiguous
        self._given = given.flatten(2).permute(2, 1, 0).numpy().astype(np.int32) if given is not None else None
        self.bits = 0.0

    def sub_pixel(self, params: Tensor, q: int, channel: int, pixel: Tensor) -> Tensor:
        probs = sub_pixel_probs(self.distribution, params, channel, pixel).double().cpu().numpy()
        chosen = self.coder.code(probs, self._given[q, channel] if self._given is not None else None)
        self.bits -= float(np.log2(np.maximum(probs[np.arange(len(chosen)), chosen], TINY)).sum())
        return torch.from_numpy(chosen).to(self.device, self.dtype) / (self.distribution.levels - 1)

    def pixel(self, params: Tensor, q: int, pixel: Tensor) -> Tensor:
        for channel in range(pixel.shape[1]):
            pixel[:, channel] = self.sub_pixel(params, q, channel, pixel)
        return pixel

    def given(self, params: Tensor, q: int) -> None:
        raise AssertionError("compression codes every sub-pixel: none is given")


def _run_coder(net: nn.Module, coder, num: int, *, images: Tensor | None, labels: Tensor | None, method: str,
               batch_size: int, device: torch.device, progress: bool) -> tuple[Tensor, Tensor | None, float]:
    """The loop encoding and decoding share: per batch, the labels (conditional models), then the
    decode engine over every sub-pixel with the coding policy. Returns (images as levels
    (N, C, H, W) uint8, labels, bits)."""
    c, h, w = net.image_shape
    distribution = net.distribution
    classes = net.num_classes or 0
    dtype = next(net.parameters()).dtype
    out = torch.empty(num, c, h, w, dtype=torch.uint8)
    out_labels = torch.empty(num, dtype=torch.uint8) if classes else None
    bits = 0.0
    was_training = net.training
    net.eval()
    starts = range(0, num, batch_size)
    bar = tqdm(total=len(starts) * h, unit="row", desc="decoding" if images is None else "encoding", disable=not progress)
    try:
        with torch.inference_mode(), torch.autocast(device.type, enabled=False):
            for start in starts:
                part = slice(start, min(start + batch_size, num))
                b = part.stop - start
                y = None
                if classes:
                    uniform = np.full((b, classes), 1.0 / classes)
                    given = labels[part].numpy().astype(np.int32) if labels is not None else None
                    out_labels[part] = torch.from_numpy(coder.code(uniform, given).astype(np.uint8))
                    bits += b * math.log2(classes)
                    y = out_labels[part].long().to(device)
                policy = _Code(coder, distribution, images[part] if images is not None else None, device, dtype)
                canvas = decode(stepper(net, method, b, device, dtype, y), distribution, policy, bar=bar)
                bits += policy.bits
                out[part] = (canvas * (distribution.levels - 1)).round().to(torch.uint8).cpu()
    finally:
        bar.close()
        net.train(was_training)
    return out, out_labels, bits


def compress(module: AutoregressiveModule, images: Tensor, labels: Tensor | None = None, *, method: str = "auto",
             batch_size: int = 100, device: str = "cpu", progress: bool = False) -> tuple[bytes, CodingStats]:
    """The compressed file of `images` (N, C, H, W) uint8 levels (0/1 for binary models, 0..255
    for 8-bit ones), with `labels` (N,) for a conditional model; and what it took."""
    net = module.net
    check_images(images, labels, net)
    method = resolve_method(net, method)
    net.to(device)
    start = time.perf_counter()
    encoder = _Encoder()
    _, _, bits = _run_coder(net, encoder, len(images), images=images, labels=labels, method=method,
                            batch_size=batch_size, device=torch.device(device), progress=progress)
    seconds = time.perf_counter() - start
    header = Header(model_hash(module), tuple(net.image_shape), net.distribution.levels, method, torch.device(device).type,
                    batch_size, len(images), net.num_classes or 0, images_crc(images, labels if net.num_classes else None))
    fields = header.pack()
    payload = encoder.words().astype("<u4").tobytes()
    return fields + CRC.pack(zlib.crc32(payload, zlib.crc32(fields))) + payload, CodingStats(seconds, bits)


def decompress(module: AutoregressiveModule, data: bytes, *, source: str = "the file", model_name: str = "this model",
               progress: bool = False) -> tuple[Tensor, Tensor | None, CodingStats]:
    """(images (N, C, H, W) uint8 levels, labels or None, stats) of a file `compress` wrote with
    this model; refused with one line for another model, a corrupt file, or images that decode
    other than they were encoded."""
    header, words = read_header(data, source)
    net = module.net
    digest = model_hash(module)
    if header.model_hash != digest or header.image_shape != tuple(net.image_shape) or header.levels != net.distribution.levels:
        raise CheckpointError(f"{source} was encoded with another model (hash {header.model_hash.hex()[:12]}) than {model_name} "
                              f"(hash {digest.hex()[:12]}); decode it with the checkpoint it was compressed with")
    if header.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{source} was encoded on a CUDA GPU and decodes only there (the probabilities must be the "
                          "encoder's, bit for bit); decode it on a machine with a GPU")
    net.to(header.device)
    start = time.perf_counter()
    images, labels, bits = _run_coder(net, _Decoder(words), header.num_images, images=None, labels=None,
                                      method=header.method, batch_size=header.batch_size,
                                      device=torch.device(header.device), progress=progress)
    if images_crc(images, labels) != header.images_crc:
        raise CompressedFileError(
            f"{source} decodes to other images than were encoded (image checksum differs): this machine computes the "
            f"model's probabilities differently ({header.method} path on {header.device}; another CPU, GPU or torch "
            "version?); nothing was written. Decode where it was encoded")
    return images, labels, CodingStats(time.perf_counter() - start, bits)


def check_images(images: Tensor, labels: Tensor | None, net: nn.Module) -> None:
    """Images of the model's shape and levels, and labels exactly when the model takes them."""
    shape, levels, classes = tuple(net.image_shape), net.distribution.levels, net.num_classes
    if images.dim() != 4 or tuple(images.shape[1:]) != shape or len(images) < 1:
        raise DataError(f"images of shape {tuple(images.shape[1:])} cannot be coded by this model: it models {shape}")
    if int(images.max()) >= levels:
        raise DataError(f"images have values up to {int(images.max())}, but the model codes {levels} levels "
                        f"(0..{levels - 1}){': binarize them first' if levels == 2 else ''}")
    if classes and labels is None:
        raise ConfigError(f"the model is class-conditional: give the images' class with label=<0..{classes - 1}>")
    if classes and not (0 <= int(labels.min()) and int(labels.max()) < classes):
        raise ConfigError(f"labels must be classes in 0..{classes - 1}; got {int(labels.min())}..{int(labels.max())}")
