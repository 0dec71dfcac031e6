"""Model families, declared torch-free: one dataclass per family, one file each in this package.

A family is its declaration here plus its network file in autoreg.models:

- the declaration is a frozen dataclass subclassing `Family`: its fields are the family's model
  keys with their defaults (the only place defaults live), `NAME` is `model.name`, `NETWORK` the
  dotted path of the network class, `LIKELIHOODS` the heads it can output (autoreg.likelihoods;
  `model/likelihood=auto` takes the first that models the data's bits), and `check(image_shape,
  likelihood)` raises a one-line ConfigError naming `model.<key>` for any value the network cannot
  take on that data with that head;
- the network class is built as `Network(image_shape, distribution, keys, num_classes=None)`, with
  `keys` the checked declaration, `num_classes` the data's class count for `model.conditional=true`;
  `forward(x, y=None) -> params`; optionally `fast_stepper(batch, device, dtype, y)`, its exact
  cached sampler (autoreg.sampling; without it, sampling is naive only).

Each declaration becomes Hydra's config `model=<NAME>`, and each head `model/likelihood=<head>`
(`register_configs`, run by `import autoreg`). No core file names a family: they are found by
scanning this package, and a bad value is answered without importing torch.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from autoreg.checks import require_labels
from autoreg.errors import ConfigError
from autoreg.likelihoods import as_node, choose, configs, distribution_for

if TYPE_CHECKING:
    from torch import nn

# Keys of every model config that are not the network's: torch.compile, conditioning (and the
# head's node, `likelihood`, from the group model/likelihood).
CORE_DEFAULTS: dict[str, Any] = {"compile": False, "conditional": False}


@dataclass(frozen=True)
class Family:
    """The base of every declaration (module docstring)."""

    NAME: ClassVar[str]
    NETWORK: ClassVar[str]  # "package.module:Class", imported only to build the network
    LIKELIHOODS: ClassVar[tuple[str, ...]] = ("bernoulli", "categorical")

    def check(self, image_shape: tuple[int, int, int], likelihood: str) -> None:
        """Raise ConfigError on a value the network cannot take for (C, H, W) images and this head."""

    def field_theory(self) -> tuple[int, int, int] | None:
        """(radius, earlier pixels reached, blind spot) that theory predicts for a pixel at least
        `radius` from the top, left and right edges, where the family has such a theory; the
        receptive-field tool prints it beside the measured field (autoreg.analysis.receptive_field)."""
        return None

    @classmethod
    def network(cls) -> type[nn.Module]:
        module, _, name = cls.NETWORK.partition(":")
        return getattr(importlib.import_module(module), name)

    @classmethod
    def config(cls) -> dict[str, Any]:
        """Hydra's `model=<NAME>` node: the name, the declared keys, the core keys, and the head
        (`model/likelihood=auto` unless chosen)."""
        keys = {f.name: f.default for f in dataclasses.fields(cls)}
        return {"defaults": ["_self_", {"likelihood": "auto"}], "name": cls.NAME, **keys, **CORE_DEFAULTS}


def _discover() -> dict[str, type[Family]]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Family) and value.__module__ == module.__name__:
                found[value.NAME] = value
    return found


_FAMILIES: dict[str, type[Family]] = {}


def names() -> list[str]:
    """Every family's `model.name`."""
    if not _FAMILIES:
        _FAMILIES.update(_discover())
    return sorted(_FAMILIES)


def family(name: str) -> type[Family]:
    """The declaration `model.name` names, or a one-line error listing the known ones."""
    if name not in names():
        raise ConfigError(f"model.name={name} is not a model family; choose one of: {', '.join(names())}")
    return _FAMILIES[name]


def model_keys(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The network's keys in a model config (not its name, the core keys nor the head)."""
    return {k: v for k, v in dict(model_cfg).items() if k not in ("name", "likelihood") and k not in CORE_DEFAULTS}


def declared(model_cfg: Mapping[str, Any]) -> Family:
    """The declaration of a model config (its defaults completing it); an unknown key is one line."""
    found = family(model_cfg["name"])
    keys = model_keys(model_cfg)
    fields = [f.name for f in dataclasses.fields(found)]
    unknown = sorted(set(keys) - set(fields))
    if unknown:
        raise ConfigError(f"model.{unknown[0]} is not an option of model={found.NAME}; its options are: {', '.join(fields)}")
    return found(**keys)


def checked(model_cfg: Mapping[str, Any], image_shape: tuple[int, int, int], likelihood: str) -> Family:
    """The declaration of a model config, checked for this data and head."""
    keys = declared(model_cfg)
    keys.check(tuple(image_shape), likelihood)
    return keys


def build_model(model_cfg: Mapping[str, Any], image_shape: tuple[int, int, int], distribution, num_classes: int | None = None) -> nn.Module:
    """Check and instantiate the network `model_cfg['name']` names. `num_classes` is used only
    when `model_cfg['conditional']` is true, and must then be >= 2."""
    keys = checked(model_cfg, image_shape, distribution.name)
    if model_cfg.get("conditional"):
        require_labels(num_classes)
        return keys.network()(tuple(image_shape), distribution, keys, num_classes=int(num_classes))
    return keys.network()(tuple(image_shape), distribution, keys)


def distribution_from_config(model_cfg: Mapping[str, Any], bits: int):
    """The head a model config asks for on `bits`-bit data: `model.likelihood` and its options,
    checked against the family and the data (autoreg.likelihoods.choose: one line if they do not fit)."""
    found = family(model_cfg["name"])
    name, options = choose(model_cfg, found.NAME, found.LIKELIHOODS, bits)
    return distribution_for(bits, name, **options)


def current_config(model_cfg: Mapping[str, Any], bits: int) -> dict[str, Any]:
    """A model config as composing it gives it today, from a checkpoint of any autoreg release
    (autoreg.likelihoods.as_node: the head as its own node)."""
    return as_node(model_cfg, family(model_cfg["name"]).LIKELIHOODS, bits)


def register_configs() -> None:
    """Each family's `config()` as Hydra's `model=<NAME>`, each head as `model/likelihood=<head>`."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name in names():
        store.store(group="model", name=name, node=family(name).config())
    for name, node in configs().items():
        store.store(group="model/likelihood", name=name, node=node)
