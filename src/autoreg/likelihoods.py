"""The likelihood heads' registry: which data each models, how it draws, its options, and the
class that implements it (autoreg.distributions, imported only to build a head).

torch-free, so the config check answers a bad head before torch is imported. `model.likelihood`
is a node (name + options) chosen from the config group `model/likelihood` (`configs`):

    model/likelihood=auto               # the family's first head that models the data's bits
    model/likelihood=bernoulli          # 1-bit data (binarized MNIST)
    model/likelihood=categorical        # 8-bit data: a 256-way softmax per sub-pixel
    model/likelihood=logistic_mixture   # 8-bit data: PixelCNN++'s mixture, model.likelihood.nr_logistic_mix components

A new head is one class in autoreg.distributions and one entry in `HEADS`.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autoreg.checks import require_int
from autoreg.errors import ConfigError


@dataclass(frozen=True)
class Head:
    bits: int  # bits per sub-pixel of the data it models
    implementation: str  # "module:Class"
    joint: bool = False  # draws whole pixels (a network that sees earlier pixels only), not channel by channel
    options: dict[str, int] = field(default_factory=dict)  # its model.<key> options (positive integers) and defaults


HEADS: dict[str, Head] = {
    "bernoulli": Head(1, "autoreg.distributions:Bernoulli"),
    "categorical": Head(8, "autoreg.distributions:Categorical"),
    "logistic_mixture": Head(8, "autoreg.distributions:DiscretizedLogisticMixture", joint=True,
                             options={"nr_logistic_mix": 10}),
}
DEFAULT_FOR_BITS: dict[int, str] = {1: "bernoulli", 8: "categorical"}  # when no head is named
OPTION_KEYS: tuple[str, ...] = tuple(sorted({key for head in HEADS.values() for key in head.options}))


def configs() -> dict[str, dict[str, Any]]:
    """The config group `model/likelihood`: `auto` (no options: the registry's defaults) and each
    head with its options' defaults."""
    return {"auto": {"name": "auto"}, **{name: {"name": name, **head.options} for name, head in HEADS.items()}}


def choose(model_cfg: Mapping[str, Any], family: str, likelihoods: tuple[str, ...], bits: int) -> tuple[str, dict[str, Any]]:
    """(head name, its options) for a model config of `family` (which can output `likelihoods`) on
    `bits`-bit data: `model.likelihood`'s name (`auto` or absent: the family's first head for such
    data) and its options. Anything that cannot work is one line naming the key."""
    node = model_cfg.get("likelihood") or {"name": "auto"}
    if not isinstance(node, Mapping):  # `model.likelihood=<name>`, a string where the node belongs
        raise ConfigError(f"model.likelihood={node}: the head is chosen as a config group; write model/likelihood={node} "
                          "(and its options as model.likelihood.<option>=...)")
    name = node.get("name") or "auto"
    fits = [n for n in likelihoods if HEADS[n].bits == bits]
    if name == "auto":
        if not fits:
            raise ConfigError(
                f"model={family} cannot model {bits}-bit data (data.bits={bits}); its likelihoods are: "
                + ", ".join(f"{n} ({HEADS[n].bits}-bit)" for n in likelihoods)
            )
        name = fits[0]
    elif name not in likelihoods:
        raise ConfigError(f"model/likelihood={name} is not a likelihood of model={family}; choose one of: auto, {', '.join(likelihoods)}")
    elif HEADS[name].bits != bits:
        raise ConfigError(
            f"model/likelihood={name} models {HEADS[name].bits}-bit data, but data.bits={bits}; "
            + (f"for {bits}-bit data model={family} takes model/likelihood=auto, {', '.join(fits)}" if fits
               else f"model={family} has no likelihood for {bits}-bit data")
        )
    options = {key: value for key, value in node.items() if key != "name"}
    stray = sorted(set(options) - set(HEADS[name].options))
    if stray:
        takes = ", ".join(HEADS[name].options) or "none"
        raise ConfigError(f"model.likelihood.{stray[0]} is not an option of the {name} likelihood (its options: {takes}); remove it")
    for key, value in options.items():
        require_int(f"model.likelihood.{key}", value)
    return name, options


def as_node(model_cfg: Mapping[str, Any], likelihoods: tuple[str, ...], bits: int) -> dict[str, Any]:
    """`model_cfg` with `likelihood` as its node, as composing the config gives it today. A
    checkpoint written when the head was a name (`likelihood: bernoulli`) with its options as flat
    model keys (`nr_logistic_mix: 10`) reads as `likelihood: {name: bernoulli}`, so older runs
    resume and older shipped models load; a config already in this form is returned as it is."""
    model = dict(model_cfg)
    if isinstance(model.get("likelihood"), Mapping):
        return model
    name = model.pop("likelihood", None) or "auto"
    flat = {key: model.pop(key) for key in OPTION_KEYS if key in model}
    head = name if name != "auto" else next((n for n in likelihoods if HEADS[n].bits == bits), None)
    taken = HEADS[head].options if head in HEADS else {}
    if name == "auto":  # the auto node carries only what differs from the registry's defaults
        options = {key: value for key, value in flat.items() if key in taken and value != taken[key]}
    else:
        options = {**taken, **{key: value for key, value in flat.items() if key in taken}}
    model["likelihood"] = {"name": name, **options}
    return model


def distribution_for(bits: int, likelihood: str | None = None, **options):
    """The head `likelihood` names, built with `options` (e.g. nr_logistic_mix; the registry's
    defaults otherwise); None: the default for `bits`-bit data. A head that cannot model `bits`-bit
    data is a ValueError."""
    if likelihood is None:
        if bits not in DEFAULT_FOR_BITS:
            raise ValueError(f"no likelihood head for {bits}-bit data; allowed: {', '.join(map(str, DEFAULT_FOR_BITS))}")
        likelihood = DEFAULT_FOR_BITS[bits]
    if likelihood not in HEADS:
        raise ValueError(f"likelihood={likelihood!r} is not a head; choose one of: {', '.join(HEADS)}")
    head = HEADS[likelihood]
    if head.bits != bits:
        raise ValueError(f"the {likelihood} head models {head.bits}-bit data, not {bits}-bit data")
    module, _, name = head.implementation.partition(":")
    return getattr(importlib.import_module(module), name)(**{**head.options, **options})
