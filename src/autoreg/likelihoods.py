"""The likelihood heads' registry: which data each models, how it draws, its options, and the
class that implements it (autoreg.distributions, imported only to build a head).

torch-free, so the config check answers a bad `model.likelihood` before torch is imported.

    model.likelihood=auto               # the family's first head that models the data's bits
    model.likelihood=bernoulli          # 1-bit data (binarized MNIST)
    model.likelihood=categorical        # 8-bit data: a 256-way softmax per sub-pixel
    model.likelihood=logistic_mixture   # 8-bit data: PixelCNN++'s mixture, model.nr_logistic_mix components

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


def choose(model_cfg: Mapping[str, Any], family: str, likelihoods: tuple[str, ...], bits: int) -> tuple[str, dict[str, Any]]:
    """(head name, its options) for a model config of `family` (which can output `likelihoods`) on
    `bits`-bit data: `model.likelihood` (`auto` or absent: the family's first head for such data),
    with its options from the model config. Anything that cannot work is one line naming the key."""
    name = model_cfg.get("likelihood") or "auto"
    fits = [n for n in likelihoods if HEADS[n].bits == bits]
    if name == "auto":
        if not fits:
            raise ConfigError(
                f"model={family} cannot model {bits}-bit data (data.bits={bits}); its likelihoods are: "
                + ", ".join(f"{n} ({HEADS[n].bits}-bit)" for n in likelihoods)
            )
        name = fits[0]
    elif name not in likelihoods:
        raise ConfigError(f"model.likelihood={name} is not a likelihood of model={family}; choose one of: auto, {', '.join(likelihoods)}")
    elif HEADS[name].bits != bits:
        raise ConfigError(
            f"model.likelihood={name} models {HEADS[name].bits}-bit data, but data.bits={bits}; "
            + (f"for {bits}-bit data model={family} takes model.likelihood=auto, {', '.join(fits)}" if fits
               else f"model={family} has no likelihood for {bits}-bit data")
        )
    # an option none of the family's heads takes is a mistake; one of another of its heads waits unused
    stray = [key for key in OPTION_KEYS if key in model_cfg and not any(key in HEADS[n].options for n in likelihoods)]
    if stray:
        raise ConfigError(f"model.{stray[0]} is an option of another likelihood, not of model={family}'s ({', '.join(likelihoods)}); remove it")
    options = {key: model_cfg[key] for key in HEADS[name].options if key in model_cfg}
    for key, value in options.items():
        require_int(f"model.{key}", value)
    return name, options


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
