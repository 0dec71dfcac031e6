"""Checks before Hydra makes a run or sweep dir: `check_group_options` (the entry points, on the
command line) and the Hydra callback `Preflight` (conf/train.yaml `hydra.callbacks.preflight`)."""
from __future__ import annotations

import difflib
from importlib import resources
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf

from autoreg.errors import ConfigError, UserError, exit_with_one_line
from autoreg.gpus import require_gpu
from autoreg.run_dirs import ensure_writable, run_dir_checkpoint


class Preflight(HydraCallback):
    """A bad config value (train.py's), a run dir that cannot be written and a `resume=` dir that is
    not a run are one line and exit status 1, and leave no run dir behind (the full traceback with
    HYDRA_FULL_ERROR=1). A sweep's jobs are checked as they start (a bad one is marked failed)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if OmegaConf.select(config, "model.name", default=None) is not None:  # train.py's config
            from autoreg.config import validate

            _preflight(lambda: validate(config))
            _preflight(lambda: require_gpu(config))
        resume = OmegaConf.select(config, "resume", default=None)
        _preflight(lambda: run_dir_checkpoint(resume) if resume not in (None, "") else None)
        _preflight(lambda: ensure_writable(Path(str(config.hydra.run.dir)), key="hydra.run.dir"))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _preflight(lambda: _no_resume_in_sweep(OmegaConf.select(config, "resume", default=None)))
        _preflight(lambda: require_gpu(config))
        _preflight(lambda: ensure_writable(Path(str(config.hydra.sweep.dir)), key="hydra.sweep.dir"))


def _no_resume_in_sweep(resume: str | None) -> None:
    if resume not in (None, ""):
        raise ConfigError(f"resume={resume} continues one run; a sweep resumes with ckpt_path=last and its hydra.sweep.dir")


def _preflight(check: Callable[[], None]) -> None:
    try:
        check()
    except UserError as err:
        exit_with_one_line(err)


CONF_DIR = Path(str(resources.files("autoreg.conf")))  # the config tree the apps compose (autoreg.apps)


def check_group_options(argv: Sequence[str], conf_dir: Path = CONF_DIR) -> None:
    """`group=option` on the command line must name a file conf/<group>/<option>.yaml or a config
    in Hydra's store (the model families): one line with the group's options and the closest match
    instead of Hydra's search-path listing. Groups of Hydra's own (`hydra/...`) and values Hydra
    resolves itself (`null`) are left to Hydra."""
    _preflight(lambda: _check_group_options(argv, conf_dir))


def _check_group_options(argv: Sequence[str], conf_dir: Path) -> None:
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or key.startswith("hydra/") or "." in key:
            continue
        options = sorted({p.stem for p in (conf_dir / key).glob("*.yaml")} | set(_stored_options(key)))
        if not options:
            continue
        for option in value.split(","):  # a sweep lists several
            if option in options or option == "null":
                continue
            close = difflib.get_close_matches(option, options, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{key}={option} is not an option of the config group '{key}'{hint}; choose one of: {', '.join(options)}")


def _stored_options(group: str) -> list[str]:
    """The configs of `group` in Hydra's store (autoreg.families registers `model`)."""
    from hydra.core.config_store import ConfigStore

    try:
        return [name.removesuffix(".yaml") for name in ConfigStore.instance().list(group) if name.endswith(".yaml")]
    except OSError:  # no such group in the store
        return []
