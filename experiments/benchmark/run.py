"""Train (or resume) one benchmark run and record what it cost.

    .venv/bin/python experiments/benchmark/run.py <name> [train.py overrides...]

The run lives in experiments/benchmark/runs/<name> (its small checkpoints are committed, so the
next machine resumes it): a new run takes the overrides; an existing one resumes from its
last.ckpt with the overrides it was started with (.hydra/overrides.yaml) plus any given here.
Each segment (start to stop, SIGTERM stops it cleanly) appends a row to segments.csv: wall and
CPU seconds (this process's children, user + sys), torch threads, the CPU model, the step reached.
"""
from __future__ import annotations

import csv
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
THREADS = os.environ.get("OMP_NUM_THREADS", "1")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def reached_step(run_dir: Path) -> int | None:
    import torch

    last = run_dir / "checkpoints" / "last.ckpt"
    return torch.load(last, map_location="cpu", weights_only=True)["global_step"] if last.is_file() else None


def main(name: str, extra: list[str]) -> int:
    run_dir = HERE / "runs" / name
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if overrides_file.is_file():
        args = [*yaml.safe_load(overrides_file.read_text()), *extra, f"resume={run_dir.relative_to(ROOT)}"]
        args = [a for a in args if not a.startswith("hydra.run.dir=")]
    else:
        args = [*extra, f"hydra.run.dir={run_dir.relative_to(ROOT)}"]
    started, start = datetime.now(timezone.utc), time.perf_counter()
    child = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": THREADS})
    signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    code = child.wait()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    row = {"run": name, "started": started.isoformat(timespec="seconds"), "wall_s": round(time.perf_counter() - start),
           "cpu_s": round(usage.ru_utime + usage.ru_stime), "threads": THREADS, "cpu": cpu_model(),
           "step": reached_step(run_dir), "exit": code, "args": " ".join(args)}
    segments = HERE / "segments.csv"
    new = not segments.is_file()
    with segments.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
    return code


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: run.py <name> [train.py overrides...]")
    sys.exit(main(sys.argv[1], sys.argv[2:]))
