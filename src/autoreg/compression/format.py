"""The .arz file format: a header naming the model (a hash of its config and weights), the image
shape, levels, decoding path, device, batch size, count, classes and a CRC of the images; a CRC32
of the rest; then the range coder's 32-bit words (all little-endian)."""
from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from autoreg.checkpoint import RUN_IDENTITY_EXEMPT
from autoreg.errors import UserError
from autoreg.sampling.engine import METHODS

if TYPE_CHECKING:
    from autoreg.module import AutoregressiveModule

MAGIC = b"ARZ\x01"  # the format's name and version
HEADER = struct.Struct("<4s16sBHHHBBIIBI")
CRC = struct.Struct("<I")
HEADER_BYTES = HEADER.size + CRC.size  # what a file holds besides the coder's words
DEVICES = ("cpu", "cuda")


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
