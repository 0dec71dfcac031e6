"""The LightningModule: exact NLL loss, metrics in nats per image and bits per dimension, the
optimizer, and the sample grids logged to TensorBoard.

It knows the network only through its interface (`net(x, y) -> params`, `net.distribution`), so
every model family trains the same way.
"""
from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from torchvision.utils import make_grid

from autoreg.distributions import bits_per_dim, distribution_for
from autoreg.models import build_model


class AutoregressiveModule(pl.LightningModule):
    """Trains `model` (a config dict naming a family in autoreg.models) by maximum likelihood.

    Everything needed to rebuild the network is saved as plain hparams, so a checkpoint alone
    (loaded with weights_only=True) restores the model.
    """

    def __init__(
        self,
        model: dict[str, Any],
        image_shape: tuple[int, int, int],
        bits: int,
        optim: dict[str, Any],
    ):
        super().__init__()
        self.save_hyperparameters()
        self.image_shape = tuple(image_shape)
        self.num_dims = math.prod(self.image_shape)
        self.distribution = distribution_for(bits)
        self.net = build_model(model, self.image_shape, self.distribution)
        self._forward = torch.compile(self.net) if model.get("compile") else self.net

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self._forward(x, y)

    def nll(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Exact negative log-likelihood per image, in nats; computed in fp32 even under autocast."""
        params = self(x, y)
        with torch.autocast(x.device.type, enabled=False):
            return self.distribution.nll(params, x)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        nll = self.nll(x, y).mean()
        train = stage == "train"
        kwargs = dict(on_step=train, on_epoch=not train, batch_size=len(x), sync_dist=not train)
        self.log(f"{stage}/nll", nll, prog_bar=True, **kwargs)
        self.log(f"{stage}/bpd", bits_per_dim(nll, self.num_dims), prog_bar=not train, **kwargs)
        return nll

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self):
        o = self.hparams.optim
        optimizer = torch.optim.Adam(self.parameters(), lr=o["lr"], weight_decay=o.get("weight_decay", 0.0))
        if o.get("scheduler", "constant") == "constant":
            return optimizer
        total = self.trainer.estimated_stepping_batches
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(total)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class SampleGrid(pl.Callback):
    """Logs a grid of `num` samples (`samples` in TensorBoard) at the end of every validation
    epoch, drawn with the same sampler as sample.py and a fixed seed, so grids compare across
    epochs."""

    def __init__(self, num: int = 16, method: str = "fast", temperature: float = 1.0, seed: int = 0):
        self.num, self.method, self.temperature, self.seed = num, method, temperature, seed

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: AutoregressiveModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.num < 1 or trainer.logger is None:
            return
        from autoreg.sampling import sample

        images = sample(pl_module.net, self.num, method=self.method, temperature=self.temperature, seed=self.seed)
        grid = make_grid(images.float().cpu(), nrow=int(math.ceil(math.sqrt(self.num))), pad_value=0.5)
        trainer.logger.experiment.add_image("samples", grid, trainer.global_step)
