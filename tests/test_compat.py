"""autoreg.compat: each Lightning (and SummaryWriter) private API autoreg relies on still exists and
means what autoreg assumes, in the installed release."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import nn

from autoreg import compat


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.w - 1).pow(2).sum()

    def train_dataloader(self):
        return [torch.zeros(1)] * 4

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def trainer(tmp_path, **kwargs) -> pl.Trainer:
    return pl.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      accelerator="cpu", **kwargs)


def test_tensorboard_file_writer_writes_summaries(tmp_path):
    logger = pl.loggers.TensorBoardLogger(tmp_path, name="", version="")
    writer = compat.tensorboard_file_writer(logger)
    assert callable(writer.add_summary) and writer.get_logdir() == logger.log_dir


def test_logged_step_counts_optimizer_steps(tmp_path):
    steps = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            steps.append(compat.logged_step(trainer))

    t = trainer(tmp_path, max_steps=3, callbacks=[Record()])
    t.fit(Tiny())
    assert steps == [0, 1, 2] and compat.logged_step(t) == 3  # counted after each batch's own hooks


def test_checkpoint_logged_step_reads_the_saved_loop_state(tmp_path):
    t = trainer(tmp_path, max_steps=2, enable_checkpointing=False)
    t.fit(Tiny())
    t.save_checkpoint(tmp_path / "end.ckpt")
    ckpt = torch.load(tmp_path / "end.ckpt", weights_only=True)
    assert compat.checkpoint_logged_step(ckpt) == 2  # saved after training: logging resumes at the saved step


def test_request_stop_ends_fit_after_the_batch(tmp_path):
    class StopAtTwo(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 2:
                compat.request_stop(trainer)

    t = trainer(tmp_path, max_steps=10, callbacks=[StopAtTwo()])
    with pytest.raises(SIGTERMException):  # what autoreg.cli.train catches after a stop signal
        t.fit(Tiny())
    assert t.global_step == 2 and t.received_sigterm


def test_relaunches_command_only_for_script_launched_ddp(tmp_path):
    assert not compat.relaunches_command(trainer(tmp_path))
    assert compat.relaunches_command(trainer(tmp_path, strategy="ddp", devices=2))


def test_process_group_timeout_and_kill_child_processes(tmp_path):
    from datetime import timedelta

    from pytorch_lightning.strategies import DDPStrategy

    ddp = trainer(tmp_path, strategy=DDPStrategy(timeout=timedelta(seconds=15)), devices=2)
    assert compat.process_group_timeout(ddp) == timedelta(seconds=15)
    assert ddp.strategy.launcher.procs == []  # no child started yet: killing them is a no-op
    compat.kill_child_processes(ddp)
    compat.kill_child_processes(trainer(tmp_path))  # no launcher that starts children


def test_resumable_checkpoint_skips_the_non_empty_dir_warning(tmp_path, recwarn):
    (tmp_path / "old.ckpt").write_bytes(b"")
    for resuming in (False, True):
        callback = compat.ResumableModelCheckpoint(dirpath=tmp_path)
        callback.resuming = resuming
        t = trainer(tmp_path, max_steps=1, callbacks=[callback])
        recwarn.clear()
        callback.setup(t, Tiny(), "fit")
        warned = any("exists and is not empty" in str(w.message) for w in recwarn)
        assert warned != resuming
        assert callback.saves_on_train_epoch_end(t) in (True, False)
