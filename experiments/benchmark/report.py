"""The benchmark table and curve from the runs under experiments/benchmark/runs.

    .venv/bin/python experiments/benchmark/report.py [--evaluate]   # -> table.md, curve.png

CPU-hours: the segments of each run (segments.csv, written by run.py) in order; a step's CPU time
is interpolated linearly inside the segment that reached it. --evaluate: the test NLL of each run's
best.ckpt on the whole 10,000-image test split (binarized MNIST, the fixed binarization), for the
evaluated weights (state_dict: the weight average where optim.ema_decay is set) and, where the
checkpoint keeps them, the trained weights (current_model_state); cached in runs/<name>/test_nll.json
by the checkpoint's step.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA_ROOT = str(HERE.parents[1].parent / "shared" / "data" / "binarized_mnist")
# the published test NLL (nats) for the architecture each preset reproduces
PAPER = {"paper_mnist_pixelcnn": ("81.30", "PixelRNN paper (arXiv 1601.06759), table 4"),
         "paper_mnist_row_lstm": ("80.54", "PixelRNN paper, table 4"),
         "paper_mnist_diagonal_bilstm": ("79.20", "PixelRNN paper, table 4"),
         "paper_mnist_gated_pixelcnn": ("none", "on this benchmark (pytorch-generative's 81.50 is dynamically binarized MNIST)"),
         "paper_mnist_pixelcnn_pp": ("none", "on this benchmark (the PixelCNN++ paper reports CIFAR-10 only)"),
         "paper_mnist_pixelsnail": ("none", "on this benchmark (pytorch-generative's 78.61 is dynamically binarized MNIST)")}
TRAIN_IMAGES = 50000


def cpu_hours_at(segments: list[dict], steps: list[int]) -> list[float]:
    """CPU-hours spent when each of `steps` was reached."""
    points, cpu = [(0, 0.0)], 0.0
    for row in segments:
        cpu += int(row["cpu_s"]) / 3600
        points.append((int(row["step"]), cpu))
    out = []
    for s in steps:
        for (s0, c0), (s1, c1) in zip(points, points[1:]):
            if s0 <= s <= s1:
                out.append(c0 + (c1 - c0) * (s - s0) / max(1, s1 - s0))
                break
        else:
            out.append(math.nan)  # logged after the last recorded segment (a segment still running)
    return out


def test_nll(run_dir: Path) -> dict:
    """Test NLL (nats, mean over the whole split) of best.ckpt's weight sets; cached by step."""
    import pytorch_lightning as pl
    import torch

    from autoreg.build import build_datamodule
    from autoreg.module import AutoregressiveModule

    best = run_dir / "checkpoints" / "best.ckpt"
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    cache = run_dir / "test_nll.json"
    if cache.is_file() and json.loads(cache.read_text())["step"] == ckpt["global_step"]:
        return json.loads(cache.read_text())
    module = AutoregressiveModule.from_checkpoint(str(best))
    data = {**module.hparams.data, "root": DATA_ROOT}
    out = {"step": ckpt["global_step"]}
    for name, key in (("evaluated", "state_dict"), ("trained", "current_model_state")):
        if key in ckpt:
            module.load_state_dict(ckpt[key])
            trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
            (result,) = trainer.test(module, datamodule=build_datamodule(data), verbose=False)
            out[name] = result["test/nll"]
    cache.write_text(json.dumps(out, indent=2) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--evaluate", action="store_true", help="compute the test NLL of each run's best.ckpt (else: the last one computed)")
    args = parser.parse_args()

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from autoreg.analysis.events import read_events

    with (HERE / "segments.csv").open() as f:
        segments = list(csv.DictReader(f))
    rows = ["| run | test NLL (nats) | paper | params | steps | epochs | CPU-hours | best val NLL | state | command |",
            "|---|---:|---|---:|---:|---:|---:|---:|---|---|"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lowest = math.inf
    for run_dir in sorted(p for p in (HERE / "runs").iterdir() if p.is_dir()):
        name, own = run_dir.name, [s for s in segments if s["run"] == run_dir.name]
        events = read_events(run_dir)
        steps, vals = events["steps"].get("val/nll", []), events["scalars"].get("val/nll", [])
        hours = cpu_hours_at(own, steps)
        ax.plot(hours, vals, marker=".", label=name)
        lowest = min([lowest, *vals])
        last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        hp = last["hyper_parameters"]
        batch = hp["data"]["batch_size"]
        params = sum(v.numel() for v in last["state_dict"].values())
        finished = (run_dir / "metrics.json").is_file()
        cached = run_dir / "test_nll.json"  # the last evaluation, at the step it names
        test = test_nll(run_dir) if args.evaluate else json.loads(cached.read_text()) if cached.is_file() else {}
        shown = f"{test['evaluated']:.2f}" if "evaluated" in test else "not evaluated"
        if "trained" in test:
            shown += f" (trained weights: {test['trained']:.2f})"
        if test and not finished:
            shown += f" at step {test['step']}"
        paper = " ".join(PAPER.get(name, ("", ""))) or "-"
        cpu = sum(int(s["cpu_s"]) for s in own) / 3600
        state = "finished" if finished else "training (curve still falling)" if len(vals) > 2 and vals[-1] < vals[-3] else "training"
        rows.append(f"| {name} | {shown} | {paper} | {params:,} | {last['global_step']:,} | "
                    f"{last['global_step'] * batch / TRAIN_IMAGES:.1f} | {cpu:.2f} | {min(vals) if vals else math.nan:.2f} | {state} | "
                    f"`{own[-1]['args'].split(' (')[0] if own else ''}` |")
    cpus = sorted({s["cpu"] for s in segments})
    ax.set_xlabel(f"CPU-hours, 1 torch thread per run ({' / '.join(cpus)}; segments.csv says which)", fontsize=8)
    ax.set_ylim(lowest - 1, lowest + 12)  # where the runs are compared; the first epochs lie above
    ax.set_ylabel("validation NLL (nats per image)")
    ax.set_title("binarized MNIST (fixed binarization): validation NLL against CPU time\n(the first epochs lie above the plot)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "curve.png", dpi=120)
    (HERE / "table.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
