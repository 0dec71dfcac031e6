"""Value checks with one-line errors that name the key, the value and what is allowed: for any
key (`require_*`, used by the families' declarations and the heads' registry) or read from a
config (`check_*`). No autoreg imports, so every module may use them."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

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
