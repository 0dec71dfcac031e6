"""How long `python train.py <bad value>` takes to answer, against what it would cost to import
torch and Lightning first (the config checks run before either: autoreg.families).

    .venv/bin/python experiments/benchmarks/time_to_error.py --repeats 5 --out experiments/benchmarks/time_to_error.md

Each row is the median wall time of `--repeats` fresh processes, the rows interleaved (one round
runs every row once), so machine load moves them alike.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Machine, write_results

ROOT = Path(__file__).resolve().parents[2]
ROWS = {
    "train.py model.kernel=4 (a family's key)": ["train.py", "model.kernel=4"],
    "train.py model=pixelrnn model.cell=lstmm": ["train.py", "model=pixelrnn", "model.cell=lstmm"],
    "train.py data.batch_size=0 (a generic key)": ["train.py", "data.batch_size=0"],
    "train.py model=pixelrnnn (a group option)": ["train.py", "model=pixelrnnn"],
    "train.py model=gated_pixelcnn data=cifar10 model.channels=16 (channels per colour)":
        ["train.py", "model=gated_pixelcnn", "data=cifar10", "model.channels=16"],
    "train.py model=pixelcnn_pp data=cifar10 model/likelihood=categorical (a head on RGB)":
        ["train.py", "model=pixelcnn_pp", "data=cifar10", "model/likelihood=categorical"],
    "train.py model.kernal=5 (a key the config does not have)": ["train.py", "model.kernal=5"],
    "train.py model.likelihood=bernoulli (the head given as a key, not the group)": ["train.py", "model.likelihood=bernoulli"],
    "train.py model=pixelcnn_pp model.nr_logistic_mix=5 (a head's option as a model key)":
        ["train.py", "model=pixelcnn_pp", "model.nr_logistic_mix=5"],
    "baseline: python -c 'import torch'": ["-c", "import torch"],
    "baseline: python -c 'import pytorch_lightning'": ["-c", "import pytorch_lightning"],
}


def timed(args: list[str], cwd: str) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    return elapsed, (proc.stderr.strip().splitlines() or [""])[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in ROWS}
    answers: dict[str, str] = {}
    machine = Machine()
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(args.repeats):
            for name, argv in ROWS.items():
                argv = [str(ROOT / a) if a.endswith(".py") else a for a in argv]
                elapsed, answers[name] = timed([*argv, f"hydra.run.dir={cwd}/run"] if argv[0].endswith(".py") else argv, cwd)
                times[name].append(elapsed)
        assert not (Path(cwd) / "run").exists(), "a bad value left a run dir behind"
    lines = ["| command | median s | min s | answer |", "|---|---:|---:|---|"]
    for name in ROWS:
        answer = answers[name] if answers[name].startswith("error:") else ""
        lines.append(f"| `{name}` | {statistics.median(times[name]):.2f} | {min(times[name]):.2f} | {answer} |")
    lines += ["", f"{args.repeats} interleaved rounds; no run dir was left behind. {machine.line()}"]
    print("\n".join(lines))
    write_results(args.out, "Time to a config error", lines)


if __name__ == "__main__":
    main()
