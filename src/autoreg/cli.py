"""What the entry points run: `train(cfg)` (train.py) with its config validation and error
handling. The root scripts only hand their Hydra config to these functions."""
from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams as hparams_summary

from autoreg.config import validate
from autoreg.data import IMAGE_SHAPES, ImageDataModule
from autoreg.errors import UserError
from autoreg.module import AutoregressiveModule

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


def build_datamodule(cfg: DictConfig) -> ImageDataModule:
    kwargs = OmegaConf.to_container(cfg.data, resolve=True)
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
    )
    datamodule = build_datamodule(cfg)
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)

    datamodule.setup("fit")
    log.info("data: %s from %s", cfg.data.name, datamodule.source_used)
    if trainer.is_global_zero and logger:
        params = flat_hparams(cfg, **{"data.source_used": datamodule.source_used, "params": count_parameters(module)})
        log_hparams(logger, params)

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.get("test"):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    return metrics, {"cfg": cfg, "module": module, "datamodule": datamodule, "trainer": trainer}


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def run(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run `task`; a UserError becomes one line on stderr and exit status 1 (the full traceback
    with HYDRA_FULL_ERROR=1)."""
    try:
        return task(cfg)
    except UserError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


def train_main(cfg: DictConfig) -> float:
    """train.py's task: returns the final val/nll, the metric sweepers minimise."""
    metrics, _ = run(train, cfg)
    return metrics.get("val/nll", math.nan)
