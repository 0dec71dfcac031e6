"""Model families: pure nn.Modules mapping an image batch (+ label) to likelihood parameters.

A family is one file in this package plus one conf/model/<name>.yaml. The file defines the
network and a module-level `FAMILY = Family(...)` that says everything the core needs:

- `model`: the class, called as `model(image_shape, distribution, num_classes=None, **keys)`, where
  `keys` are the config's model keys (all but `name`, `compile` and `conditional`), and
  `num_classes` is the data's class count for `model.conditional=true` (None: unconditional);
  `forward(x, y=None) -> params`;
- `check(keys)`: raises `autoreg.config.ConfigError` naming `model.<key>`, the value and what is
  allowed, for any value the class cannot take (run before any data is read, and on every build);
- `likelihoods`: the names of the heads (autoreg.distributions) it can output;
- optionally, on the class, `fast_stepper(batch, device, dtype, y) -> autoreg.sampling.Stepper`:
  its exact cached sampler (without it, sampling is naive only).

The files are found here at import: no core file names a family.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from autoreg.config import ConfigError, require_labels

# Config keys every family's config has that are not constructor arguments.
CORE_KEYS = ("name", "compile", "conditional")


@dataclass(frozen=True)
class Family:
    name: str  # `model.name`, the file name of conf/model/<name>.yaml
    model: type[nn.Module]
    check: Callable[[Mapping[str, Any]], None]
    likelihoods: tuple[str, ...] = ("bernoulli", "categorical")


def _discover() -> dict[str, Family]:
    families = {}
    for info in pkgutil.iter_modules(__path__):
        family = getattr(importlib.import_module(f"{__name__}.{info.name}"), "FAMILY", None)
        if isinstance(family, Family):
            families[family.name] = family
    return families


FAMILIES: dict[str, Family] = _discover()


def family(name: str) -> Family:
    """The family a `model.name` names, or a one-line error listing the known ones."""
    if name not in FAMILIES:
        raise ConfigError(f"model.name={name} is not a model family; choose one of: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def model_keys(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor's keyword arguments in a model config."""
    return {k: v for k, v in dict(model_cfg).items() if k not in CORE_KEYS}


def checked_keys(spec: Family, keys: Mapping[str, Any]) -> dict[str, Any]:
    """`keys` completed with the constructor's defaults, after the family's check; an unknown key
    is one line."""
    params = inspect.signature(spec.model).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty and k != "num_classes"}
    unknown = sorted(set(keys) - set(defaults))
    if unknown:
        raise ConfigError(f"model.{unknown[0]} is not an option of model={spec.name}; its options are: {', '.join(defaults)}")
    full = {**defaults, **keys}
    spec.check(full)
    return full


def build_model(model_cfg: Mapping[str, Any], image_shape: tuple[int, int, int], distribution, num_classes: int | None = None) -> nn.Module:
    """Check and instantiate the network `model_cfg['name']` names. `num_classes` is used only
    when `model_cfg['conditional']` is true, and must then be >= 2."""
    spec = family(model_cfg["name"])
    keys = checked_keys(spec, model_keys(model_cfg))
    if model_cfg.get("conditional"):
        require_labels(num_classes)
        return spec.model(tuple(image_shape), distribution, num_classes=int(num_classes), **keys)
    return spec.model(tuple(image_shape), distribution, **keys)

