"""Where a PixelCNN++ training step spends its CPU time, by operator (torch.profiler), in fp32 and
under bf16 autocast, beside the PixelCNN it is compared with in experiments/pixelcnn_pp.

Each model and precision takes optimizer steps (forward, the likelihood's NLL, backward, Adam) on
random 8-bit 28x28 images (the time does not depend on them), timed in `--rounds` windows of
`--steps` steps interleaved across the four configurations (median), then profiled. The tables
give each step's wall time, images per second, the forward pass's FLOPs per image
(torch.utils.flop_counter) times images per second (GFLOP/s: the models' speed per FLOP, to
compare), and the operators with the most self CPU time.

    .venv/bin/python experiments/benchmarks/pixelcnn_pp_profile.py --out experiments/benchmarks/pixelcnn_pp_profile.md
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from autoreg.distributions import Categorical, DiscretizedLogisticMixture
from autoreg.families import build_model

from common import Machine, write_results

SHAPE = (1, 28, 28)
MODELS = {  # key: (table label, model config, head)
    "pixelcnn_pp": ("PixelCNN++ default (nr_resnet=2, 32 ch, mixture of 10)", {"name": "pixelcnn_pp"},
                    lambda: DiscretizedLogisticMixture(10)),
    "pixelcnn": ("PixelCNN (residual 7x7, depth 2, 64 ch, 256-way)", {"name": "pixelcnn", "channels": 64, "depth": 2,
                                                                      "kernel": 7, "residual": True}, lambda: Categorical(256)),
}


def training_step(model, optimizer, x: torch.Tensor, precision: str):
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model.distribution.nll(model(x), x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2, help="steps per timed window and profiled")
    parser.add_argument("--rounds", type=int, default=3, help="timed windows per configuration, interleaved (median)")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    machine = Machine()
    x = torch.randint(0, 256, (args.batch, *SHAPE), generator=torch.Generator().manual_seed(0)) / 255
    runs = {}
    for key, (label, cfg, head) in MODELS.items():
        torch.manual_seed(0)
        model = build_model(cfg, SHAPE, head())
        with FlopCounterMode(display=False) as counter:
            model(x)
        gflop = counter.get_total_flops() / 1e9 / args.batch  # forward, per image
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)
        for precision in ("fp32", "bf16"):
            step = training_step(model, optimizer, x, precision)
            step()  # warm-up
            runs[key, precision] = (label, gflop, step, [])
    for _ in range(args.rounds):  # interleaved, so that every configuration sees the same load
        for label, gflop, step, times in runs.values():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times.append((time.perf_counter() - start) / args.steps)
    lines = ["| model | precision | s/step | img/s | forward GFLOP/image | forward GFLOP/s |", "|---|---|---:|---:|---:|---:|"]
    for (key, precision), (label, gflop, step, times) in runs.items():
        seconds = statistics.median(times)
        lines.append(f"| {label} | {precision} | {seconds:.2f} | {args.batch / seconds:.1f} | {gflop:.3f} | "
                     f"{args.batch / seconds * gflop:.1f} |")
    lines.append("")
    for (key, precision), (label, gflop, step, times) in runs.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                step()
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        lines += [f"### {label}, {precision}", "", "| operator | self CPU % | calls per step |", "|---|---:|---:|"]
        for e in events[: args.top]:
            lines.append(f"| {e.key} | {100 * e.self_cpu_time_total / total:.1f} | {e.count // args.steps} |")
        lines.append("")
    setup = f"batch {args.batch}, median of {args.rounds} interleaved windows of {args.steps} steps, " + machine.line()
    print("\n".join(lines) + "\n" + setup)
    write_results(args.out, "PixelCNN++ training-step profile", [*lines, setup])


if __name__ == "__main__":
    main()
