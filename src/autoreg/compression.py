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
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import constriction
import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor, nn
from tqdm.auto import tqdm

from autoreg.build import build_datamodule
from autoreg.checkpoint import RUN_IDENTITY_EXEMPT
from autoreg.checks import check_choice, check_int
from autoreg.errors import CheckpointError, ConfigError, DataError, OutputError, UserError
from autoreg.module import AutoregressiveModule
from autoreg.sampling import METHODS, decode, resolve_method, stepper

log = logging.getLogger("autoreg")

MAGIC = b"ARZ\x01"  # the format's name and version
HEADER = struct.Struct("<4s16sBHHHBBIIBI")
CRC = struct.Struct("<I")
HEADER_BYTES = HEADER.size + CRC.size  # what a file holds besides the coder's words
DEVICES = ("cpu", "cuda")
SPLITS = ("train", "val", "test")
# 24-bit fixed point, at least one unit for every value; the same quantisation on both sides.
CATEGORICAL = constriction.stream.model.Categorical(perfect=False)
TINY = np.finfo(np.float64).tiny  # a probability that underflowed to 0 still has a finite code length


class CompressedFileError(UserError):
    """A compressed file that is not one, is truncated or corrupt, or does not decode to what was encoded."""


@dataclass(frozen=True)
class Header:
    model_hash: bytes
    image_shape: tuple[int, int, int]
    levels: int
    method: str
    device: str
    batch_size: int
    num_images: int
    num_classes: int  # 0: an unconditional model, no labels in the file
    images_crc: int

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, self.model_hash, *self.image_shape, self.levels, METHODS.index(self.method),
                           DEVICES.index(self.device), self.batch_size, self.num_images, self.num_classes, self.images_crc)


def model_hash(module: AutoregressiveModule) -> bytes:
    """16 bytes of SHA-256 over what fixes the model's probabilities: its config (less keys that
    change how, not what, it computes), image shape, bit depth, and every weight. A copy or a
    re-save of the same weights (best.ckpt vs last.ckpt at the same step) has the same hash."""
    hparams = module.hparams
    model = {k: v for k, v in dict(hparams.model).items() if k not in RUN_IDENTITY_EXEMPT}
    digest = hashlib.sha256(json.dumps([model, list(hparams.image_shape), hparams.bits], sort_keys=True).encode())
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.digest()[:16]


def images_crc(images: Tensor, labels: Tensor | None) -> int:
    crc = zlib.crc32(images.to(torch.uint8).cpu().numpy().tobytes())
    return zlib.crc32(labels.to(torch.uint8).cpu().numpy().tobytes(), crc) if labels is not None else crc


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


def read_header(data: bytes, source: str) -> tuple[Header, np.ndarray]:
    """The header and the coder's words of a compressed file, or a one-line error if it is not one,
    or is truncated or altered (its CRC)."""
    if data[:3] == MAGIC[:3] and data[3:4] != MAGIC[3:]:
        raise CompressedFileError(f"{source} was written in another version of the format ({data[3]}, this one reads "
                                  f"{MAGIC[3]}); decode it with the autoreg version that wrote it")
    if len(data) < HEADER_BYTES or data[: len(MAGIC)] != MAGIC:
        raise CompressedFileError(f"{source} is not a file written by compress.py (no {MAGIC[:3].decode()} header); "
                                  "pass decompress=<a file compress.py wrote>")
    fields, (crc,), payload = data[: HEADER.size], CRC.unpack_from(data, HEADER.size), data[HEADER_BYTES:]
    if len(payload) % 4 or zlib.crc32(payload, zlib.crc32(fields)) != crc:
        raise CompressedFileError(f"{source} is truncated or corrupt (its checksum does not match); nothing was written. "
                                  "Use an intact copy of the file")
    _, digest, c, h, w, levels, method, device, batch_size, num, classes, images_crc_ = HEADER.unpack(fields)
    header = Header(digest, (c, h, w), levels, METHODS[method], DEVICES[device], batch_size, num, classes, images_crc_)
    return header, np.frombuffer(payload, dtype="<u4").astype(np.uint32)


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


# --- images in and out ----------------------------------------------------------------------------


def read_pngs(paths: Sequence[Path], image_shape: tuple[int, int, int], levels: int) -> Tensor:
    """PNG files as levels (N, C, H, W) uint8: grey (or 1-bit) for one channel, RGB for three;
    a binary model's files must be black and white (0/255)."""
    c, h, w = image_shape
    mode = "L" if c == 1 else "RGB"
    arrays = []
    for path in paths:
        try:
            with Image.open(path) as image:
                if image.mode not in (("1", "L") if c == 1 else ("RGB",)):
                    raise DataError(f"input {path} is a {image.mode} image; this model codes "
                                    f"{'greyscale' if c == 1 else 'RGB'} images ({'modes 1, L' if c == 1 else 'mode RGB'})")
                if image.size != (w, h):
                    raise DataError(f"input {path} is {image.size[0]}x{image.size[1]}; this model codes {w}x{h} images")
                array = np.asarray(image.convert(mode))
        except OSError as err:
            raise DataError(f"input {path} cannot be read as a PNG ({err})") from None
        if levels == 2:
            if not np.isin(array, (0, 255)).all():
                raise DataError(f"input {path} has grey levels; this model codes black and white (0/255) pixels: binarize it first")
            array = array // 255
        arrays.append(torch.from_numpy(array.reshape(h, w, c).copy()).permute(2, 0, 1))
    return torch.stack(arrays).to(torch.uint8)


def png_bytes(image: Tensor, levels: int) -> bytes:
    """One image (C, H, W) of levels as PNG bytes: 1-bit for binary images."""
    array = image.permute(1, 2, 0).numpy()
    if levels == 2:
        picture = Image.fromarray(array[:, :, 0].astype(bool))
    else:
        picture = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def input_paths(spec: str) -> list[Path]:
    """`input=`: one PNG file, or a directory of them (sorted by name)."""
    path = Path(spec)
    if path.is_dir():
        paths = sorted(path.glob("*.png"))
        if not paths:
            raise DataError(f"input={spec} holds no .png files; pass a PNG file or a directory of PNGs")
        return paths
    if not path.is_file():
        raise DataError(f"input={spec} does not exist; pass a PNG file or a directory of PNGs")
    return [path]


def split_images(module: AutoregressiveModule, split: str, num: int | None, root: str | None = None) -> tuple[Tensor, Tensor]:
    """The first `num` images (all: None) of a split of the checkpoint's own dataset (under `root`,
    default its own data.root), as levels."""
    datamodule = build_datamodule({**module.hparams.data, **({"root": root} if root else {})})
    datamodule.setup("test")
    data = datamodule.splits[split]
    count = len(data) if num is None else min(num, len(data))
    return data.images[:count].to(torch.uint8), data.labels[:count]


# --- compress.py ------------------------------------------------------------------------------------


def compress_task(cfg: DictConfig) -> Path:
    """compress.py: `input=`/`split=` -> `out=` (a file), or `decompress=` -> `out=` (a directory)."""
    if not cfg.ckpt:
        raise ConfigError("ckpt= is required: the checkpoint whose model codes the images (e.g. outputs/runs/<run>/checkpoints/best.ckpt)")
    if not cfg.out:
        raise ConfigError("out= is required: the file to write (compressing) or the directory for the PNGs (decompress=)")
    check_choice(cfg, "sampling.method", ("auto", *METHODS))
    check_choice(cfg, "device", DEVICES)
    check_int(cfg, "batch_size")
    out = Path(cfg.out)
    module = AutoregressiveModule.from_checkpoint(cfg.ckpt, key="ckpt")
    if cfg.decompress:
        if cfg.input is not None or cfg.split is not None:
            raise ConfigError(f"decompress={cfg.decompress} decodes a file; input=/split= say what to compress: pass one or the other")
        return _decompress_to_dir(cfg, module, out)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is available; use device=cpu")
    if (cfg.input is None) == (cfg.split is None):
        raise ConfigError("say what to compress: input=<PNG file or directory> or split=<train|val|test> [num=N]")
    net = module.net
    if cfg.split is not None:
        check_choice(cfg, "split", SPLITS)
        if cfg.num is not None:
            check_int(cfg, "num")
        if cfg.label is not None:
            raise ConfigError("label= is for input= PNGs; images of split= keep their own labels")
        images, labels = split_images(module, cfg.split, cfg.num, cfg.get("data_root"))
        what = f"{cfg.split} split"
    else:
        if cfg.label is not None and not net.num_classes:
            raise ConfigError(f"label={cfg.label} needs a class-conditional model; this checkpoint's model is unconditional")
        if cfg.label is not None and (isinstance(cfg.label, bool) or not isinstance(cfg.label, int)):
            raise ConfigError(f"label={cfg.label} is invalid: it must be a class in 0..{net.num_classes - 1}")
        images = read_pngs(input_paths(cfg.input), tuple(net.image_shape), net.distribution.levels)
        labels = torch.full((len(images),), cfg.label, dtype=torch.long) if cfg.label is not None else None
        what = str(cfg.input)
    method = resolve_method(net, cfg.sampling.method)
    if method == "naive":
        log.info("no fast path for %s: coding with a full forward pass per sub-pixel (slow)", type(net).__name__)
    data, stats = compress(module, images, labels if net.num_classes else None, method=method,
                           batch_size=cfg.batch_size, device=cfg.device, progress=cfg.progress)
    _write(out, data)
    n, dims, payload_bits = len(images), math.prod(net.image_shape), 8 * (len(data) - HEADER_BYTES)
    log.info("compressed %d images (%s) into %s: %d bytes (%d of them header), %.2f bits/image, %.4f bits/dim; "
             "the model's NLL %.2f bits/image (payload %+.3f%%); %.1f ms/image", n, what, out, len(data),
             HEADER_BYTES, 8 * len(data) / n, 8 * len(data) / (n * dims), stats.nll_bits / n,
             100 * (payload_bits / stats.nll_bits - 1), 1000 * stats.seconds / n)
    return out


def _decompress_to_dir(cfg: DictConfig, module: AutoregressiveModule, out: Path) -> Path:
    source = f"decompress={cfg.decompress}"
    try:
        data = Path(cfg.decompress).read_bytes()
    except OSError as err:
        raise CompressedFileError(f"{source} cannot be read ({err.strerror or err})") from None
    images, labels, stats = decompress(module, data, source=source, model_name=f"ckpt={cfg.ckpt}", progress=cfg.progress)
    levels = module.net.distribution.levels
    try:
        out.mkdir(parents=True, exist_ok=True)
        width = max(5, len(str(len(images) - 1)))
        for n, image in enumerate(images):
            (out / f"{n:0{width}d}.png").write_bytes(png_bytes(image, levels))
        if labels is not None:
            (out / "labels.txt").write_text("".join(f"{int(y)}\n" for y in labels))
    except OSError as err:
        raise OutputError(f"out={out} cannot be written ({err.strerror or err}); pick another directory") from None
    log.info("decompressed %d images into %s%s; %.1f ms/image", len(images), out,
             " (labels in labels.txt)" if labels is not None else "", 1000 * stats.seconds / len(images))
    return out


def compress_main(cfg: DictConfig) -> None:
    """compress.py's task, with one-line errors."""
    from autoreg.cli import run
    from autoreg.log_filters import install_log_filters

    install_log_filters()
    run(compress_task, cfg)


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as err:
        raise OutputError(f"out={path} cannot be written ({err.strerror or err}); pick another path") from None
