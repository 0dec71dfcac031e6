"""The trainer's `auto` values resolved before the Trainer is built: `trainer.precision=auto` (bf16
where the machine runs it natively) and `trainer.val_check_interval=auto`."""
from __future__ import annotations

from omegaconf import DictConfig, open_dict


def fast_bf16(device_type: str) -> bool:
    """Whether this machine multiplies bf16 natively: a CUDA GPU with bf16 (Ampere or later) or a
    CPU with AVX512-BF16 or AMX, whose oneDNN kernels then run bf16 convolutions about twice as
    fast as fp32 (experiments/benchmarks/train_speed.md)."""
    import torch

    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    # NOTE: private torch helpers (torch.cpu), absent ones count as "no"
    return any(getattr(torch.cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def resolve_precision(cfg: DictConfig) -> str | None:
    """`trainer.precision=auto` (the default): bf16-mixed where `fast_bf16`, else 32-true; written
    back into the config (so the run's hparams show it). Returns the line to log, or None when the
    user chose a precision. The likelihood is computed in fp32 either way (AutoregressiveModule)."""
    import torch

    if cfg.trainer.get("precision") != "auto":
        return None
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    device = "cuda" if accelerator == "gpu" else accelerator
    fast = fast_bf16(device)
    with open_dict(cfg):
        cfg.trainer.precision = "bf16-mixed" if fast else "32-true"
    if fast:
        what = "GPU" if device == "cuda" else "CPU (AVX512-BF16/AMX)"
        return (f"trainer.precision=auto -> bf16-mixed: this {what} runs bf16 natively; evaluation and sampling stay "
                "fp32 (trainer.precision=32-true trains in fp32 too)")
    return f"trainer.precision=auto -> 32-true: no native bf16 on this {device}"


VALIDATIONS = 5  # of a run with trainer.max_steps and trainer.val_check_interval=auto


def resolve_val_check(cfg: DictConfig) -> str | None:
    """`trainer.val_check_interval=auto` (the default): a run with `trainer.max_steps` validates
    every max_steps / VALIDATIONS batches, across epochs, so that a short run's val curve has
    points (and FinalValidation adds the last step); other runs validate after each epoch. Written
    back into the config; returns the line to log, or None when the user chose an interval."""
    trainer = cfg.trainer
    if trainer.get("val_check_interval") != "auto":
        return None
    max_steps = trainer.get("max_steps") or -1
    with open_dict(cfg):
        if max_steps <= 0:
            trainer.val_check_interval = 1.0
            return None
        batches = max_steps * (trainer.get("accumulate_grad_batches") or 1)
        trainer.val_check_interval = max(1, batches // VALIDATIONS)
        trainer.check_val_every_n_epoch = None
    return (f"trainer.val_check_interval=auto -> {trainer.val_check_interval}: {batches // trainer.val_check_interval} "
            f"validations over trainer.max_steps={max_steps} (trainer.val_check_interval=1.0: after each epoch)")


def resolve_trainer(cfg: DictConfig) -> list[str]:
    """The trainer's `auto` values resolved in the config (precision, val_check_interval) before
    the Trainer is built; returns the lines to log."""
    return [note for note in (resolve_precision(cfg), resolve_val_check(cfg)) if note]
