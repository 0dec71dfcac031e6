"""The OmegaConf resolvers conf/train.yaml uses, registered by the entry points (and the tests)
before Hydra composes a config: `job_dirname` (sweep job dirs, autoreg.config),
`autoreg_run_dir` and `autoreg_config_subdir` (resuming in a run's own dir, autoreg.checkpoint)."""
from __future__ import annotations

from omegaconf import OmegaConf


def register_resolvers() -> None:
    from autoreg.checkpoint import config_subdir, run_dir
    from autoreg.config import job_dirname

    for name, resolver in (("job_dirname", job_dirname), ("autoreg_run_dir", run_dir), ("autoreg_config_subdir", config_subdir)):
        OmegaConf.register_new_resolver(name, resolver, replace=True)
