"""The trainer's `auto` values resolved before the Trainer is built: `trainer.precision=auto` (bf16
where the machine runs it natively) and `trainer.val_check_interval=auto`. Each resolver returns
the values to set and the line to log; `resolve_trainer` gives them together (autoreg.config.run_spec
puts them into the run's spec)."""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig


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


def resolve_precision(cfg: DictConfig) -> tuple[dict[str, Any], str | None]:
    """`trainer.precision=auto` (the default): bf16-mixed where `fast_bf16`, else 32-true (the
    run's hparams show which). Returns the trainer values to set and the line to log; nothing
    when the user chose a precision. The likelihood is computed in fp32 either way
    (AutoregressiveModule)."""
    import torch

    if cfg.trainer.get("precision") != "auto":
        return {}, None
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    device = "cuda" if accelerator == "gpu" else accelerator
    if fast_bf16(device):
        what = "GPU" if device == "cuda" else "CPU (AVX512-BF16/AMX)"
        return {"precision": "bf16-mixed"}, (f"trainer.precision=auto -> bf16-mixed: this {what} runs bf16 natively; "
                                             "evaluation and sampling stay fp32 (trainer.precision=32-true trains in fp32 too)")
    return {"precision": "32-true"}, f"trainer.precision=auto -> 32-true: no native bf16 on this {device}"


VALIDATIONS = 5  # of a run with trainer.max_steps and trainer.val_check_interval=auto


def resolve_val_check(cfg: DictConfig) -> tuple[dict[str, Any], str | None]:
    """`trainer.val_check_interval=auto` (the default): a run with `trainer.max_steps` validates
    every max_steps / VALIDATIONS batches, across epochs, so that a short run's val curve has
    points (and FinalValidation adds the last step); other runs validate after each epoch. Returns
    the trainer values to set and the line to log; nothing when the user chose an interval."""
    trainer = cfg.trainer
    if trainer.get("val_check_interval") != "auto":
        return {}, None
    max_steps = trainer.get("max_steps") or -1
    if max_steps <= 0:
        return {"val_check_interval": 1.0}, None
    batches = max_steps * (trainer.get("accumulate_grad_batches") or 1)
    interval = max(1, batches // VALIDATIONS)
    return {"val_check_interval": interval, "check_val_every_n_epoch": None}, (
        f"trainer.val_check_interval=auto -> {interval}: {batches // interval} validations over "
        f"trainer.max_steps={max_steps} (trainer.val_check_interval=1.0: after each epoch)")


def resolve_trainer(cfg: DictConfig) -> tuple[dict[str, Any], list[str]]:
    """The trainer values that replace its `auto` ones (precision, val_check_interval), and the
    lines to log."""
    values, notes = {}, []
    for resolved, note in (resolve_precision(cfg), resolve_val_check(cfg)):
        values.update(resolved)
        notes += [note] if note else []
    return values, notes
