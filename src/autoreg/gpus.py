"""GPUs: the check that a run asking for one has one, and GPU leases for local parallel sweeps.

`python train.py -m ... hydra/launcher=parallel` runs the jobs in joblib's worker processes on
this machine (hydra_plugins.autoreg_launcher). A job that trains on a GPU first leases one slot
of one GPU: an exclusive `fcntl.flock` on the file `<sweep dir>/.gpu_leases/gpu<i>.slot<j>.lock`,
held for its whole run and released when the run ends. The kernel drops the locks of a process
that dies (killed, out of memory), so a dead job never keeps its GPU; the files stay, unlocked,
and say which process last held them. With `jobs_per_gpu` slots per GPU several small jobs share
one. A job takes a slot on the least-busy GPU (ties: the GPU its worker used last, where that
worker already has a CUDA context), and waits while every slot is held.

The GPU reaches Lightning as `trainer.devices=[i]`, not as CUDA_VISIBLE_DEVICES: joblib reuses
its workers, and CUDA, once an earlier job in the same worker has initialised it, no longer reads
that variable.
"""
from __future__ import annotations

import fcntl
import functools
import gc
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from omegaconf import DictConfig, OmegaConf

from autoreg.checks import require_int
from autoreg.errors import ConfigError

log = logging.getLogger("autoreg")

GPU_ACCELERATORS = ("gpu", "cuda")
CPU_SWEEP_JOBS = 2  # parallel jobs of a sweep without GPUs (joblib's workers share the cores)
LEASE_DIR = ".gpu_leases"


def visible_gpus() -> list[int]:
    """The CUDA devices torch sees (after CUDA_VISIBLE_DEVICES), as the indices `trainer.devices` takes."""
    import torch

    return list(range(torch.cuda.device_count()))


def asks_for_gpu(trainer: DictConfig) -> bool:
    return str(trainer.get("accelerator", "auto")) in GPU_ACCELERATORS


def require_gpu(cfg: DictConfig) -> None:
    """A config whose `trainer.accelerator` is gpu (trainer=gpu) on a machine where torch sees no
    CUDA GPU: one line naming trainer=default. Imports torch only for such a config."""
    trainer = cfg.get("trainer")
    if trainer is None or not asks_for_gpu(trainer) or visible_gpus():
        return
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    why = f" (CUDA_VISIBLE_DEVICES={hidden!r})" if hidden is not None else ""
    raise ConfigError(
        f"trainer.accelerator={trainer.accelerator} needs a CUDA GPU, but torch sees none on this machine{why}; "
        "use trainer=default (the CPU here, a GPU where there is one)"
    )


class GpuLease:
    """An exclusive hold on one slot of one GPU (a flock on the slot's file) until `release()` or
    until the process ends."""

    def __init__(self, gpu: int, slot: int, file: IO[str]):
        self.gpu, self.slot, self._file = gpu, slot, file

    def release(self) -> None:
        self._file.close()  # closing the last descriptor drops the flock


def slot_file(lease_dir: Path, gpu: int, slot: int) -> Path:
    return lease_dir / f"gpu{gpu}.slot{slot}.lock"


def _lock(path: Path) -> IO[str] | None:
    """The open file holding an exclusive flock on `path`, or None where another holds it."""
    file = open(path, "a+")
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.close()
        return None
    return file


def _is_held(path: Path) -> bool:
    file = _lock(path)
    if file is None:
        return True
    file.close()
    return False


def try_lease(lease_dir: Path, gpus: Sequence[int], jobs_per_gpu: int, prefer: int | None = None,
              holder: str = "") -> GpuLease | None:
    """A free slot on the least-busy GPU of `gpus` (ties: `prefer`, then the lowest index), or None
    when every slot is held. `holder` is written into the slot's file."""
    lease_dir.mkdir(parents=True, exist_ok=True)
    busy = {gpu: sum(_is_held(slot_file(lease_dir, gpu, slot)) for slot in range(jobs_per_gpu)) for gpu in gpus}
    for gpu in sorted(gpus, key=lambda g: (busy[g], g != prefer, g)):
        for slot in range(jobs_per_gpu):
            file = _lock(slot_file(lease_dir, gpu, slot))
            if file is not None:
                file.truncate(0)
                file.write(f"pid {os.getpid()} {holder}\n")
                file.flush()
                return GpuLease(gpu, slot, file)
    return None


def lease_gpu(lease_dir: Path, gpus: Sequence[int], jobs_per_gpu: int, prefer: int | None = None, holder: str = "",
              poll_seconds: float = 0.5) -> GpuLease:
    """`try_lease`, waiting while every slot is held."""
    waited = False
    while (lease := try_lease(lease_dir, gpus, jobs_per_gpu, prefer, holder)) is None:
        if not waited:
            log.info("all %d GPU slots (%d GPUs x jobs_per_gpu=%d) are leased; waiting for one to be released",
                     len(gpus) * jobs_per_gpu, len(gpus), jobs_per_gpu)
            waited = True
        time.sleep(poll_seconds)
    return lease


@dataclass(frozen=True)
class SweepGpus:
    """The GPUs a parallel sweep's jobs lease, slots per GPU, and the leases' dir."""

    gpus: tuple[int, ...]
    jobs_per_gpu: int
    lease_dir: str


def plan_parallel_sweep(config: DictConfig, n_jobs: int | None, jobs_per_gpu: int, gpus: Sequence[int] | None,
                        lease_dir: str | None) -> tuple[int, SweepGpus | None]:
    """From a sweep's config and its `hydra.launcher` keys: (jobs at once, the GPUs its jobs
    lease or None). Jobs lease GPUs where the sweep's `trainer.accelerator` is gpu, or auto on a
    machine with GPUs; `n_jobs` null is then GPUs x `jobs_per_gpu`, else CPU_SWEEP_JOBS."""
    require_int("hydra.launcher.jobs_per_gpu", jobs_per_gpu, minimum=1)
    if n_jobs == 0:
        raise ConfigError("hydra.launcher.n_jobs=0 is invalid: it must be null (automatic), an integer >= 1 or -1 (one per core)")
    trainer = config.get("trainer")
    accelerator = str(trainer.get("accelerator", "auto")) if trainer is not None else "cpu"
    if accelerator not in (*GPU_ACCELERATORS, "auto"):
        return (CPU_SWEEP_JOBS if n_jobs is None else n_jobs), None
    require_gpu(config)
    visible = visible_gpus()
    if gpus is None:
        gpus = visible
    unknown = sorted(set(gpus) - set(visible))
    if unknown or (gpus is not visible and not gpus):
        seen = f"0-{len(visible) - 1}" if visible else "none"
        what = f"names GPU {unknown[0]}, which torch does not see here" if unknown else "names no GPU"
        raise ConfigError(f"hydra.launcher.gpus={list(gpus)} {what} (it sees: {seen}); list visible GPUs, or null for all of them")
    if not gpus:
        return (CPU_SWEEP_JOBS if n_jobs is None else n_jobs), None
    lease_root = lease_dir if lease_dir is not None else str(Path(str(config.hydra.sweep.dir)) / LEASE_DIR)
    plan = SweepGpus(tuple(gpus), jobs_per_gpu, str(Path(lease_root).absolute()))
    return (len(gpus) * jobs_per_gpu if n_jobs is None else n_jobs), plan


_last_gpu: int | None = None  # the GPU this worker process's previous job leased


def run_on_leased_gpu(task: Callable[[DictConfig], Any], plan: SweepGpus | None, cfg: DictConfig) -> Any:
    """A sweep job: `task(cfg)` on a leased GPU (`trainer.devices=[i]`, said in the job's log) when
    the job trains on one GPU, else as it is. The lease is released when the task ends, and the
    GPU memory this worker cached is freed for the next job."""
    global _last_gpu
    trainer = cfg.get("trainer")
    if plan is None or trainer is None or not _trains_on_one_gpu(trainer):
        return task(cfg)
    job_dir = OmegaConf.select(cfg, "paths.output_dir", default="")
    lease = lease_gpu(Path(plan.lease_dir), plan.gpus, plan.jobs_per_gpu, prefer=_last_gpu, holder=str(job_dir))
    try:
        cfg = OmegaConf.merge(cfg, {"trainer": {"devices": [lease.gpu]}})  # the job's own copy, not the sweep's
        log.info("GPU %d leased for this job (slot %d of %d; trainer.devices=[%d]; leases in %s)",
                 lease.gpu, lease.slot + 1, plan.jobs_per_gpu, lease.gpu, plan.lease_dir)
        return task(cfg)
    finally:
        _last_gpu = lease.gpu
        _free_cached_gpu_memory()
        lease.release()


def _trains_on_one_gpu(trainer: DictConfig) -> bool:
    """accelerator gpu or auto (the plan exists only where there are GPUs) on `devices: 1`; a job
    that names its devices itself keeps them."""
    return str(trainer.get("accelerator", "auto")) in (*GPU_ACCELERATORS, "auto") and trainer.get("devices") in (1, "1")


def _free_cached_gpu_memory() -> None:
    """torch's caching allocator keeps a finished job's blocks reserved in this (reused) worker;
    free them so the next job on that GPU, in another worker, can have them."""
    torch = sys.modules.get("torch")  # a job that never imported torch holds no GPU memory
    if torch is not None and torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()


def leased_task(task: Callable[[DictConfig], Any], plan: SweepGpus | None) -> Callable[[DictConfig], Any]:
    """`task` as a picklable job function for joblib's workers."""
    return functools.partial(run_on_leased_gpu, task, plan)
