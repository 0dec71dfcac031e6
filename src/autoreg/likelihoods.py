"""The likelihood heads by name: which data each models and which model config keys it takes.

torch-free, so the config check answers a bad `model.likelihood` before torch is imported; the
heads themselves (the NLL and the samplers' draws) are in autoreg.distributions.

    model.likelihood=auto               # the family's first head that models the data's bits
    model.likelihood=bernoulli          # 1-bit data (binarized MNIST)
    model.likelihood=categorical        # 8-bit data: a 256-way softmax per sub-pixel
    model.likelihood=logistic_mixture   # 8-bit data: PixelCNN++'s mixture, model.nr_logistic_mix components
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autoreg.config import require_int
from autoreg.errors import ConfigError

# name -> bits per sub-pixel of the data the head models
BITS: dict[str, int] = {"bernoulli": 1, "categorical": 8, "logistic_mixture": 8}
# name -> the model config keys of the head's options (each a positive integer) and their defaults
OPTIONS: dict[str, dict[str, int]] = {"bernoulli": {}, "categorical": {}, "logistic_mixture": {"nr_logistic_mix": 10}}
# the heads that model a pixel's channels jointly (autoreg.distributions: `joint = True`)
JOINT: tuple[str, ...] = ("logistic_mixture",)
OPTION_KEYS: tuple[str, ...] = tuple(sorted({key for keys in OPTIONS.values() for key in keys}))


def option_defaults(name: str) -> dict[str, int]:
    """The options head `name` takes, with their defaults."""
    return dict(OPTIONS[name])


def choose(model_cfg: Mapping[str, Any], family: str, likelihoods: tuple[str, ...], bits: int) -> tuple[str, dict[str, Any]]:
    """(head name, its options) for a model config of `family` (which can output `likelihoods`) on
    `bits`-bit data: `model.likelihood` (`auto` or absent: the family's first head for such data),
    with its options from the model config. Anything that cannot work is one line naming the key."""
    name = model_cfg.get("likelihood") or "auto"
    fits = [n for n in likelihoods if BITS.get(n) == bits]
    if name == "auto":
        if not fits:
            raise ConfigError(
                f"model={family} cannot model {bits}-bit data (data.bits={bits}); its likelihoods are: "
                + ", ".join(f"{n} ({BITS[n]}-bit)" for n in likelihoods)
            )
        name = fits[0]
    elif name not in likelihoods:
        raise ConfigError(f"model.likelihood={name} is not a likelihood of model={family}; choose one of: auto, {', '.join(likelihoods)}")
    elif BITS[name] != bits:
        raise ConfigError(
            f"model.likelihood={name} models {BITS[name]}-bit data, but data.bits={bits}; "
            + (f"for {bits}-bit data model={family} takes model.likelihood=auto, {', '.join(fits)}" if fits
               else f"model={family} has no likelihood for {bits}-bit data")
        )
    # an option none of the family's heads takes is a mistake; one of another of its heads waits unused
    stray = [key for key in OPTION_KEYS if key in model_cfg and not any(key in OPTIONS[n] for n in likelihoods)]
    if stray:
        raise ConfigError(f"model.{stray[0]} is an option of another likelihood, not of model={family}'s ({', '.join(likelihoods)}); remove it")
    options = {key: model_cfg[key] for key in OPTIONS[name] if key in model_cfg}
    for key, value in options.items():
        require_int(f"model.{key}", value)
    return name, options
