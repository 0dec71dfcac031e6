"""What the entry points run: `train(cfg)` (train.py) with its config validation and error
handling, resuming (autoreg.checkpoint) and stopping on signals. The root scripts only hand their
Hydra config to these functions."""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback as HydraCallback
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch.utils.tensorboard.summary import hparams as hparams_summary

from autoreg.checkpoint import RunCheckpoint, prepare_resume, run_dir_checkpoint
from autoreg.config import ConfigError, check_choice, check_int, check_positive, resolve_precision, validate
from autoreg.data import IMAGE_SHAPES, ImageDataModule
from autoreg.errors import OutputError, UserError
from autoreg.module import AutoregressiveModule
from autoreg.sampling import METHODS

log = logging.getLogger("autoreg")


class _DropAdverts(logging.Filter):
    """Lightning logs a "Tip: try litlogger" advert on every run: nothing about the run itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropAdverts())
# Lightning's own use of a deprecated torch API, nothing a user can act on
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")

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


def build_datamodule(data_cfg, seed: int = 0) -> ImageDataModule:
    """The datamodule of a `data` config (DictConfig or the plain dict a checkpoint keeps)."""
    kwargs = OmegaConf.to_container(data_cfg, resolve=True) if isinstance(data_cfg, DictConfig) else dict(data_cfg)
    kwargs.pop("name")
    return ImageDataModule(**kwargs, seed=seed)


def ensure_writable(directory: Path, key: str = "paths.output_dir") -> None:
    """Create `directory` and write a probe file in it, or fail with one line."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write_test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OutputError(f"{key}={directory} cannot be written ({err.strerror or err}); pick another dir or fix its permissions") from None


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Validate the config, train (or resume), optionally test; return (metrics, objects)."""
    validate(cfg)
    check_int(cfg, "checkpoint.every_n_train_steps", minimum=0)
    output_dir = Path(cfg.paths.output_dir)
    ensure_writable(output_dir)
    ckpt_path, in_place, resumed_at = prepare_resume(cfg, output_dir)
    precision_note = resolve_precision(cfg)
    if precision_note:
        log.info(precision_note)
    pl.seed_everything(cfg.seed, workers=True)
    module = AutoregressiveModule(
        model=OmegaConf.to_container(cfg.model, resolve=True),
        image_shape=IMAGE_SHAPES[cfg.data.dataset],
        bits=cfg.data.bits,
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        data=OmegaConf.to_container(cfg.data, resolve=True),
    )
    datamodule = build_datamodule(cfg.data, seed=cfg.seed)
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    check_launch(cfg, trainer)
    for callback in callbacks:
        if isinstance(callback, RunCheckpoint):
            callback.resuming = in_place

    datamodule.setup("fit")
    log.info("data: %s from %s", cfg.data.name, datamodule.source_used)
    if rank_zero_only.rank == 0 and logger and not in_place:  # a resumed run keeps its hparams
        params = flat_hparams(cfg, **{"data.source_used": datamodule.source_used, "params": count_parameters(module)})
        log_hparams(logger, params)

    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)
    except SIGTERMException:
        stop_after_signal(trainer, output_dir)
        raise
    written = output_dir / "metrics.json"
    if in_place and trainer.global_step == resumed_at and written.is_file():  # it had already finished
        log.info("the run in %s had already finished; its metrics.json stays as it was", output_dir)
        return json.loads(written.read_text()), {"cfg": cfg, "module": module, "datamodule": datamodule, "trainer": trainer}
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics["train_seconds"] = time.perf_counter() - start
    checkpoint = best_checkpoint_callback(trainer)
    if checkpoint is not None and checkpoint.best_model_score is not None:
        metrics["best/val/nll"] = float(checkpoint.best_model_score)
    if cfg.get("test"):
        best = (checkpoint.best_model_path if checkpoint else "") or None
        trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=True)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    metrics.update(params=count_parameters(module), global_step=trainer.global_step, epochs=trainer.current_epoch)
    if trainer.is_global_zero:
        write_metrics(written, metrics)
    return metrics, {"cfg": cfg, "module": module, "datamodule": datamodule, "trainer": trainer}


def best_checkpoint_callback(trainer: pl.Trainer):
    """The callback that keeps best.ckpt (the first one that monitors a metric)."""
    return next((cb for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None)), trainer.checkpoint_callback)


def check_launch(cfg: DictConfig, trainer: pl.Trainer) -> None:
    """Lightning's DDP launcher re-runs this command once per extra process; inside a Hydra
    multirun each would start the whole sweep again."""
    from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    if (
        HydraConfig.initialized()
        and HydraConfig.get().mode == RunMode.MULTIRUN
        and isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher)
        and not trainer.strategy.cluster_environment.creates_processes_externally
    ):
        raise ConfigError(
            f"trainer.strategy={cfg.trainer.strategy} starts its processes by re-running the command, which a local sweep (-m) "
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
    module = AutoregressiveModule.from_checkpoint(cfg.ckpt, map_location=device, key="ckpt")
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
        if os.environ.get("HYDRA_FULL_ERROR") != "1" and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            log.error("job failed: %s", err)
            raise
        exit_with_one_line(err)


def exit_with_one_line(err: UserError) -> None:
    """`error: <message>` on stderr and exit status 1; with HYDRA_FULL_ERROR=1 the error goes on
    up instead, for its traceback."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    print(f"error: {err}", file=sys.stderr)
    sys.exit(1)


class Preflight(HydraCallback):
    """Checks that need no data and must happen before Hydra makes the run dir: a run dir that
    cannot be written and a `resume=` dir that is not a run are one line and exit status 1
    (the full traceback with HYDRA_FULL_ERROR=1)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        resume = OmegaConf.select(config, "resume", default=None)
        _preflight(lambda: run_dir_checkpoint(resume) if resume not in (None, "") else None)
        _preflight(lambda: ensure_writable(Path(str(config.hydra.run.dir)), key="hydra.run.dir"))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _preflight(lambda: _no_resume_in_sweep(OmegaConf.select(config, "resume", default=None)))
        _preflight(lambda: ensure_writable(Path(str(config.hydra.sweep.dir)), key="hydra.sweep.dir"))


def _no_resume_in_sweep(resume: str | None) -> None:
    if resume not in (None, ""):
        raise ConfigError(f"resume={resume} continues one run; a sweep resumes with ckpt_path=last and its hydra.sweep.dir")


def _preflight(check: Callable[[], None]) -> None:
    try:
        check()
    except UserError as err:
        exit_with_one_line(err)


def sample_main(cfg: DictConfig) -> None:
    """sample.py's task."""
    run(sample, cfg)


def train_main(cfg: DictConfig) -> float:
    """train.py's task: returns the final val/nll, the metric sweepers minimise."""
    metrics, _ = run(train, cfg)
    return metrics.get("val/nll", math.nan)
