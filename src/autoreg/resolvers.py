"""The OmegaConf resolvers conf/train.yaml uses, registered by the entry points (and the tests)
before Hydra composes a config: `job_dirname` (sweep job dirs, autoreg.config),
`autoreg_run_name` (a run's dir name), `autoreg_run_dir` and `autoreg_config_subdir` (resuming in a run's own dir, autoreg.run_dirs)."""
from __future__ import annotations

from omegaconf import OmegaConf


def register_resolvers() -> None:
    from autoreg.run_dirs import job_dirname
    from autoreg.run_dirs import config_subdir, run_dir, run_name

    resolvers = (("job_dirname", job_dirname), ("autoreg_run_dir", run_dir), ("autoreg_config_subdir", config_subdir),
                 ("autoreg_run_name", run_name))
    for name, resolver in resolvers:
        OmegaConf.register_new_resolver(name, resolver, replace=True)
