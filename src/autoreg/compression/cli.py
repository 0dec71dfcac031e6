"""compress.py's task (conf/compress.yaml): `input=`/`split=` -> a file, `decompress=` -> PNGs."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from omegaconf import DictConfig

from autoreg.checks import check_choice, check_int
from autoreg.config import SPLITS
from autoreg.compression.coder import compress, decompress
from autoreg.compression.format import DEVICES, HEADER_BYTES, CompressedFileError
from autoreg.compression.images import input_paths, png_bytes, read_pngs, split_images
from autoreg.errors import ConfigError, OutputError
from autoreg.module import AutoregressiveModule
from autoreg.sampling import METHODS, resolve_method

log = logging.getLogger("autoreg")


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

    run(compress_task, cfg)


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as err:
        raise OutputError(f"out={path} cannot be written ({err.strerror or err}); pick another path") from None
