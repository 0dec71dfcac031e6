"""`hydra/launcher=parallel` (conf/hydra/launcher/parallel.yaml): Hydra's joblib launcher whose
jobs lease GPUs (autoreg.gpus). It lives in the `hydra_plugins` namespace because Hydra
instantiates launchers only from there; Hydra imports it at every start, so it imports nothing
heavy until a sweep launches. (No `from __future__ import annotations`: Hydra's plugin scan runs
this module before it is in sys.modules, where dataclasses cannot resolve string annotations.)"""
import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

log = logging.getLogger(__name__)


@dataclass
class ParallelLauncherConf(JobLibLauncherConf):
    _target_: str = "hydra_plugins.autoreg_launcher.parallel_launcher.ParallelLauncher"
    n_jobs: Optional[int] = None  # null: GPUs x jobs_per_gpu with GPUs, else autoreg.gpus.CPU_SWEEP_JOBS
    jobs_per_gpu: int = 1
    gpus: Optional[List[int]] = None  # null: every GPU torch sees
    lease_dir: Optional[str] = None  # null: <sweep dir>/.gpu_leases


ConfigStore.instance().store(group="hydra/launcher", name="autoreg_parallel", node=ParallelLauncherConf, provider="autoreg")


class ParallelLauncher(JoblibLauncher):
    """Runs a sweep's jobs in joblib's worker processes, each job that trains on one GPU on a
    leased GPU slot; `n_jobs` defaults to the number of slots."""

    def __init__(self, jobs_per_gpu: int = 1, gpus: Optional[List[int]] = None, lease_dir: Optional[str] = None,
                 **joblib) -> None:
        super().__init__(**joblib)
        self.jobs_per_gpu, self.gpus, self.lease_dir = jobs_per_gpu, None if gpus is None else list(gpus), lease_dir
        self.n_jobs = joblib.get("n_jobs")

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from autoreg.errors import UserError, exit_with_one_line
        from autoreg.gpus import leased_task, plan_parallel_sweep

        try:
            n_jobs, plan = plan_parallel_sweep(self.config, self.n_jobs, self.jobs_per_gpu, self.gpus, self.lease_dir)
        except UserError as err:
            exit_with_one_line(err)
        self.joblib["n_jobs"] = n_jobs
        if plan is not None:
            log.info("%d jobs at once; each job leases a slot of GPU %s (jobs_per_gpu=%d) in %s",
                     n_jobs, ",".join(map(str, plan.gpus)), plan.jobs_per_gpu, plan.lease_dir)
        task = self.task_function
        self.task_function = leased_task(task, plan)
        try:
            return super().launch(job_overrides, initial_job_idx)
        finally:
            self.task_function = task
