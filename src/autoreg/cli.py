"""What train.py runs: `train(cfg)` with its config validation and error handling, resuming
(autoreg.checkpoint) and stopping on signals; and `run`, the one-line error handling every entry
point's task goes through. The root scripts only hand their Hydra config to these functions."""
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
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from autoreg.build import build
from autoreg.callbacks import best_checkpoint_callback, weight_averaging
from autoreg.checkpoint import RunCheckpoint, prepare_resume
from autoreg.checks import check_int
from autoreg.compat import ResumableModelCheckpoint, relaunches_command
from autoreg.config import run_spec
from autoreg.distributed import StallGuard, run_before_launch
from autoreg.errors import ConfigError, UserError, exit_with_one_line, first_line
from autoreg.hparams import count_parameters, flat_hparams, log_config_text, log_hparams, swept_keys
from autoreg.log_filters import install_log_filters
from autoreg.run_dirs import ensure_writable, trial_name
from autoreg.summary import run_summary

log = logging.getLogger("autoreg")


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Validate the config, train (or resume), optionally test; return (metrics, objects)."""
    install_log_filters()
    cfg, notes = run_spec(cfg)
    check_int(cfg, "checkpoint.every_n_train_steps", minimum=0)
    output_dir = Path(cfg.paths.output_dir)
    ensure_writable(output_dir)
    ckpt_path, in_place, resumed_at = prepare_resume(cfg, output_dir)
    for note in notes:
        log.info(note)
    pl.seed_everything(cfg.seed, workers=True)
    module, datamodule = build(cfg)
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    guard = StallGuard()
    # the weight average first: its hooks must run before the others' (autoreg.callbacks)
    callbacks = weight_averaging(cfg.optim) + build_callbacks(cfg, resuming=in_place) + [guard]
    trainer = build_trainer(cfg, logger, callbacks)
    check_launch(cfg, trainer)

    datamodule.setup("fit")
    log.info("data: %s from %s", cfg.data.name, datamodule.source_used)
    if rank_zero_only.rank == 0 and logger and not in_place:  # a resumed run keeps its hparams
        params = flat_hparams(cfg, **{"data.source_used": datamodule.source_used, "params": count_parameters(module)})
        log_hparams(logger, params, swept=swept_keys(params), trial=trial_name(output_dir))
        log_config_text(logger, cfg)

    run_before_launch(trainer, module, datamodule)
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)
    except SIGTERMException:
        stop_after_signal(trainer, output_dir)
        raise
    except RuntimeError as err:  # a process-group timeout (torch raises RuntimeError or its DistError)
        guard.raise_one_line(trainer, err)
    written = output_dir / "metrics.json"
    if in_place and trainer.global_step == resumed_at and written.is_file():  # it had already finished
        log.info("the run in %s had already finished; its metrics.json stays as it was", output_dir)
        return json.loads(written.read_text()), {"cfg": cfg, "module": module, "datamodule": datamodule, "trainer": trainer}
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for callback in trainer.callbacks:  # a callback's own figures (sample quality) for metrics.json
        if hasattr(callback, "run_metrics"):
            metrics.update(callback.run_metrics())
    metrics["train_seconds"] = time.perf_counter() - start
    checkpoint = best_checkpoint_callback(trainer)
    if checkpoint is not None and checkpoint.best_model_score is not None:
        metrics["best/val/nll"] = float(checkpoint.best_model_score)
    if cfg.get("test"):
        best = (checkpoint.best_model_path if checkpoint else "") or None
        try:
            trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=True)
        except RuntimeError as err:
            guard.raise_one_line(trainer, err)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    metrics.update(params=count_parameters(module), global_step=trainer.global_step, epochs=trainer.current_epoch)
    if trainer.is_global_zero:
        write_metrics(written, metrics)
        best = checkpoint.best_model_path if checkpoint is not None else ""
        for line in run_summary(output_dir, metrics, best or None):
            log.info(line)
    return metrics, {"cfg": cfg, "module": module, "datamodule": datamodule, "trainer": trainer}


def build_callbacks(cfg: DictConfig, resuming: bool) -> list[pl.Callback]:
    """The `callbacks` group's callbacks; a checkpoint callback learns whether the run goes on in
    its own dir (then its checkpoint dir is not new)."""
    callbacks = []
    for node in (cfg.get("callbacks") or {}).values():
        writes_checkpoints = issubclass(get_class(node._target_), ResumableModelCheckpoint)
        callbacks.append(instantiate(node, resuming=resuming) if writes_checkpoints else instantiate(node))
    return callbacks


def build_trainer(cfg: DictConfig, logger, callbacks: list) -> pl.Trainer:
    """The Trainer of `cfg.trainer`; an argument Lightning refuses (config.check_trainer has checked
    the common ones before torch) is one line instead of Hydra's instantiation report."""
    try:
        return instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    except InstantiationException as err:
        if isinstance(err.__cause__, (ValueError, TypeError)):  # Lightning's MisconfigurationException is a ValueError
            raise ConfigError(f"a trainer.<argument> is invalid: {first_line(err.__cause__)}") from None
        raise


def check_launch(cfg: DictConfig, trainer: pl.Trainer) -> None:
    """Lightning's DDP launcher re-runs this command once per extra process; inside a Hydra
    multirun each would start the whole sweep again."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN and relaunches_command(trainer):
        raise ConfigError(
            f"trainer.strategy={type(trainer.strategy).__name__} starts its processes by re-running the command, which a local sweep (-m) "
            "cannot do: run each job on its own, or sweep through the submitit launcher with hydra.launcher.tasks_per_node "
            "set to trainer.devices (SLURM then starts the processes)"
        )


def stop_after_signal(trainer: pl.Trainer, output_dir: Path) -> None:
    """fit() stopped on SIGTERM or a preemption signal after saving last.ckpt: say how to go on,
    then let the scheduler's own handler (submitit's requeue) run if it was the one that asked."""
    run_ckpt = next((cb for cb in trainer.callbacks if isinstance(cb, RunCheckpoint)), None)
    if trainer.is_global_zero:
        saved = run_ckpt.last_path if run_ckpt and run_ckpt.stopped_by else "no new checkpoint"
        print(f"stopped by a signal at step {trainer.global_step}: saved {saved}; "
              f"continue with: python train.py resume={output_dir} [the run's overrides]", file=sys.stderr)
    if run_ckpt is not None:
        run_ckpt.hand_over_stop()


def write_metrics(path: Path, metrics: dict[str, float]) -> None:
    """The run's final numbers, for reports (`autoreg.analysis.report`) and scripts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def run(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run `task` without Lightning's console noise (autoreg.log_filters); a UserError becomes one
    line on stderr and exit status 1 (the full traceback with HYDRA_FULL_ERROR=1). In a multirun the
    error is logged and re-raised instead, so Hydra marks this job failed and goes on with the others."""
    install_log_filters()
    try:
        return task(cfg)
    except UserError as err:
        if os.environ.get("HYDRA_FULL_ERROR") != "1" and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            log.error("job failed: %s", err)
            raise
        exit_with_one_line(err)


def train_main(cfg: DictConfig) -> float:
    """train.py's task: returns the final val/nll, the metric sweepers minimise."""
    metrics, _ = run(train, cfg)
    return metrics.get("val/nll", math.nan)
