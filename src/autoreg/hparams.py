"""The run's hyperparameters for TensorBoard's HParams tab, and its config as text."""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.tensorboard.summary import hparams as hparams_summary

from autoreg.compat import tensorboard_file_writer

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
    writer = tensorboard_file_writer(logger)
    for summary in hparams_summary(params, dict.fromkeys(HPARAM_METRICS, 0.0)):
        writer.add_summary(summary)


def log_config_text(logger, cfg: DictConfig) -> None:
    """The run's composed config as text (TensorBoard's Text tab, `config`), as .hydra/config.yaml holds it."""
    if not isinstance(logger, pl.loggers.TensorBoardLogger):
        return
    text = OmegaConf.to_yaml(cfg, resolve=True)
    logger.experiment.add_text("config", "".join(f"    {line}\n" for line in text.splitlines()), 0)  # markdown code block


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
