"""Evaluation with an exponential moving average of the weights (Polyak averaging).

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

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EMAWeightAveraging
from pytorch_lightning.trainer.states import TrainerFn


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
