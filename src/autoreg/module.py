"""The LightningModule: exact NLL loss, metrics in nats per image and bits per dimension, the
optimizer, and the sample grids logged to TensorBoard.

It knows the network only through its interface (`net(x, y) -> params`, `net.distribution`), so
every model family trains the same way.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import pytorch_lightning as pl
import torch
from torchvision.utils import make_grid

from autoreg.distributions import bits_per_dim, distribution_for
from autoreg.errors import CheckpointError
from autoreg.models import build_model

log = logging.getLogger(__name__)


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
        data: dict[str, Any] | None = None,
    ):
        """`data` is the data config, kept in the checkpoint so sample.py can find test images."""
        super().__init__()
        self.save_hyperparameters()
        self.image_shape = tuple(image_shape)
        self.num_dims = math.prod(self.image_shape)
        self.distribution = distribution_for(bits)
        self.net = build_model(model, self.image_shape, self.distribution)
        if model.get("compile"):
            self.net.compile()  # in place: parameter names and checkpoints stay those of the plain net

    @classmethod
    def from_checkpoint(cls, path: str, map_location="cpu") -> "AutoregressiveModule":
        """Rebuild the module from a checkpoint's hparams and weights, loading with
        `weights_only=True`: a file carrying pickled code is refused, never run."""
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
        except FileNotFoundError:
            raise CheckpointError(f"ckpt={path} does not exist; pass the path of a .ckpt file (e.g. <run dir>/checkpoints/last.ckpt)") from None
        except IsADirectoryError:
            raise CheckpointError(f"ckpt={path} is a directory; pass a .ckpt file inside it (e.g. checkpoints/last.ckpt)") from None
        except Exception as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if "weights_only" in str(err) or "Unsupported global" in str(err):
                reason = "it holds pickled objects that could run code, refused under weights_only=True"
            raise CheckpointError(f"ckpt={path} cannot be loaded: {reason}") from None
        if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
            raise CheckpointError(f"ckpt={path} is not an autoreg training checkpoint (no state_dict/hyper_parameters)")
        try:
            module = cls(**ckpt["hyper_parameters"])
            keys = module.load_state_dict(ckpt["state_dict"], strict=False)
        except (TypeError, KeyError, ValueError, RuntimeError) as err:
            lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
            raise CheckpointError(f"ckpt={path} does not fit the model its hparams describe: {lines[-1] if lines else err!r}") from None
        if keys.missing_keys or keys.unexpected_keys:
            raise CheckpointError(
                f"ckpt={path} does not fit the model its hparams describe: missing weights {keys.missing_keys[:3]}, "
                f"unexpected weights {keys.unexpected_keys[:3]}"
            )
        return module

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, y)

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
    epochs. `method=auto` uses the fast sampler where the model has one, else the naive one
    (both draw from the same distribution), and says which in the log."""

    def __init__(self, num: int = 16, method: str = "auto", temperature: float = 1.0, seed: int = 0):
        self.num, self.method, self.temperature, self.seed = num, method, temperature, seed

    def on_fit_start(self, trainer: pl.Trainer, pl_module: AutoregressiveModule) -> None:
        from autoreg.sampling import has_fast_path

        if self.method == "auto":
            self.method = "fast" if has_fast_path(pl_module.net) else "naive"
            log.info("sample grids: %s sampler for %s", self.method, type(pl_module.net).__name__)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: AutoregressiveModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.num < 1 or trainer.logger is None:
            return
        from autoreg.sampling import sample

        images = sample(pl_module.net, self.num, method=self.method, temperature=self.temperature, seed=self.seed)
        grid = make_grid(images.float().cpu(), nrow=int(math.ceil(math.sqrt(self.num))), pad_value=0.5)
        trainer.logger.experiment.add_image("samples", grid, trainer.global_step)
