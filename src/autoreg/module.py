"""The LightningModule: exact NLL loss, metrics in nats per image and bits per dimension, the
optimizer (the training callbacks, the sample grids among them, are in autoreg.callbacks).

It knows the network only through its interface (`net(x, y) -> params`, `net.distribution`), so
every model family trains the same way.

Reliability (see also autoreg.checkpoint):
- `val/nll` and `test/nll` are exact means over the split: each process sums its per-image NLLs in
  float64 and counts its images, the sums and counts are added across processes, then divided; so
  DDP gives the single-process number (no padded duplicates, no mean of means).
- Mixed precision (`trainer.precision=bf16-mixed`, the default where bf16 is fast) speeds up
  training only: the likelihood is computed in fp32 from the network's output, and validation,
  test and the sample grids run the whole network in fp32, so `val/nll` is the exact NLL of the
  distribution that sample.py draws from.
- A non-finite loss or gradient stops training with one line that names the step and the batch;
  nothing is saved after it, so the last checkpoint on disk is the last good one.
- Checkpoints carry every process's RNG state (torch, CUDA, numpy, python), restored on resume.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import pytorch_lightning as pl
import torch

from autoreg.checkpoint import load_checkpoint, rng_state, set_rng_state
from autoreg.distributions import bits_per_dim
from autoreg.errors import CheckpointError, TrainingDivergedError
from autoreg.families import build_model, current_config, distribution_from_config

log = logging.getLogger(__name__)


class AutoregressiveModule(pl.LightningModule):
    """Trains `model` (a config dict naming a family in autoreg.families) by maximum likelihood.

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
        self.distribution = distribution_from_config(model, bits)  # model.likelihood (autoreg.likelihoods)
        self.net = build_model(model, self.image_shape, self.distribution, num_classes=(data or {}).get("num_classes"))
        if model.get("compile"):
            self.net.compile()  # in place: parameter names and checkpoints stay those of the plain net
        # a batch of one stored image and label (the datamodule scales it): Lightning's model summary
        # then reports FLOPs and sizes per image instead of "Total FLOPs: 0"
        self.example_input_array = (torch.zeros(1, *self.image_shape, dtype=torch.uint8), torch.zeros(1, dtype=torch.long))

    @classmethod
    def from_checkpoint(cls, path: str, map_location="cpu", key: str = "ckpt") -> "AutoregressiveModule":
        """Rebuild the module from a checkpoint's hparams and weights, loading with
        `weights_only=True`: a file carrying pickled code is refused, never run. `key` is the
        config key that named the file, for the error message."""
        ckpt = load_checkpoint(path, map_location=map_location, key=key)
        try:
            hparams = ckpt["hyper_parameters"]
            module = cls(**{**hparams, "model": current_config(hparams["model"], hparams["bits"])})
            keys = module.load_state_dict(ckpt["state_dict"], strict=False)
        except (TypeError, KeyError, ValueError, RuntimeError) as err:
            lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
            raise CheckpointError(f"{key}={path} does not fit the model its hparams describe: {lines[-1] if lines else err!r}") from None
        if keys.missing_keys or keys.unexpected_keys:
            raise CheckpointError(
                f"{key}={path} does not fit the model its hparams describe: missing weights {keys.missing_keys[:3]}, "
                f"unexpected weights {keys.unexpected_keys[:3]}"
            )
        return module

    def on_fit_start(self) -> None:
        if self.device.type == "cuda":  # cuDNN's bf16/fp16 tensor-core convolutions prefer NHWC
            self.net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x, y)

    def nll(self, x: torch.Tensor, y: torch.Tensor | None = None, per_pixel: bool = False) -> torch.Tensor:
        """Exact negative log-likelihood per image (B,), in nats, or with `per_pixel` per pixel
        (B, H, W), which sums to it; computed in fp32 even under autocast."""
        params = self(x, y)
        with torch.autocast(x.device.type, enabled=False):
            return self.distribution.pixel_nll(params, x) if per_pixel else self.distribution.nll(params, x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        nll = self.nll(x, y)
        loss = nll.mean()
        self._stop_if_not_finite(loss, nll, x, batch_idx)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        self.log("train/nll", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=len(x))
        self.log("train/bpd", bits_per_dim(loss, self.num_dims), on_step=True, on_epoch=False, batch_size=len(x))
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        """Gradients that overflowed would turn every weight into NaN at this step, after a
        finite loss; stop before the optimizer writes them. (A GradScaler, under 16-bit mixed
        precision, skips such steps by design, so it keeps that job.)"""
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            return
        grads = [p.grad.detach() for p in self.parameters() if p.grad is not None]
        if not grads:
            return
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        if not torch.isfinite(norm):
            raise TrainingDivergedError(
                f"training diverged: the gradient norm is {norm.item()} at step {self.global_step} "
                f"(epoch {self.current_epoch}) although the loss was finite; {self._stop_note()}"
            )

    def _stop_if_not_finite(self, loss: torch.Tensor, nll: torch.Tensor, x: torch.Tensor, batch_idx: int) -> None:
        finite = bool(torch.isfinite(loss))
        if self.trainer.world_size > 1:  # every process must stop at the same step, or DDP hangs
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return
        bad = ~torch.isfinite(nll.detach())
        weights = sum(int((~torch.isfinite(p.detach())).sum()) for p in self.parameters())
        where = (
            f"the loss is {loss.item()}" if not torch.isfinite(loss) else "the loss is non-finite on another process"
        )
        raise TrainingDivergedError(
            f"training diverged: {where} at step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx}); "
            f"batch of {len(x)} images: pixels min {x.min().item():.3g} mean {x.float().mean().item():.3g} "
            f"max {x.max().item():.3g}, {int((~torch.isfinite(x)).sum())} non-finite pixels, "
            f"per-image nll non-finite for {int(bad.sum())} of {len(nll)}"
            + (f" (finite ones {nll[~bad].min().item():.4g}..{nll[~bad].max().item():.4g})" if (~bad).any() else "")
            + f", {weights} non-finite weights; {self._stop_note()}"
        )

    def _stop_note(self) -> str:
        saved = [cb.last_model_path for cb in self.trainer.checkpoint_callbacks if getattr(cb, "last_model_path", "")]
        kept = f"the last good checkpoint is {saved[0]}" if saved else "no checkpoint had been written yet"
        return f"stopped without saving, {kept}; lower optim.lr or set trainer.gradient_clip_val (e.g. 1.0)"

    def on_validation_epoch_start(self) -> None:
        self._reset_eval_sums()

    def on_test_epoch_start(self) -> None:
        self._reset_eval_sums()

    def _reset_eval_sums(self) -> None:
        self._eval_sums = torch.zeros(2, dtype=torch.float64, device=self.device)  # [sum of nll, images]

    def _eval_step(self, batch) -> None:
        x, y = batch
        if len(x) == 0:  # a process's share of the last global batch can be empty (see ShardedBatches)
            return
        with torch.autocast(x.device.type, enabled=False):  # fp32 even under bf16-mixed training
            nll = self.nll(x, y).detach().double()
        self._eval_sums += torch.stack([nll.sum(), torch.tensor(float(len(x)), dtype=torch.float64, device=nll.device)])

    def _log_eval(self, stage: str) -> None:
        total, count = self.trainer.strategy.reduce(self._eval_sums.clone(), reduce_op="sum")
        if count == 0:
            return
        nll = total / count
        # already global and the same on every process, so Lightning's own (mean) sync leaves it
        # unchanged; it is asked for only because Lightning warns about epoch metrics without it
        self.log(f"{stage}/nll", nll, prog_bar=True, batch_size=1, sync_dist=True)
        self.log(f"{stage}/bpd", bits_per_dim(nll, self.num_dims), prog_bar=True, batch_size=1, sync_dist=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Every process's RNG state, indexed by global rank (all ranks take part in a save)."""
        state = rng_state()
        if torch.distributed.is_available() and torch.distributed.is_initialized() and self.trainer.world_size > 1:
            states: list[Any] = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(states, state)
        else:
            states = [state]
        checkpoint["rng_states"] = states

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states")
        if self._trainer is None or not states:
            return
        rank = self.trainer.global_rank
        if rank < len(states):
            set_rng_state(states[rank])
        else:
            log.warning("checkpoint holds RNG states for %d processes, not for rank %d: its RNG is not restored", len(states), rank)

    def configure_optimizers(self):
        o = self.hparams.optim
        optimizer = torch.optim.Adam(self.parameters(), lr=o["lr"], weight_decay=o.get("weight_decay", 0.0))
        if o.get("scheduler", "constant") == "constant":
            return optimizer
        total = self.trainer.estimated_stepping_batches
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(total)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
