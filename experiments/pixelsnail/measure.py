"""PixelSNAIL's peak memory and time per training step at 28x28 and 32x32 on the CPU.

The default model (`model=pixelsnail`, no overrides) on random batches: 28x28 binary images with the
Bernoulli head (MNIST's shape) and 32x32 RGB images with the 10-component logistic mixture
(CIFAR-10's), batch 16 and 32, in fp32 and under CPU bf16 autocast (what `trainer.precision=auto`
picks on a CPU with native bf16), the attention through PyTorch's fused kernel (the default) and,
for comparison, through its math backend, which holds the (H W) x (H W) attention matrices.

Each row runs in a fresh process: its peak RSS growth over two training steps (forward, backward,
Adam) from just before the model is built (after one step of a tiny copy that sets up the
libraries): weights, Adam state, activations and the allocator's slack; then the median time of
`--steps` more steps.

Then the naive sampler's time for 16 28x28 images of the default model (a full forward pass per
pixel), the baseline of a cached sampler: timed on the first `--sample-rows` rows (the rest given)
and scaled to all 28, as experiments/benchmarks/sampling_speed.py does (every pass costs the same).

    .venv/bin/python experiments/pixelsnail/measure.py [--threads 1] [--steps 5] [--sample-rows 4] [--out table.md]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from autoreg.families import build_model
from autoreg.likelihoods import distribution_for
from autoreg.sampling import sample

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import Machine, can_measure_memory, peak_rss_mib, reset_peak, rss_mib  # noqa: E402  (experiments/benchmarks/common.py)

SHAPES = {28: ((1, 28, 28), 1, "bernoulli"), 32: ((3, 32, 32), 8, "logistic_mixture")}


def training_step(size: int, batch: int, bf16: bool, keys: dict):
    """A closure running one training step of a fresh default PixelSNAIL on a fixed random batch."""
    shape, bits, head = SHAPES[size]
    torch.manual_seed(0)
    levels = 2**bits - 1
    x = torch.randint(0, levels + 1, (batch, *shape)).float() / levels
    model = build_model({"name": "pixelsnail", **keys}, shape, distribution_for(bits, head))
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)

    def run() -> None:
        adam.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            params = model(x)
        model.distribution.nll(params, x).mean().backward()  # the loss in fp32, as bf16-mixed training computes it
        adam.step()

    return run, sum(p.numel() for p in model.parameters())


def measure(size: int, batch: int, bf16: bool, math_backend: bool, steps: int, threads: int | None) -> tuple[float, float, int]:
    """(peak MiB, median seconds per step, parameters), in this (fresh) process."""
    if threads:
        torch.set_num_threads(threads)
    with sdpa_kernel(SDPBackend.MATH) if math_backend else nullcontext():
        training_step(size, 1, bf16, {"depth": 1, "nr_resnet": 1, "channels": 2, "key_channels": 2, "value_channels": 2})[0]()
        if can_measure_memory():
            reset_peak()
        base = rss_mib()
        run, parameters = training_step(size, batch, bf16, {})
        run()
        run()
        peak = peak_rss_mib() - base
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    return peak, statistics.median(times), parameters


def naive_sampling_seconds(rows: int, batch: int = 16) -> float:
    """Seconds for the naive sampler to draw `batch` 28x28 images of the default model (Bernoulli),
    from the time of its first `rows` rows."""
    shape, bits, head = SHAPES[28]
    torch.manual_seed(0)
    model = build_model({"name": "pixelsnail"}, shape, distribution_for(bits, head)).eval()
    given = torch.zeros(1, 1, *shape[1:], dtype=torch.bool)
    given[..., rows:, :] = True
    start = time.perf_counter()
    sample(model, method="naive", known=torch.zeros(batch, *shape), known_mask=given, seed=0)
    return (time.perf_counter() - start) * shape[1] / rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per row")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--sample-rows", type=int, default=4, help="rows to time the naive sampler on (0: skip it)")
    parser.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    args = parser.parse_args()
    machine = Machine()
    lines = ["| image | head | batch | precision | attention kernel | s/step | ms/image | peak MiB |",
             "|---|---|---:|---|---|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    parameters = {}
    for size, batch, bf16, math_backend in [
        (size, batch, bf16, math_backend)
        for size in SHAPES for batch in (16, 32) for bf16, math_backend in ((False, False), (True, False), (False, True))
    ]:
        with mp.get_context("spawn").Pool(1) as pool:  # a fresh process: its own peak RSS
            peak, seconds, parameters[size] = pool.apply(measure, (size, batch, bf16, math_backend, args.steps, args.threads))
        shape, _, head = SHAPES[size]
        line = (f"| {shape[0]}x{size}x{size} | {head} | {batch} | {'bf16 autocast' if bf16 else 'fp32'} | "
                f"{'math (materialised)' if math_backend else 'fused (default)'} | {seconds:.3f} | "
                f"{1000 * seconds / batch:.1f} | {peak:.0f} |")
        lines.append(line)
        print(line, flush=True)
    setup = (f"the default model ({', '.join(f'{s}x{s}: {n:,} parameters' for s, n in parameters.items())}), "
             f"median of {args.steps} steps, " + machine.line(args.threads))
    if args.sample_rows:
        if args.threads:
            torch.set_num_threads(args.threads)
        seconds = naive_sampling_seconds(args.sample_rows)
        lines += ["", f"Naive sampling, 16 images of 28x28, the default model: {seconds:.0f} s "
                      f"(timed on the first {args.sample_rows} of 28 rows, x{28 / args.sample_rows:g})."]
        print(lines[-1])
    print(setup)
    if args.out:
        command = " ".join([".venv/bin/python", "experiments/pixelsnail/measure.py", *sys.argv[1:]])
        Path(args.out).write_text(f"PixelSNAIL training steps, from `{command}`:\n\n" + "\n".join([*lines, "", setup]) + "\n")


if __name__ == "__main__":
    main()
