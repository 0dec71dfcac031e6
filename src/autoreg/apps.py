"""The commands: each a Hydra app over the config tree, which ships inside the package as
`autoreg.conf` (conf/ at the project root; pyproject's package-dir), so the same apps run from a
checkout (`python train.py ...`) and from an installed package (`autoreg-train ...`, pyproject's
[project.scripts]).

Every app checks the `group=option` arguments before Hydra composes (autoreg.preflight), and
imports torch and Lightning only inside its task, after the config checks: a bad value is one
line in under a second.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from autoreg.preflight import check_group_options
from autoreg.resolvers import register_resolvers

CONF = "pkg://autoreg.conf"

register_resolvers()


def _app(config_name: str, task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
    """The command that composes conf/<config_name>.yaml with the command line and runs `task`."""
    def checked(cfg: DictConfig) -> Any:
        missing = [key for key in OmegaConf.missing_keys(cfg) if not key.startswith("hydra")]
        if missing:  # Hydra would answer with a traceback when the task reads the key
            from autoreg.errors import ConfigError, exit_with_one_line

            exit_with_one_line(ConfigError(f"{missing[0]}= is missing: it has no default (conf/{config_name}.yaml); give it on the command line"))
        return task(cfg)

    app = hydra.main(version_base="1.3", config_path=CONF, config_name=config_name)(checked)

    def main() -> Any:
        check_group_options(sys.argv[1:])
        return app()

    main.__doc__ = f"The `{config_name}` command (conf/{config_name}.yaml)."
    return main


def _train(cfg: DictConfig) -> float:
    from autoreg.cli import train_main

    return train_main(cfg)


def _sample(cfg: DictConfig) -> None:
    from autoreg.cli import sample_main

    sample_main(cfg)


def _compress(cfg: DictConfig) -> None:
    from autoreg.compression.cli import compress_main

    compress_main(cfg)


def _tool(name: str) -> Callable[[DictConfig], Any]:
    """An analysis tool's task (autoreg.analysis.<module>:<function>): INFO to the console without
    Lightning's noise, a UserError as one line (autoreg.cli.run)."""
    module, function = name.split(":")

    def task(cfg: DictConfig) -> Any:
        import importlib

        from autoreg.cli import run
        from autoreg.log_filters import install_log_filters

        install_log_filters()
        logging.getLogger("autoreg").setLevel(logging.INFO)
        return run(getattr(importlib.import_module(f"autoreg.analysis.{module}"), function), cfg)

    return task


train = _app("train", _train)
sample = _app("sample", _sample)
compress = _app("compress", _compress)
quality = _app("quality", _tool("quality:score_checkpoint"))
classifier = _app("classifier", _tool("classifier:train_cli"))
receptive_field = _app("receptive_field", _tool("receptive_field:receptive_field_figure"))


def report() -> None:
    """`autoreg-report <sweep dir> [--out DIR]`: a sweep's report (autoreg.analysis.report)."""
    from autoreg.analysis.report import main

    main()
