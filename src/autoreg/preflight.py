"""The Hydra callback (conf/train.yaml `hydra.callbacks.preflight`) that checks what needs no data
before Hydra makes the run or sweep dir."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf

from autoreg.checkpoint import ensure_writable, run_dir_checkpoint
from autoreg.config import ConfigError
from autoreg.errors import UserError, exit_with_one_line


class Preflight(HydraCallback):
    """A run dir that cannot be written and a `resume=` dir that is not a run are one line and
    exit status 1 (the full traceback with HYDRA_FULL_ERROR=1)."""

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
