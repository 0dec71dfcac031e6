"""What a reader of the training path holds: every autoreg module a tiny default `train.py` run
imports, with its lines, in this checkout and in others side by side (a column per `--tree`).

    git worktree add --detach /tmp/before <rev>
    .venv/bin/python experiments/benchmarks/training_path.py --tree /tmp/before . --out experiments/benchmarks/training_path.md

The run is `train.py` with the default config on the bundled digits, two steps, one validation
batch and one sample; the modules are read from `sys.modules` when it ends.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import write_results

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = ["data.source=bundled", "trainer.max_steps=2", "trainer.max_epochs=-1", "trainer.limit_val_batches=1",
             "callbacks.samples.num=1", "callbacks.progress_bar.refresh_rate=0"]
PROBE = """
import json, runpy, sys
sys.argv = [sys.argv[1], *sys.argv[2:]]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as stop:
    if stop.code not in (None, 0):
        raise
files = {name: getattr(m, "__file__", None) for name, m in list(sys.modules.items()) if name.split(".")[0] == "autoreg"}
print("MODULES " + json.dumps({n: f for n, f in files.items() if f}))
"""


def imported_modules(tree: Path) -> dict[str, int]:
    """{module: lines} of the autoreg modules a tiny default training run in `tree` imports."""
    with tempfile.TemporaryDirectory() as run_dir:
        env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-c", PROBE, str(tree / "train.py"), *OVERRIDES,
                               f"hydra.run.dir={run_dir}/run"], cwd=run_dir, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("MODULES ")]
    if proc.returncode or not lines:
        sys.exit(f"error: the training run in {tree} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    files = json.loads(lines[-1].removeprefix("MODULES "))
    return {name: len(Path(path).read_text().splitlines()) for name, path in sorted(files.items())}


def commit(tree: Path) -> str:
    """The tree's commit, marked + where it has uncommitted changes."""
    rev = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
    return (rev or str(tree)) + ("+" if dirty.strip() else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, nargs="+", default=[ROOT], help="the checkouts to measure (default: this one)")
    parser.add_argument("--out")
    args = parser.parse_args()
    trees = [imported_modules(tree.resolve()) for tree in args.tree]
    names = sorted(set().union(*trees))
    lines = ["| module | " + " | ".join(f"lines at {commit(tree)}" for tree in args.tree) + " |", "|---|" + "---:|" * len(trees),
             *(f"| {name} | " + " | ".join(f"{t[name]:,}" if name in t else "" for t in trees) + " |" for name in names),
             "| **modules, lines** | " + " | ".join(f"**{len(t)}, {sum(t.values()):,}**" for t in trees) + " |"]
    print("\n".join(lines))
    write_results(args.out, "The autoreg modules a tiny default training run imports", lines)


if __name__ == "__main__":
    main()
