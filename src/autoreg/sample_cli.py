"""sample.py's task: a PNG grid of samples, or of completions of test images, from a checkpoint.

    python sample.py ckpt=<.ckpt> num=64                 # samples
    python sample.py ckpt=<.ckpt> label=3                # a class-conditional model: class 3
    python sample.py ckpt=<.ckpt> label=all num=20       # one row per class
    python sample.py ckpt=<.ckpt> complete=true num=8    # bottom halves of test images redrawn
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from omegaconf import DictConfig

from autoreg.build import build_datamodule
from autoreg.checks import check_choice, check_int, check_positive
from autoreg.errors import ConfigError
from autoreg.module import AutoregressiveModule
from autoreg.sampling import METHODS, class_rows, resolve_method, sample as draw
from autoreg.sampling.grids import completion_rows, grid_image

log = logging.getLogger("autoreg")


def sample(cfg: DictConfig) -> Path:
    """Draw `cfg.num` samples (or complete `cfg.num` test images) from `cfg.ckpt`; write a PNG grid."""
    from torchvision.utils import save_image

    check_int(cfg, "num")
    check_int(cfg, "completions")
    check_int(cfg, "scale")
    check_positive(cfg, "temperature")
    check_choice(cfg, "sampling.method", ("auto", *METHODS))
    device = resolve_device(cfg)
    module = AutoregressiveModule.from_checkpoint(cfg.ckpt, map_location=device, key="ckpt")
    net = module.net.to(device)
    label = check_label(cfg.label, net.num_classes, cfg.complete)
    kwargs = dict(method=resolve_method(net, cfg.sampling.method), temperature=cfg.temperature, seed=cfg.seed,
                  batch_size=cfg.batch_size, progress=cfg.progress)
    ckpt = Path(cfg.ckpt)
    if cfg.complete:
        images = completion_grid(module, cfg.num, cfg.completions, {**kwargs, "y": label})
        nrow, kind = 2 + cfg.completions, "completions"
    elif label == "all":
        y = class_rows(net.num_classes, cfg.num)
        images = draw(net, len(y), y=y, **kwargs).cpu()
        nrow, kind = len(y) // net.num_classes, "samples"
    else:
        images = draw(net, cfg.num, y=label, **kwargs).cpu()
        nrow, kind = int(math.ceil(math.sqrt(cfg.num))), "samples"
    out = Path(cfg.out) if cfg.out else ckpt.with_name(f"{ckpt.stem}_{kind}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid_image(images, nrow, cfg.scale), out)
    log.info("wrote %d %s to %s", len(images) if kind == "samples" else cfg.num, kind, out)
    return out


def resolve_device(cfg: DictConfig) -> str:
    """`device=`: auto (cuda where there is a GPU, else cpu), cpu, or cuda (one line without a GPU)."""
    check_choice(cfg, "device", ("auto", "cpu", "cuda"))
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is available; use device=auto or device=cpu")
    return "cuda" if cfg.device == "auto" and torch.cuda.is_available() else ("cpu" if cfg.device == "auto" else cfg.device)


def check_label(label, num_classes: int | None, complete: bool) -> int | str | None:
    """`label=` against the model: an int class, `all`, or None (a conditional model then draws
    one row per class; completions keep each test image's own label)."""
    if label is None:
        if num_classes and not complete:
            log.info("a class-conditional model and no label=: drawing one row per class (label=all)")
            return "all"
        return None
    if not num_classes:
        raise ConfigError(f"label={label} needs a class-conditional model; this checkpoint's model is unconditional "
                          "(train one with model.conditional=true)")
    if label == "all":
        if complete:
            raise ConfigError("label=all draws one row per class; completions take label=<class> or keep each image's own label (no label=)")
        return "all"
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_classes:
        raise ConfigError(f"label={label} is invalid: it must be a class in 0..{num_classes - 1} or all")
    return label


def completion_grid(module: AutoregressiveModule, num: int, completions: int, kwargs) -> torch.Tensor:
    """`completion_rows` for the first `num` test images of the checkpoint's own data config."""
    datamodule = build_datamodule(module.hparams.data)
    datamodule.setup("test")
    test = datamodule.splits["test"]
    x, labels = datamodule.on_after_batch_transfer(test[torch.arange(min(num, len(test)))], 0)
    return completion_rows(module.net, x, labels, completions, **kwargs)


def sample_main(cfg: DictConfig) -> None:
    """sample.py's task, with one-line errors."""
    from autoreg.cli import run

    run(sample, cfg)
