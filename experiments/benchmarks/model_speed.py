"""Training speed and peak memory: PixelCNN vs PixelRNN (Row LSTM, Diagonal BiLSTM) on the CPU.

Every model gets the same depth and width (`--channels`, the 2h between layers) on binarized
28x28 MNIST-like batches (random 0/1 pixels: speed does not depend on the digits). Training
images/s is the median over `--windows` timed windows of `--steps` forward + backward + Adam steps
each, after one warm-up step; the models' windows are interleaved in one process, round by round.
"time vs PixelCNN" is the median over the rounds of each round's ratio (the model's window time
over PixelCNN's in the same round), with its interquartile range: the load of a shared machine
drifts, and a ratio from one round's neighbouring windows follows it far less than one from
separate medians. "peak MiB" is
measured apart, in a fresh process per model (Linux): its peak RSS growth over two training
steps from just before the model is built (after one step of a tiny copy, which sets up the
libraries): weights, Adam state, activations and the allocator's slack.

    .venv/bin/python experiments/benchmarks/model_speed.py
    .venv/bin/python experiments/benchmarks/model_speed.py --cells lstm gru --out results.md
    .venv/bin/python experiments/benchmarks/model_speed.py --cells lstm gru --bf16   # bf16-mixed's speed

The issue's target: each PixelRNN within 4x of PixelCNN's training time per image. Run it on an
otherwise idle machine: a recurrent model issues thousands of small ops per step, and on a busy
CPU their thread synchronisation stalls far more than PixelCNN's few large convolutions do (the
setup line prints the load). `--threads 1` avoids those stalls: a fairer ratio on a shared machine.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

import torch

from autoreg.distributions import Bernoulli
from autoreg.families import build_model

from common import Machine, can_measure_memory, peak_rss_mib, reset_peak, rss_mib, write_results

SIZE = 28


def _trainer(name: str, kwargs: dict, depth: int, channels: int, batch: int, bf16: bool = False):
    """One forward + backward + Adam step of a fresh model on a fixed random binary batch; with
    `bf16`, the forward under CPU bf16 autocast and the nll in fp32, as bf16-mixed training does."""
    torch.manual_seed(0)
    x = (torch.rand(batch, 1, SIZE, SIZE) < 0.5).float()
    model = build_model({"name": name, "depth": depth, "channels": channels, **kwargs}, (1, SIZE, SIZE), Bernoulli())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            params = model(x)
        model.distribution.nll(params, x).mean().backward()
        optimizer.step()

    return step


def _peak_memory(name: str, kwargs: dict, args: argparse.Namespace) -> float:
    """Peak RSS growth over two training steps, in a fresh process (Linux: /proc; else NaN)."""
    if not can_measure_memory():
        return float("nan")
    if args.threads:
        torch.set_num_threads(args.threads)
    _trainer(name, kwargs, 1, 2, 1)()  # the libraries' one-off buffers and thread pools
    reset_peak()
    base = rss_mib()
    step = _trainer(name, kwargs, args.depth, args.channels, args.batch, args.bf16)
    step()
    step()
    return peak_rss_mib() - base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--windows", type=int, default=9)
    parser.add_argument("--steps", type=int, default=2, help="training steps per timed window")
    parser.add_argument("--cells", nargs="+", default=["lstm"], choices=["lstm", "gru"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (trainer.precision=bf16-mixed); default fp32")
    parser.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    runs = [("PixelCNN", "pixelcnn", {"kernel": 3})]
    runs += [
        (f"PixelRNN {arch} {cell}", "pixelrnn", {"arch": arch, "cell": cell})
        for arch in ("row_lstm", "diagonal_bilstm")
        for cell in args.cells
    ]
    lines = [
        "| model | depth | channels | train img/s | ms/img | time vs PixelCNN (IQR) | peak MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    print(lines[0] + "\n" + lines[1], flush=True)
    machine = Machine()
    # Timing: all models in this process, their windows interleaved, so that they share the
    # machine's state (and any change in its load) alike.
    steps = [_trainer(name, kwargs, args.depth, args.channels, args.batch, args.bf16) for _, name, kwargs in runs]
    rates = [[] for _ in runs]
    for step in steps:
        step()  # warm-up
    for _ in range(args.windows):
        for step, rate in zip(steps, rates):
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            rate.append(args.steps * args.batch / (time.perf_counter() - start))
    for (label, name, kwargs), rate in zip(runs, rates):
        with mp.get_context("spawn").Pool(1) as pool:  # a fresh process: its own peak RSS
            peak = pool.apply(_peak_memory, (name, kwargs, args))
        ratios = sorted(reference / own for reference, own in zip(rates[0], rate))
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        rate = statistics.median(rate)
        line = (
            f"| {label} | {args.depth} | {args.channels} | {rate:.1f} | {1000 / rate:.2f} | "
            f"{statistics.median(ratios):.2f}x ({quartiles[0]:.2f}-{quartiles[2]:.2f}) | {peak:.0f} |"
        )
        lines.append(line)
        print(line, flush=True)
    setup = (
        f"batch {args.batch} of {SIZE}x{SIZE} binary images, {'bf16 autocast' if args.bf16 else 'fp32'}, "
        f"median of {args.windows} windows x {args.steps} steps, "
        + machine.line()
    )
    print(setup)
    write_results(args.out, "Training speed", [*lines, "", setup])


if __name__ == "__main__":
    main()
