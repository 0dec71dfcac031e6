"""Fault injection for the reliability tests: a Lightning callback that the tests add to a real
`python train.py` run with `+callbacks.fault._target_=faults.Fault` (tests/ on PYTHONPATH)."""
from __future__ import annotations

import os
import signal
import time

import pytorch_lightning as pl


class Fault(pl.Callback):
    """At the end of training step `step` (global step after the optimizer step), do `action`:
    - kill / term / usr2: send SIGKILL / SIGTERM / SIGUSR2 to this process (rank `rank` only);
    - poison: make the next batch's pixels NaN, so the loss of step `step` + 1 is NaN;
    - inf_grad: make a gradient of step `step` + 1 infinite (its loss stays finite);
    - stall: stop making progress (sleep until killed), as a process stuck in a driver or a deadlock."""

    def __init__(self, step: int, action: str = "kill", rank: int = 0):
        self.step, self.action, self.rank = step, action, rank
        self._poison = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self.step or trainer.global_rank != self.rank:
            return
        if self.action in ("poison", "inf_grad"):
            self._poison = True
            return
        if self.action == "stall":
            while True:
                time.sleep(1)
        sig = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "usr2": signal.SIGUSR2}[self.action]
        os.kill(os.getpid(), sig)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._poison and self.action == "poison":
            batch[0].fill_(float("nan"))
            self._poison = False

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._poison and self.action == "inf_grad":
            next(p for p in pl_module.parameters() if p.grad is not None).grad.view(-1)[0] = float("inf")
            self._poison = False


class Slow(pl.Callback):
    """Sleep `seconds` after every training step, so a tiny run lasts long enough to be
    interrupted from outside (the numbers it computes are unchanged)."""

    def __init__(self, seconds: float = 0.1):
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)
