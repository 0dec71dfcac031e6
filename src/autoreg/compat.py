"""Every private API of Lightning (and torch's SummaryWriter) that autoreg relies on, in one place.

Each shim names what it reads or overrides; tests/test_compat.py checks each one against the
installed release, so an upgrade that moves one fails there, by name, not deep in a run.
pyproject.toml pins pytorch-lightning to the minor releases the suite has passed on.
"""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint


def tensorboard_file_writer(logger: pl.loggers.TensorBoardLogger):
    """The event-file writer under the logger's SummaryWriter (private `_get_file_writer`): the
    HParams summaries are written through it with metrics of our choosing."""
    return logger.experiment._get_file_writer()


def logged_step(trainer: pl.Trainer) -> int:
    """The step Lightning logs metrics at (private `fit_loop.epoch_loop._batches_that_stepped`),
    so images line up with the scalars logged in the same validation."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def checkpoint_logged_step(ckpt: dict[str, Any]) -> int:
    """The first step a run resumed from `ckpt` logs at: the saved `_batches_that_stepped`, plus
    one when the checkpoint was written at a train batch end (that batch processed, not completed)."""
    loop = ckpt["loops"]["fit_loop"]
    step = loop["epoch_loop.state_dict"]["_batches_that_stepped"]
    batches = loop["epoch_loop.batch_progress"]["total"]
    return step + 1 if batches["completed"] == batches["processed"] - 1 else step


def request_stop(trainer: pl.Trainer) -> None:
    """Make Lightning stop cleanly after the current batch, as after SIGTERM (private
    `_signal_connector.received_sigterm`)."""
    trainer._signal_connector.received_sigterm = True


def relaunches_command(trainer: pl.Trainer) -> bool:
    """Whether the strategy starts its extra processes by re-running the command line
    (private `_SubprocessScriptLauncher`), which a Hydra multirun cannot survive."""
    from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    return isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher) and not (
        trainer.strategy.cluster_environment.creates_processes_externally
    )


def kill_child_processes(trainer: pl.Trainer) -> None:
    """SIGKILL the processes Lightning's launcher started by re-running the command (its private
    `_SubprocessScriptLauncher.procs`); a no-op elsewhere."""
    import signal

    from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    if isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher):
        trainer.strategy.launcher.kill(signal.SIGKILL)


def process_group_timeout(trainer: pl.Trainer):
    """The DDP strategy's process-group timeout (private `DDPStrategy._timeout`), a timedelta."""
    return trainer.strategy._timeout


class ResumableModelCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that a resumed run may point at its own, non-empty checkpoint dir.

    Overrides the private `_ModelCheckpoint__warn_if_dir_not_empty` while `resuming` is set, and
    exposes the private `_should_save_on_train_epoch_end` as `saves_on_train_epoch_end`."""

    def __init__(self, *args: Any, resuming: bool = False, **kwargs: Any):
        """resuming: the run goes on in this dir (autoreg.cli.train), whose checkpoints are its own."""
        super().__init__(*args, **kwargs)
        self.resuming = resuming

    def _ModelCheckpoint__warn_if_dir_not_empty(self, dirpath) -> None:
        if not self.resuming:
            super()._ModelCheckpoint__warn_if_dir_not_empty(dirpath)

    def saves_on_train_epoch_end(self, trainer: pl.Trainer) -> bool:
        return self._should_save_on_train_epoch_end(trainer)
