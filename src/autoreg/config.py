"""Config validation: every bad value fails here, before any data is read, with one line that
names the key, the value and what is allowed."""
from __future__ import annotations

import hashlib

from omegaconf import DictConfig, OmegaConf, open_dict

from autoreg.errors import ConfigError


def _get(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, throw_on_missing=False)


def require_choice(key: str, value, allowed) -> None:
    """`key=value` must be one of `allowed` (families check their own keys with these helpers)."""
    if value not in allowed:
        raise ConfigError(f"{key}={value} is not allowed; choose one of: {', '.join(map(str, allowed))}")


def require_int(key: str, value, minimum: int = 1, odd: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if ok and odd and value % 2 == 0:
        ok = False
    if not ok:
        what = f"an odd integer >= {minimum} (e.g. 3, 5, 7)" if odd else f"an integer >= {minimum}"
        raise ConfigError(f"{key}={value} is invalid: it must be {what}")


def require_bool(key: str, value) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value} is invalid: it must be true or false")


def require_labels(num_classes) -> None:
    """A class-conditional model needs a dataset with at least two classes."""
    if not (isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes >= 2):
        raise ConfigError(
            f"model.conditional=true needs labelled data, but data.num_classes={num_classes}; "
            "use a dataset with labels (data=mnist, mnist256, cifar10) or model.conditional=false"
        )


def check_choice(cfg: DictConfig, key: str, allowed) -> None:
    require_choice(key, _get(cfg, key), allowed)


def check_int(cfg: DictConfig, key: str, minimum: int = 1, odd: bool = False) -> None:
    require_int(key, _get(cfg, key), minimum, odd)


def check_positive(cfg: DictConfig, key: str) -> None:
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{key}={value} is invalid: it must be a number > 0")


IMAGE_SHAPES = {"mnist": (1, 28, 28), "binarized_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}  # data.dataset -> (C, H, W)
DATASETS = tuple(IMAGE_SHAPES)
SOURCES = ("auto", "download", "bundled")
BINARIZE = ("static", "dynamic")  # of grey-level MNIST; binarized_mnist comes binarized ("fixed")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError on the first value that cannot work. The generic keys are checked here;
    the model's own keys by its family (autoreg.families) for this data and head, and
    `model.likelihood` against the data (autoreg.likelihoods), all without importing torch: a bad
    value is answered in about a second."""
    from autoreg.families import checked, declared
    from autoreg.likelihoods import choose

    family = type(declared(cfg.model))
    require_bool("model.conditional", cfg.model.get("conditional", False))
    check_choice(cfg, "data.dataset", DATASETS)
    check_choice(cfg, "data.source", SOURCES)
    if cfg.data.source == "bundled" and cfg.data.dataset != "mnist":
        raise ConfigError(
            f"data.source=bundled is only available for MNIST (data=mnist or mnist256), not data={cfg.data.name}; "
            "use data.source=auto or data.source=download"
        )
    if cfg.data.dataset == "binarized_mnist":
        if cfg.data.bits != 1 or cfg.data.get("binarize") != "fixed":
            raise ConfigError(
                f"data=binarized_mnist comes binarized (Larochelle & Murray 2011), but data.bits={cfg.data.bits} "
                f"data.binarize={cfg.data.get('binarize')}; keep bits=1 binarize=fixed, or use data=mnist "
                "data.binarize=static|dynamic (or data=mnist256) to binarize the grey-level digits yourself"
            )
    else:
        check_choice(cfg, "data.bits", (1, 8))
        if cfg.data.bits == 1:
            check_choice(cfg, "data.binarize", BINARIZE)
    if cfg.model.get("conditional"):
        require_labels(cfg.data.get("num_classes"))
    check_int(cfg, "data.batch_size")
    if "val_size" in cfg.data:  # datasets with a validation split of their own have none
        check_positive(cfg, "data.val_size")
    check_positive(cfg, "optim.lr")
    decay = cfg.optim.get("ema_decay")
    if decay is not None and (isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1):
        raise ConfigError(f"optim.ema_decay={decay} is invalid: it must be a number in (0, 1), e.g. 0.9995, or null (off)")
    likelihood, _ = choose(cfg.model, family.NAME, family.LIKELIHOODS, cfg.data.bits)  # against the family and data.bits
    checked(cfg.model, IMAGE_SHAPES[cfg.data.dataset], likelihood)


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


def split_own_keys(argv: list[str], keys: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """A tool's own `key=value` arguments (`keys`), and the rest (config overrides) in their order."""
    own, rest = {}, []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in keys:
            own[key] = value
        else:
            rest.append(arg)
    return own, rest


def job_dirname(overrides: str, max_len: int = 120) -> str:
    """A sweep job's directory (and TensorBoard run) name from its overrides, kept under the
    file-name limit: a long one is cut and made unique with a hash of the whole."""
    if len(overrides) <= max_len:
        return overrides
    digest = hashlib.sha1(overrides.encode()).hexdigest()[:8]
    return f"{overrides[: max_len - 11]}.._{digest}"
