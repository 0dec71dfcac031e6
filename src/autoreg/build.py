"""The one factory: a config -> the LightningModule and the LightningDataModule it trains on.

Everything that builds them (train.py, sample.py's completions, the analysis tools, the
benchmarks and the tests) goes through here, so a config means the same network everywhere.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from autoreg.data import IMAGE_SHAPES, ImageDataModule
from autoreg.module import AutoregressiveModule


def _plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def build_module(cfg: DictConfig) -> AutoregressiveModule:
    """The LightningModule of a train config (its `model`, `data` and `optim` groups)."""
    return AutoregressiveModule(
        model=_plain(cfg.model),
        image_shape=IMAGE_SHAPES[cfg.data.dataset],
        bits=cfg.data.bits,
        optim=_plain(cfg.optim),
        data=_plain(cfg.data),
    )


def build_datamodule(data_cfg: DictConfig | Mapping[str, Any], seed: int = 0) -> ImageDataModule:
    """The datamodule of a `data` config (a DictConfig, or the plain dict a checkpoint keeps)."""
    kwargs = _plain(data_cfg)
    kwargs.pop("name", None)
    return ImageDataModule(**kwargs, seed=seed)


def build(cfg: DictConfig) -> tuple[AutoregressiveModule, ImageDataModule]:
    """(module, datamodule) of a train config."""
    return build_module(cfg), build_datamodule(cfg.data, seed=cfg.seed)
