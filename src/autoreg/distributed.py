"""DDP without silent hangs.

A collective (gradient all-reduce, barrier, metric reduction) waits for every process. If one
process stops making progress, or runs a collective the others never reach, the rest wait at it
until the process group's timeout. `trainer=ddp` sets that timeout to 10 minutes
(`trainer.strategy.timeout.seconds`; the backends' own default is 30), and `StallGuard` turns
the timeout into one line that names the stage and stops the other processes. (A child process
that fails stops the main one: Lightning's launcher watches its children.)

Work that one process does alone (the sample-quality classifier trained on first use) must not
make the others wait at a collective for longer than that: callbacks with a
`before_launch(trainer, module, datamodule)` method do it in `run_before_launch`, on global rank 0
before Lightning starts the other processes.
"""
from __future__ import annotations

import re

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import RunningStage

from autoreg.errors import UserError


class ProcessesStalled(UserError):
    """A process waited longer than the process group's timeout for the others."""


def run_before_launch(trainer: pl.Trainer, module, datamodule) -> None:
    if not trainer.is_global_zero:
        return
    for callback in trainer.callbacks:
        before_launch = getattr(callback, "before_launch", None)
        if before_launch is not None:
            before_launch(trainer, module, datamodule)


def _where(trainer: pl.Trainer) -> str:
    stage, step = trainer.state.stage, trainer.global_step
    if stage == RunningStage.TRAINING:
        return f"during training, at step {step}"
    if stage == RunningStage.VALIDATING:
        return f"during validation, at step {step}"
    if stage == RunningStage.SANITY_CHECKING:
        return "during the sanity check before training"
    if stage == RunningStage.TESTING:
        return "during testing"
    return f"before {trainer.state.fn or 'the run'} started" if step == 0 else f"between stages, at step {step}"


class StallGuard(pl.Callback):
    """Records where a process-group timeout struck (Lightning resets the stage before the
    exception leaves `fit`); `raise_one_line` then stops this run's other processes and raises
    the one line."""

    def __init__(self):
        self.where = "during the run"

    def on_exception(self, trainer: pl.Trainer, pl_module, exception: BaseException) -> None:
        self.where = _where(trainer)

    def raise_one_line(self, trainer: pl.Trainer, err: RuntimeError) -> None:
        """Raise ProcessesStalled for a process-group timeout (gloo: "Timed out waiting ...",
        NCCL: "... collective operation timeout"), else re-raise `err`."""
        from autoreg.compat import kill_child_processes, process_group_timeout

        if trainer.world_size < 2 or not re.search(r"timed out|timeout", str(err), re.IGNORECASE):
            raise err
        kill_child_processes(trainer)
        raise ProcessesStalled(
            f"DDP: process {trainer.global_rank} of {trainer.world_size} waited more than {process_group_timeout(trainer)} "
            f"for the others {self.where}; another process stopped making progress (stuck, or died: see its log); if one "
            "process legitimately works alone that long, raise trainer.strategy.timeout.seconds"
        ) from None
