"""Model families: pure nn.Modules mapping an image batch (+ label) to likelihood parameters.

A family is one file in this package plus one conf/model/<name>.yaml. The file defines the
network and a module-level `FAMILY = Family(...)` that says everything the core needs:

- `model`: the class, called as `model(image_shape, distribution, num_classes=None, **keys)`, where
  `keys` are the config's model keys (all but `name`, `compile` and `conditional`), and
  `num_classes` is the data's class count for `model.conditional=true` (None: unconditional);
  `forward(x, y=None) -> params`;
- `check(keys)`: raises `autoreg.config.ConfigError` naming `model.<key>`, the value and what is
  allowed, for any value the class cannot take (run before any data is read, and on every build);
- `likelihoods`: the names of the heads (autoreg.distributions) it can output; `model.likelihood=auto`
  takes the first that models the data's bits (autoreg.likelihoods);
- optionally, on the class, `fast_stepper(batch, device, dtype, y) -> autoreg.sampling.Stepper`:
  its exact cached sampler (without it, sampling is naive only).

The files are found here: no core file names a family. A bad value must be answered before torch
is imported (seconds on a small machine), so the config check reads each family from its source
(`spec`): `FAMILY`'s literal arguments, the constructor's defaults, and `check` run with only the
file's literal constants and its imports from torch-free modules (`TORCH_FREE`). A `check` that
needs more still works: its family is then imported to run it.
"""
from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoreg.config import ConfigError, require_labels
from autoreg.likelihoods import OPTION_KEYS

if TYPE_CHECKING:
    from torch import nn

# Config keys every family's config has that are not constructor arguments.
CORE_KEYS = ("name", "compile", "conditional", "likelihood")
LIKELIHOODS = ("bernoulli", "categorical")
# Modules a family's `check` may import from and still run without torch.
TORCH_FREE = ("__future__", "collections.abc", "typing", "autoreg.config", "autoreg.errors")


@dataclass(frozen=True)
class Family:
    name: str  # `model.name`, the file name of conf/model/<name>.yaml
    model: type[nn.Module]
    check: Callable[[Mapping[str, Any]], None]
    likelihoods: tuple[str, ...] = LIKELIHOODS

    @property
    def defaults(self) -> dict[str, Any]:
        """The constructor's config keys and their defaults."""
        params = inspect.signature(self.model).parameters
        return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty and k != "num_classes"}


@dataclass(frozen=True)
class Spec:
    """What the config check needs of a family, read from its file without importing it."""

    name: str
    module: str
    defaults: dict[str, Any]
    check: Callable[[Mapping[str, Any]], None]
    likelihoods: tuple[str, ...] = field(default=LIKELIHOODS)
    torch_free: bool = True  # False: `check` imports the family to run


def _family_call(tree: ast.Module) -> ast.Call | None:
    for node in tree.body:
        if (isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["FAMILY"]
                and isinstance(node.value, ast.Call)):
            return node.value
    return None


def _constructor_defaults(tree: ast.Module, class_name: str) -> dict[str, Any]:
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    args = init.args
    pairs = list(zip(args.args[len(args.args) - len(args.defaults):], args.defaults))
    pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
    return {a.arg: ast.literal_eval(d) for a, d in pairs if a.arg != "num_classes"}


def _torch_free_check(tree: ast.Module, path: Path) -> Callable | None:
    """`check` compiled with the file's literal constants and torch-free imports; None when it
    uses any other module-level name."""
    body, names = [], set(dir(builtins))
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module in TORCH_FREE:
            body.append(node)
            names |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            try:
                ast.literal_eval(node.value)
            except ValueError:
                continue
            body.append(node)
            names |= {t.id for t in node.targets}
    check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    if check is None:
        return None
    local = {a.arg for a in check.args.args} | {n.id for n in ast.walk(check) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    used = {n.id for n in ast.walk(check) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    if used - local - names:
        return None
    namespace: dict[str, Any] = {}
    exec(compile(ast.Module(body=[*body, check], type_ignores=[]), str(path), "exec"), namespace)
    return namespace["check"]


def _read_spec(module: str, path: Path) -> Spec | None:
    tree = ast.parse(path.read_text(), str(path))
    call = _family_call(tree)
    if call is None:
        return None
    kwargs = {k.arg: k.value for k in call.keywords}
    name = ast.literal_eval(kwargs["name"])
    light = _torch_free_check(tree, path)
    likelihoods = tuple(ast.literal_eval(kwargs["likelihoods"])) if "likelihoods" in kwargs else LIKELIHOODS
    defaults = _constructor_defaults(tree, kwargs["model"].id)
    return Spec(name, module, defaults, light or (lambda keys: family(name).check(keys)), likelihoods, light is not None)


def _read_specs() -> dict[str, Spec]:
    specs = {}
    for info in pkgutil.iter_modules(__path__):
        found = _read_spec(f"{__name__}.{info.name}", Path(__path__[0]) / f"{info.name}.py")
        if found is not None:
            specs[found.name] = found
    return specs


_SPECS: dict[str, Spec] = {}
_FAMILIES: dict[str, Family] = {}


def names() -> list[str]:
    """Every family's `model.name`."""
    if not _SPECS:
        _SPECS.update(_read_specs())
    return sorted(_SPECS)


def spec(name: str) -> Spec:
    """The family `model.name` names, read without importing it, or a one-line error listing the
    known ones."""
    if name not in names():
        raise ConfigError(f"model.name={name} is not a model family; choose one of: {', '.join(sorted(_SPECS))}")
    return _SPECS[name]


def family(name: str) -> Family:
    """The family `model.name` names (its file imported), or a one-line error."""
    if name not in _FAMILIES:
        found = spec(name)
        _FAMILIES[name] = importlib.import_module(found.module).FAMILY
    return _FAMILIES[name]


def model_keys(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor's keyword arguments in a model config (not the likelihood head's options,
    autoreg.likelihoods)."""
    return {k: v for k, v in dict(model_cfg).items() if k not in CORE_KEYS and k not in OPTION_KEYS}


def checked_keys(found: Family | Spec, keys: Mapping[str, Any]) -> dict[str, Any]:
    """`keys` completed with the constructor's defaults, after the family's check; an unknown key
    is one line."""
    defaults = found.defaults
    unknown = sorted(set(keys) - set(defaults))
    if unknown:
        raise ConfigError(f"model.{unknown[0]} is not an option of model={found.name}; its options are: {', '.join(defaults)}")
    full = {**defaults, **keys}
    found.check(full)
    return full


def build_model(model_cfg: Mapping[str, Any], image_shape: tuple[int, int, int], distribution, num_classes: int | None = None) -> nn.Module:
    """Check and instantiate the network `model_cfg['name']` names. `num_classes` is used only
    when `model_cfg['conditional']` is true, and must then be >= 2."""
    found = family(model_cfg["name"])
    keys = checked_keys(found, model_keys(model_cfg))
    if model_cfg.get("conditional"):
        require_labels(num_classes)
        return found.model(tuple(image_shape), distribution, num_classes=int(num_classes), **keys)
    return found.model(tuple(image_shape), distribution, **keys)
