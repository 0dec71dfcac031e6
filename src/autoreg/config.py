"""Config validation: every bad value fails here, before any data is read, with one line that
names the key, the value and what is allowed."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from autoreg.checks import check_choice, check_int, check_positive, require_bool, require_labels
from autoreg.errors import ConfigError
from autoreg.families import declared
from autoreg.likelihoods import choose


IMAGE_SHAPES = {"mnist": (1, 28, 28), "binarized_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}  # data.dataset -> (C, H, W)
DATASETS = tuple(IMAGE_SHAPES)
SOURCES = ("auto", "download", "bundled")
SPLITS = ("train", "val", "test")  # the datamodule's splits: split= of compress.py and score.py
# auto (autoreg.trainer_config) and Lightning's precision names
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "transformer-engine",
              "transformer-engine-float16", 16, 32, 64, "16", "32", "64", "bf16")
BINARIZE = ("static", "dynamic")  # of grey-level MNIST; binarized_mnist comes binarized ("fixed")


def check_trainer(cfg: DictConfig) -> None:
    """The Trainer arguments users set most, checked before torch (Lightning's own errors come
    only once it is built, in several lines)."""
    trainer = cfg.get("trainer") or {}
    for key, minimum, meaning in (("max_epochs", -1, "or -1 for no limit"), ("max_steps", -1, "or -1 for no limit"),
                                  ("num_sanity_val_steps", -1, "or -1 for the whole validation set"),
                                  ("log_every_n_steps", 1, ""), ("accumulate_grad_batches", 1, "")):
        value = trainer.get(key)
        if key in trainer and value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
            floor = 0 if minimum == -1 else minimum
            raise ConfigError(f"trainer.{key}={value} is invalid: it must be an integer >= {floor}{', ' + meaning if meaning else ''}")
    if "precision" in trainer:
        check_choice(cfg, "trainer.precision", PRECISIONS)
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        value = trainer.get(key)
        whole = isinstance(value, int) and value >= 0
        fraction = isinstance(value, float) and 0.0 <= value <= 1.0
        if key in trainer and value is not None and (isinstance(value, bool) or not (whole or fraction)):
            raise ConfigError(f"trainer.{key}={value} is invalid: it must be a number of batches (an integer >= 0) "
                              "or a fraction of the split in [0.0, 1.0]")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError on the first value that cannot work. The generic keys are checked here;
    the model's own keys by its family (autoreg.families) for this data and head, and
    `model.likelihood` against the data (autoreg.likelihoods), all without importing torch: a bad
    value is answered in about a second."""
    keys = declared(cfg.model)
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
    check_trainer(cfg)
    if "val_size" in cfg.data:  # datasets with a validation split of their own have none
        check_positive(cfg, "data.val_size")
    check_positive(cfg, "optim.lr")
    decay = cfg.optim.get("ema_decay")
    if decay is not None and (isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1):
        raise ConfigError(f"optim.ema_decay={decay} is invalid: it must be a number in (0, 1), e.g. 0.9995, or null (off)")
    likelihood, _ = choose(cfg.model, keys.NAME, keys.LIKELIHOODS, cfg.data.bits)  # against the family and data.bits
    keys.check(IMAGE_SHAPES[cfg.data.dataset], likelihood)


def run_spec(cfg: DictConfig) -> tuple[DictConfig, list[str]]:
    """The run as it will go: `cfg` validated, resolved (interpolations evaluated once), with the
    trainer's `auto` values decided for this machine (autoreg.trainer_config), read-only; and the
    lines that say what `auto` became. `cfg` itself is left as it was."""
    from autoreg.trainer_config import resolve_trainer

    validate(cfg)
    trainer, notes = resolve_trainer(cfg)
    spec = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    spec.trainer.update(trainer)  # check_val_every_n_epoch may be new to the trainer node
    OmegaConf.set_readonly(spec, True)
    return spec, notes
