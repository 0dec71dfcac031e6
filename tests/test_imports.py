"""The package's import graph: no module of src/autoreg imports one that imports it back, at
module level or inside a function (a cycle means two rooms that are really one); and a training
run reads in only its own family's network and layers."""
from __future__ import annotations

import ast
import sys

from conftest import ROOT

SRC = ROOT / "src"


def module_name(path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path, modules: set[str]) -> set[str]:
    """The autoreg modules `path` imports anywhere in it: `from autoreg.x import y` is autoreg.x.y
    where that is a module, else autoreg.x."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = {f"{node.module}.{alias.name}" for alias in node.names}
            found |= names & modules
            if names - modules:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found & modules


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_cycles_finds_a_cycle_and_only_real_ones():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_autoreg_modules():
    paths = {module_name(p): p for p in (SRC / "autoreg").rglob("*.py")}
    graph = {name: imports(path, set(paths)) - {name} for name, path in paths.items()}
    assert len(graph) > 40 and graph["autoreg.cli"]  # the scan sees the package
    assert cycles(graph) == []


def test_a_pixelcnn_run_reads_in_no_other_familys_network_or_layers():
    """What experiments/benchmarks/training_path.py measures: the default (PixelCNN) training run
    imports PixelCNN's network and layers, and no other family's."""
    sys.path.insert(0, str(ROOT / "experiments" / "benchmarks"))
    from training_path import imported_modules

    modules = imported_modules(ROOT)
    assert {"autoreg.cli", "autoreg.models.pixelcnn", "autoreg.nn.masked"} <= set(modules)
    others = {"autoreg.models.pixelrnn", "autoreg.models.pixelcnn_pp", "autoreg.models.gated_pixelcnn",
              "autoreg.models.pixelsnail", "autoreg.nn.recurrent", "autoreg.nn.skew", "autoreg.nn.shifted",
              "autoreg.nn.chunks", "autoreg.sample_cli", "autoreg.compression"}
    assert others.isdisjoint(modules)
