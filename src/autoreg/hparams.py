"""The run's hyperparameters for TensorBoard's HParams tab, and its config as text.

Every run writes the same kind of HParams *experiment* (the plugin's column list, which the
dashboard takes from the first run that has one), so that runs of different families share one
table and each keeps its own keys:

- the columns are the union of every family's model keys (autoreg.families, torch-free) and
  the run's own keys, each with its type: ints are shown as strings ("3", not "3.0000": TensorBoard
  has no integer type), bools and `model.name` as discrete choices, floats as numbers;
- the keys a sweep varies are marked `differs` and come first, then the model, optim, data and
  trainer keys. NOTE: the dashboard shows the first five
  columns and sorts the rest by name, so a column's name is its display name behind a rank
  (`"11 model.kernel"`), fixed per key so that every run names a key alike.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams.summary_v2 import hparams_pb
from torch import nn

from autoreg.compat import tensorboard_file_writer

HPARAM_METRICS = ("val/nll", "best/val/nll", "test/nll", "val/bpd", "val/fid", "val/classifier_score", "val/label_accuracy", "val/memorisation")
# The keys the lab's questions vary, shown first after the command line's own.
HEADLINE = ("model.name", "model.depth", "model.kernel", "model.channels", "model.cell", "model.arch")
GROUPS = ("model", "optim", "data")
TRAINER_KEYS = ("max_epochs", "max_steps", "max_time", "precision", "accelerator", "devices")


def flat_hparams(cfg: DictConfig, **extra: Any) -> dict[str, Any]:
    """The run's config as flat scalar hparams (non-scalars as strings)."""
    out: dict[str, Any] = {}
    for group in GROUPS:
        for key, value in OmegaConf.to_container(cfg[group], resolve=True).items():
            out[f"{group}.{key}"] = value
    out["seed"] = cfg.seed
    for key in TRAINER_KEYS:
        out[f"trainer.{key}"] = cfg.trainer.get(key)
    out.update(extra)
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in out.items()}


def swept_keys(params: dict[str, Any]) -> set[str]:
    """The hparams a sweep varies, for one of its jobs: the sweep overrides of its command line
    (`model.kernel=3,5,7`, `range(...)`) and its preset's `hydra.sweeper.params`, read from the
    multirun.yaml Hydra writes in the sweep dir; `model=a,b` counts as `model.name`. Empty for a
    single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return set()
    record = Path(HydraConfig.get().sweep.dir) / "multirun.yaml"
    if not record.is_file():
        return set()
    sweep = OmegaConf.load(record).hydra
    keys = [o.key_or_group for o in OverridesParser.create().parse_overrides(list(sweep.overrides.task)) if o.is_sweep_override()]
    keys += list((OmegaConf.select(sweep, "sweeper.params") or {}).keys())
    keys = [f"{k}.name" if k in GROUPS else k for k in keys]
    return {k for k in keys if k in params}


def column_name(key: str) -> str:
    """The HParams column's name: `key` behind its rank (see the module docstring)."""
    if key in HEADLINE:
        return f"{10 + HEADLINE.index(key)} {key}"
    group = key.split(".", 1)[0]
    return f"{2 + GROUPS.index(group) if group in GROUPS else 5}0 {key}"


def _shown(value: Any) -> Any:
    """A value as the HParams table should show it: ints as strings, None as 'null'."""
    if isinstance(value, (bool, float, str)):
        return value
    return "null" if value is None else str(value)


def _column(key: str, example: Any, differs: bool) -> api_pb2.HParamInfo:
    info = api_pb2.HParamInfo(name=column_name(key), display_name=key, differs=differs)
    if isinstance(example, bool):
        info.type = api_pb2.DATA_TYPE_BOOL
        info.domain_discrete.extend([False, True])
    elif isinstance(example, float):
        info.type = api_pb2.DATA_TYPE_FLOAT64
    else:
        info.type = api_pb2.DATA_TYPE_STRING
        if key == "model.name":
            from autoreg.families import names

            info.domain_discrete.extend(names())
    return info


def experiment_columns(params: dict[str, Any], swept: set[str]) -> list[api_pb2.HParamInfo]:
    """The HParams columns: `params`' keys and every family's model keys (with their defaults'
    types), the `swept` ones marked `differs`."""
    from autoreg.families import family, model_keys, names

    examples = dict(params)
    for name in names():
        for key, default in model_keys(family(name).config()).items():
            examples.setdefault(f"model.{key}", default)
    columns = [_column(key, value, key in swept) for key, value in examples.items()]
    return sorted(columns, key=lambda c: (not c.differs, c.name))


def log_hparams(logger, params: dict[str, Any], swept: set[str], trial: str) -> None:
    """Write the HParams experiment (its columns; HPARAM_METRICS as its metrics) and this
    run's values under the trial name `trial`."""
    if not isinstance(logger, pl.loggers.TensorBoardLogger):
        return
    experiment = api_pb2.Experiment(
        hparam_infos=experiment_columns(params, swept),
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=tag) for tag in HPARAM_METRICS],
    )
    summary = summary_pb2.Summary()
    plugin_data = plugin_data_pb2.HParamsPluginData(experiment=experiment)
    summary.value.add(tag=metadata.EXPERIMENT_TAG, metadata=metadata.create_summary_metadata(plugin_data), tensor=metadata.NULL_TENSOR)
    writer = tensorboard_file_writer(logger)
    writer.add_summary(summary)
    writer.add_summary(hparams_pb({column_name(k): _shown(v) for k, v in params.items()}, trial_id=trial))


def log_config_text(logger, cfg: DictConfig) -> None:
    """The run's composed config as text (TensorBoard's Text tab, `config`), as .hydra/config.yaml holds it."""
    if not isinstance(logger, pl.loggers.TensorBoardLogger):
        return
    text = OmegaConf.to_yaml(cfg, resolve=True)
    logger.experiment.add_text("config", "".join(f"    {line}\n" for line in text.splitlines()), 0)  # markdown code block


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
