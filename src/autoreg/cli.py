"""What the entry points run: `train(cfg)` (train.py) with its config validation and error
handling. The root scripts only hand their Hydra config to these functions."""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams as hparams_summary

from autoreg.config import ConfigError, check_choice, check_int, check_positive, validate
from autoreg.data import IMAGE_SHAPES, ImageDataModule
from autoreg.errors import UserError
from autoreg.module import AutoregressiveModule
from autoreg.sampling import METHODS

log = logging.getLogger("autoreg")

HPARAM_METRICS = ("val/nll", "val/bpd")


def flat_hparams(cfg: DictConfig, **extra: Any) -> dict[str, Any]:
    """The run's config as flat scalar hparams for TensorBoard's HParams tab."""
    out: dict[str, Any] = {}
    for group in ("model", "data", "optim"):
        for key, value in OmegaConf.to_container(cfg[group], resolve=True).items():
            out[f"{group}.{key}"] = value
    out["seed"] = cfg.seed
    for key in ("max_epochs", "max_steps", "max_time", "precision"):
        out[f"trainer.{key}"] = cfg.trainer.get(key)
    out.update(extra)
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in out.items()}


def log_hparams(logger, params: dict[str, Any]) -> None:
    """Write the HParams-plugin summary with `val/nll` and `val/bpd` as its metrics (their values
    are the logged scalars of the same names)."""
    if not isinstance(logger, pl.loggers.TensorBoardLogger):
        return
    writer = logger.experiment._get_file_writer()
    for summary in hparams_summary(params, dict.fromkeys(HPARAM_METRICS, 0.0)):
        writer.add_summary(summary)


def build_datamodule(data_cfg) -> ImageDataModule:
    """The datamodule of a `data` config (DictConfig or the plain dict a checkpoint keeps)."""
    kwargs = OmegaConf.to_container(data_cfg, resolve=True) if isinstance(data_cfg, DictConfig) else dict(data_cfg)
    kwargs.pop("name")
    return ImageDataModule(**kwargs)


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Validate the config, train, optionally test; return (metrics, objects)."""
    validate(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    module = AutoregressiveModule(
        model=OmegaConf.to_container(cfg.model, resolve=True),
        image_shape=IMAGE_SHAPES[cfg.data.dataset],
        bits=cfg.data.bits,
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        data=OmegaConf.to_container(cfg.data, resolve=True),
    )
    datamodule = build_datamodule(cfg.data)
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)

    datamodule.setup("fit")
    log.info("data: %s from %s", cfg.data.name, datamodule.source_used)
    if trainer.is_global_zero and logger:
        params = flat_hparams(cfg, **{"data.source_used": datamodule.source_used, "params": count_parameters(module)})
        log_hparams(logger, params)

    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics["train_seconds"] = time.perf_counter() - start
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_score is not None:
        metrics["best/val/nll"] = float(checkpoint.best_model_score)
    if cfg.get("test"):
        trainer.test(module, datamodule=datamodule, ckpt_path=(checkpoint.best_model_path if checkpoint else "") or None)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    metrics.update(params=count_parameters(module), global_step=trainer.global_step, epochs=trainer.current_epoch)
    if trainer.is_global_zero:
        write_metrics(Path(cfg.paths.output_dir) / "metrics.json", metrics)
    return metrics, {"cfg": cfg, "module": module, "datamodule": datamodule, "trainer": trainer}


def write_metrics(path: Path, metrics: dict[str, float]) -> None:
    """The run's final numbers, for reports (`autoreg.analysis.report`) and scripts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def sample(cfg: DictConfig) -> Path:
    """Draw `cfg.num` samples (or complete `cfg.num` test images) from `cfg.ckpt`; write a PNG grid."""
    from torchvision.utils import make_grid, save_image

    from autoreg.sampling import sample as draw

    check_int(cfg, "num")
    check_int(cfg, "completions")
    check_positive(cfg, "temperature")
    check_choice(cfg, "sampling.method", METHODS)
    check_choice(cfg, "device", ("auto", "cpu", "cuda"))
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is available; use device=auto or device=cpu")
    device = "cuda" if cfg.device == "auto" and torch.cuda.is_available() else ("cpu" if cfg.device == "auto" else cfg.device)
    module = AutoregressiveModule.from_checkpoint(cfg.ckpt, map_location=device)
    net = module.net.to(device)
    if cfg.label is not None and not getattr(net, "num_classes", None):
        raise ConfigError(f"label={cfg.label} needs a class-conditional model; this checkpoint's model is unconditional")
    kwargs = dict(method=cfg.sampling.method, temperature=cfg.temperature, seed=cfg.seed,
                  batch_size=cfg.batch_size, progress=cfg.progress, y=cfg.label)
    ckpt = Path(cfg.ckpt)
    if cfg.complete:
        images = completion_grid(module, cfg.num, cfg.completions, draw, kwargs, device)
        nrow, kind = 2 + cfg.completions, "completions"
    else:
        images = draw(net, cfg.num, **kwargs).cpu()
        nrow, kind = int(math.ceil(math.sqrt(cfg.num))), "samples"
    out = Path(cfg.out) if cfg.out else ckpt.with_name(f"{ckpt.stem}_{kind}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(images, nrow=nrow, pad_value=0.5), out)
    log.info("wrote %d %s to %s", cfg.num, kind, out)
    return out


def completion_grid(module: AutoregressiveModule, num: int, completions: int, draw, kwargs, device) -> torch.Tensor:
    """Rows of [original, bottom half hidden, completions...] for the first `num` test images
    (the PixelRNN paper's fig. 1 layout); the dataset is the checkpoint's own data config."""
    datamodule = build_datamodule(module.hparams.data)
    datamodule.setup("test")
    test = datamodule.splits["test"]
    index = torch.arange(min(num, len(test)))
    x, _ = datamodule.on_after_batch_transfer(test[index], 0)
    h = x.shape[2]
    known_mask = torch.zeros_like(x, dtype=torch.bool)
    known_mask[:, :, : h // 2] = True
    kwargs = {**kwargs, "seed": kwargs["seed"]}
    filled = draw(module.net, known=x.repeat_interleave(completions, 0).to(device),
                  known_mask=known_mask.repeat_interleave(completions, 0).to(device), **kwargs).cpu()
    hidden = torch.where(known_mask, x, torch.full_like(x, 0.5))
    rows = [torch.cat([x[i : i + 1], hidden[i : i + 1], filled[i * completions : (i + 1) * completions]]) for i in range(len(x))]
    return torch.cat(rows)


def run(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run `task`; a UserError becomes one line on stderr and exit status 1 (the full traceback
    with HYDRA_FULL_ERROR=1). In a multirun the error is logged and re-raised instead, so Hydra
    marks this job failed and goes on with the others."""
    try:
        return task(cfg)
    except UserError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            log.error("job failed: %s", err)
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


def sample_main(cfg: DictConfig) -> None:
    """sample.py's task."""
    run(sample, cfg)


def train_main(cfg: DictConfig) -> float:
    """train.py's task: returns the final val/nll, the metric sweepers minimise."""
    metrics, _ = run(train, cfg)
    return metrics.get("val/nll", math.nan)
