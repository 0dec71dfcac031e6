"""Config validation: every bad value fails here, before any data is read, with one line that
names the key, the value and what is allowed."""
from __future__ import annotations

from omegaconf import DictConfig

from autoreg.checks import check_choice, check_int, check_positive, require_bool, require_labels
from autoreg.errors import ConfigError
from autoreg.families import checked, declared
from autoreg.likelihoods import choose


IMAGE_SHAPES = {"mnist": (1, 28, 28), "binarized_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}  # data.dataset -> (C, H, W)
DATASETS = tuple(IMAGE_SHAPES)
SOURCES = ("auto", "download", "bundled")
BINARIZE = ("static", "dynamic")  # of grey-level MNIST; binarized_mnist comes binarized ("fixed")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError on the first value that cannot work. The generic keys are checked here;
    the model's own keys by its family (autoreg.families) for this data and head, and
    `model.likelihood` against the data (autoreg.likelihoods), all without importing torch: a bad
    value is answered in about a second."""
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
