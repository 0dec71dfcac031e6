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
import re
import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from autoreg.likelihoods import HEADS
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
        check_overrides(config_name, sys.argv[1:])
        return app()

    main.__doc__ = f"The `{config_name}` command (conf/{config_name}.yaml)."
    return main


def check_overrides(config_name: str, argv: list[str]) -> None:
    """A key the config does not have (`foo=1`, `model.foo=1`) or a value Hydra cannot parse is one
    line naming it, instead of Hydra's report; a sweep (-m) and Hydra's own flags are left to Hydra."""
    if any(arg.startswith("-") for arg in argv):
        return
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException

    from autoreg.errors import ConfigError, exit_with_one_line

    try:
        with initialize_config_module(version_base="1.3", config_module=CONF.removeprefix("pkg://")):
            compose(config_name, overrides=argv)
    except HydraException as err:
        text = f"{err} {err.__cause__ or ''}"
        unknown = re.search(r"Could not override '([^']+)'", text)
        if unknown and "not in struct" in text:
            key = unknown.group(1)
            message = f"{key} is not a key of conf/{config_name}.yaml (or its groups): check the spelling (+{key}=... adds a new key)"
            option = key.removeprefix("model.")
            heads = [name for name, head in HEADS.items() if option in head.options]
            if key.startswith("model.") and heads:  # a head's option given as a model key
                value = next(arg.partition("=")[2] for arg in argv if arg.lstrip("+").startswith(f"{key}="))
                message = (f"{key} is an option of the {heads[0]} likelihood: write "
                           f"model/likelihood={heads[0]} model.likelihood.{option}={value}")
        else:
            message = " ".join(line.strip().rstrip(".") + "." for line in text.splitlines()[:2] if line.strip())
        exit_with_one_line(ConfigError(message))


def _train(cfg: DictConfig) -> float:
    from autoreg.cli import train_main

    return train_main(cfg)


def _sample(cfg: DictConfig) -> None:
    from autoreg.sample_cli import sample_main

    sample_main(cfg)


def _compress(cfg: DictConfig) -> None:
    from autoreg.compression.cli import compress_main

    compress_main(cfg)


def _score(cfg: DictConfig) -> None:
    from autoreg.score_cli import score_main

    score_main(cfg)


def _tool(name: str) -> Callable[[DictConfig], Any]:
    """An analysis tool's task (autoreg.analysis.<module>:<function>): INFO to the console without
    Lightning's noise, a UserError as one line (autoreg.cli.run)."""
    module, function = name.split(":")

    def task(cfg: DictConfig) -> Any:
        import importlib

        from autoreg.cli import run

        logging.getLogger("autoreg").setLevel(logging.INFO)
        return run(getattr(importlib.import_module(f"autoreg.analysis.{module}"), function), cfg)

    return task


train = _app("train", _train)
sample = _app("sample", _sample)
compress = _app("compress", _compress)
score = _app("score", _score)
quality = _app("quality", _tool("quality:score_checkpoint"))
classifier = _app("classifier", _tool("classifier:train_cli"))
receptive_field = _app("receptive_field", _tool("receptive_field:receptive_field_figure"))


def report() -> None:
    """`autoreg-report <sweep dir> [--out DIR]`: a sweep's report (autoreg.analysis.report)."""
    from autoreg.analysis.report import main

    main()
