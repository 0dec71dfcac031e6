"""The GPU path in one command: training speed (gpu_speed.py), then a local parallel sweep with one
and with four jobs per GPU.

Prepared for a lent GPU machine (no internet: the bundled digits are the data); about 8 minutes
on one GPU:

    .venv/bin/python experiments/benchmarks/gpu_sweep.py --out experiments/benchmarks/gpu_sweep.md

(1) `gpu_speed.py --seconds 60`: the default PixelCNN in eager fp32, bf16-mixed and bf16-mixed +
    torch.compile (its table also goes to gpu_speed.md beside `--out`).
(2) `python train.py -m model.kernel=3,5,7,9 hydra/launcher=parallel trainer=gpu
    trainer.max_steps=<--steps>` (the default model, validation, checkpoints, sample grids and
    TensorBoard off so that training is what is timed), once with hydra.launcher.jobs_per_gpu=1
    and once with 4. Per sweep: the wall time of the whole command (start-up, data, every job),
    images/s over it (jobs x steps x batch / wall time), and per job the GPU it leased (from its
    log) and its own training images/s (metrics.json's train_seconds).

`--cpu-smoke` runs the same on the CPU in a few minutes (a tiny model, a few steps,
trainer.accelerator=cpu, so no leases) to try the script itself; its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from common import write_results
from gpu_speed import QUIET

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
KERNELS = "3,5,7,9"
LEASED = re.compile(r"GPU (\d+) leased for this job")
KERNEL = re.compile(r"model\.kernel=(\d+)")
SMOKE_MODEL = ["model.channels=8", "model.depth=1"]


def run_gpu_speed(args: argparse.Namespace) -> int:
    """gpu_speed.py in its own process, its table printed as it goes."""
    cmd = [sys.executable, str(HERE / "gpu_speed.py")]
    if args.cpu_smoke:
        cmd += [*SMOKE_MODEL, "--accelerator", "cpu", "--seconds", "3", "--skip", "1", "--configs", "fp32"]
    else:
        cmd += ["--seconds", str(args.speed_seconds)]
    if args.out:
        cmd += ["--out", str(Path(args.out).with_name("gpu_speed.md"))]
    print("$", " ".join(cmd[1:]), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


def run_sweep(args: argparse.Namespace, jobs_per_gpu: int, sweep_dir: Path) -> list[str]:
    """One sweep of the four kernels; its table rows (the sweep, then each job)."""
    device = ["trainer.accelerator=cpu", *SMOKE_MODEL] if args.cpu_smoke else ["trainer=gpu"]
    cmd = [
        sys.executable, str(ROOT / "train.py"), "-m", f"model.kernel={KERNELS}", "hydra/launcher=parallel",
        f"hydra.launcher.jobs_per_gpu={jobs_per_gpu}", *device, *QUIET, f"trainer.max_steps={args.steps}",
        f"data.batch_size={args.batch_size}", f"hydra.sweep.dir={sweep_dir}",
    ]
    print("$", " ".join(["train.py", *cmd[2:]]), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    found = sweep_dir.iterdir() if sweep_dir.is_dir() else ()
    jobs = sorted((p for p in found if p.is_dir() and not p.name.startswith(".")), key=lambda p: int(p.name.split("_")[0]))
    rows, images = [], 0
    for job in jobs:
        metrics_file, log_file = job / "metrics.json", job / "train.log"
        name = "model.kernel=" + KERNEL.search(job.name).group(1)
        leased = LEASED.search(log_file.read_text()) if log_file.is_file() else None
        gpu = leased.group(1) if leased else "none (CPU)" if args.cpu_smoke else "none"
        if not metrics_file.is_file():
            rows.append(f"| | {name} | GPU {gpu} | FAILED | |")
            continue
        metrics = json.loads(metrics_file.read_text())
        done = int(metrics["global_step"]) * args.batch_size
        images += done
        rows.append(f"| | {name} | GPU {gpu} | {metrics['train_seconds']:.1f} s | {done / metrics['train_seconds']:.0f} |")
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
    status = "" if proc.returncode == 0 else f" (exit status {proc.returncode})"
    head = f"| jobs_per_gpu={jobs_per_gpu}{status} | {len(jobs)} jobs | | {wall:.1f} s wall | {images / wall:.0f} |"
    return [head, *rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps per sweep job")
    parser.add_argument("--batch-size", type=int, default=64, help="data.batch_size of the sweep jobs")
    parser.add_argument("--speed-seconds", type=int, default=60, help="gpu_speed.py's training time per configuration")
    parser.add_argument("--jobs-per-gpu", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--cpu-smoke", action="store_true", help="try the script on the CPU: tiny model, a few steps, no GPU")
    parser.add_argument("--sweep-root", default=str(ROOT / "outputs" / "gpu_sweep"), help="the sweeps' dirs go under this")
    parser.add_argument("--out", default=None, help="also write the sweep table (markdown) here, gpu_speed.py's beside it")
    args = parser.parse_args()
    if args.cpu_smoke:
        args.steps = min(args.steps, 3)
    else:
        import torch

        if not torch.cuda.is_available():
            sys.exit("error: no CUDA GPU here; run on a GPU machine, or try the script with --cpu-smoke")
    failed = run_gpu_speed(args)
    sweeps = Path(args.sweep_root).absolute() / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    lines = [
        "| sweep | job | device | time | images/s |",
        "|---|---|---|---|---|",
    ]
    for jobs_per_gpu in args.jobs_per_gpu:
        lines += run_sweep(args, jobs_per_gpu, sweeps / f"jobs_per_gpu_{jobs_per_gpu}")
        print("\n".join(lines), flush=True)
    setup = (f"`model.kernel={KERNELS}`, {args.steps} steps of batch {args.batch_size} per job, "
             f"{'the CPU (--cpu-smoke: the numbers mean nothing)' if args.cpu_smoke else _gpu_names()}; "
             "a sweep's images/s is all its jobs' training images over its wall time (start-up included); "
             f"a job's is its own training time's; sweep dirs under {sweeps}")
    print(setup)
    write_results(args.out, "Local parallel sweeps on the GPU, jobs_per_gpu", [*lines, "", setup])
    if failed or any("FAILED" in line or "exit status" in line for line in lines):
        sys.exit("error: a step failed (see above)")


def _gpu_names() -> str:
    import torch

    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return f"{len(names)} GPU(s): {', '.join(names)}, torch {torch.__version__}"


if __name__ == "__main__":
    main()
