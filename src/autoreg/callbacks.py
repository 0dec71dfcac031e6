"""The training callbacks: evaluation with an exponential moving average of the weights, the
final validation of a run that stops mid-epoch, and the sample grids.

Weight averaging (Polyak averaging):

`optim.ema_decay=<decay>` (e.g. 0.9995; null: off) keeps, beside the trained weights, their average
a <- decay * a + (1 - decay) * w after every optimizer step (Lightning's EMAWeightAveraging, i.e.
torch.optim.swa_utils.AveragedModel), as PixelCNN++ (Salimans et al. 2017) and most successors
evaluate. The average is what is evaluated and kept: validation, the sample grids and sample
quality, best.ckpt's weights (so sample.py, compress.py and `test=true` use it) and the weights
after training. last.ckpt holds both (`state_dict`: the average; `current_model_state`: the
trained weights), so a resumed run continues exactly. Under DDP every process keeps the same
average (the weights are the same in every process after each step).
"""
from __future__ import annotations

import logging
import math

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EMAWeightAveraging
from pytorch_lightning.trainer.states import TrainerFn

from autoreg.compat import logged_step
from autoreg.sampling import class_rows, resolve_method, sample
from autoreg.sampling.grids import completion_rows, grid_image

log = logging.getLogger(__name__)


class EvaluationEMA(EMAWeightAveraging):
    """Lightning's EMA callback with three changes (NOTE):
    - the trained weights come back at `on_validation_end`, not at the validation epoch's end, so
      that every callback's `on_validation_epoch_end` (the sample grids) sees the average; it
      must come first in the callback list, so that its `on_train_end` (the average becomes the
      weights) runs before the sample-quality score;
    - outside `fit` (test=true, a checkpoint evaluated on its own) a checkpoint's `state_dict` (the
      average) is what is loaded: Lightning's callback would put the trained weights back;
    - a checkpoint written after training keeps the trained weights as `current_model_state`
      (Lightning's would store the average there too, once it has replaced the weights)."""

    def __init__(self, decay: float):
        super().__init__(decay=float(decay))
        self._trained: dict | None = None  # the trained weights once on_train_end has put the average in their place

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        pass  # the swap back waits for on_validation_end

    def on_validation_end(self, trainer: pl.Trainer, pl_module) -> None:
        if self._average_model is not None:
            self._swap_models(pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        self._trained = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module, checkpoint) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self._trained is not None and "current_model_state" in checkpoint:  # saved at the end: keep the trained weights too
            checkpoint["current_model_state"] = self._trained

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module, checkpoint) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


def weight_averaging(optim: dict) -> list[pl.Callback]:
    """The EMA callback `optim.ema_decay` asks for (first in the callback list), or none."""
    decay = optim.get("ema_decay")
    return [] if decay is None else [EvaluationEMA(decay)]


def best_checkpoint_callback(trainer: pl.Trainer):
    """The callback that keeps best.ckpt (the first one that monitors a metric)."""
    return next((cb for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None)), trainer.checkpoint_callback)


class FinalValidation(pl.Callback):
    """Validate after the last step when `trainer.max_steps` ends training mid-epoch: without it the
    run's val/nll, metrics.json and best.ckpt would describe an earlier step. Lightning validates
    whenever training is asked to stop (`trainer.should_stop`, as early stopping does), so the last
    step asks; a step that ends an epoch validates once, as always. At the end it logs
    `best/val/nll`, the figure of the weights best.ckpt keeps, so that HParams shows it beside the
    final val/nll."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        best = best_checkpoint_callback(trainer)
        if trainer.is_global_zero and trainer.logger is not None and best is not None and best.best_model_score is not None:
            trainer.logger.log_metrics({"best/val/nll": float(best.best_model_score)}, step=trainer.global_step)


class SampleGrid(pl.Callback):
    """Logs a grid of `num` samples (`val/samples` in TensorBoard) at the end of every validation,
    drawn with the same sampler as sample.py and a fixed seed, so grids compare across steps; for
    a class-conditional model, one row of ceil(num / classes) samples per class. Beside it,
    `val/completions`: the first `completions` validation images with their bottom halves redrawn
    twice (sample.py complete=true's layout). Pixels are shown `scale` x `scale` (nearest
    neighbour). `method=auto` uses the fast sampler where the model has one, else the naive one
    (both draw from the same distribution), and says which in the log."""

    COMPLETIONS_PER_IMAGE = 2

    def __init__(self, num: int = 16, method: str = "auto", temperature: float = 1.0, seed: int = 0, scale: int = 3,
                 completions: int = 4):
        self.num, self.method, self.temperature, self.seed, self.scale = num, method, temperature, seed, scale
        self.completions = completions

    def on_fit_start(self, trainer: pl.Trainer, pl_module) -> None:
        if self.method == "auto":
            self.method = resolve_method(pl_module.net, self.method)
            log.info("sample grids: %s sampler for %s", self.method, type(pl_module.net).__name__)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.logger is None:
            return
        # the step Lightning logs val/nll at, so grids line up with it and a resumed run can tell
        # which grids it will log again (autoreg.checkpoint.logged_before)
        step = logged_step(trainer)
        if self.num > 0:
            trainer.logger.experiment.add_image("val/samples", self._samples(pl_module), step)
        datamodule = trainer.datamodule
        if self.completions > 0 and datamodule is not None and "val" in getattr(datamodule, "splits", {}):
            val = datamodule.splits["val"]
            x, labels = datamodule.on_after_batch_transfer(val[torch.arange(min(self.completions, len(val)))], 0)
            rows = completion_rows(pl_module.net, x.cpu(), labels.cpu(), self.COMPLETIONS_PER_IMAGE, method=self.method,
                                   temperature=self.temperature, seed=self.seed)
            trainer.logger.experiment.add_image("val/completions", grid_image(rows, 2 + self.COMPLETIONS_PER_IMAGE, self.scale), step)

    def _samples(self, pl_module) -> torch.Tensor:
        net = pl_module.net
        classes = getattr(net, "num_classes", None)
        if classes:  # one row per class
            y = class_rows(classes, self.num).to(pl_module.device)
            num, nrow = len(y), len(y) // classes
        else:
            y, num, nrow = None, self.num, int(math.ceil(math.sqrt(self.num)))
        images = sample(net, num, y=y, method=self.method, temperature=self.temperature, seed=self.seed)
        return grid_image(images, nrow, self.scale)
