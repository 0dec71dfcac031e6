"""GPU training speed of the default PixelCNN: eager fp32, bf16-mixed, and bf16-mixed + torch.compile.

Each configuration runs autoreg's real pipeline, `python train.py trainer=gpu` (the splits on the
GPU, the network channels_last, no worker processes), in this process, for `--seconds` of
training (Lightning's `max_time`; validation, periodic checkpoints, sample grids and the progress
bar off so that only training is timed). images/s counts the steps after the first `--skip`
(warm-up: cuDNN autotuning, torch.compile's compilation), between two CUDA synchronisations.

The convolutions' share of the GPU: their FLOPs per training step (forward + backward, counted
once with torch.utils.flop_counter on a batch) x steps/s, against the GPU's dense bf16 peak
(`--peak-tflops`, else looked up from the GPU's name in PEAK_TFLOPS).

Prepared for a lent GPU machine (it has no internet: the bundled digits are the data); one call:

    .venv/bin/python experiments/benchmarks/gpu_speed.py --out experiments/benchmarks/gpu_speed.md

`--accelerator cpu --seconds 5 --configs fp32 bf16` runs it on a CPU, to try the script itself.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from common import write_results

ROOT = Path(__file__).resolve().parents[2]
# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, TFLOP/s.
PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "L4": 121.0, "A10": 125.0, "RTX 4090": 165.2}
CONFIGS = {
    "fp32": ["trainer.precision=32-true"],
    "bf16": ["trainer.precision=bf16-mixed"],
    "bf16+compile": ["trainer.precision=bf16-mixed", "model.compile=true"],
}
QUIET = [  # time training only
    "data.source=bundled", "trainer.max_epochs=-1", "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
    "checkpoint.every_n_train_steps=0", "~callbacks.samples", "~callbacks.receptive_field", "~callbacks.progress_bar",
    "+trainer.enable_progress_bar=false", "~logger",
]
_TIMER = None  # the running configuration's StepTimer (autoreg.cli.train instantiates callbacks from the config)


class StepTimer(pl.Callback):
    """images/s over the training steps after the first `skip`."""

    def __init__(self, skip: int):
        self.skip, self.steps, self.images, self.start, self.seconds = skip, 0, 0, None, 0.0

    def _sync(self, module) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, module, batch, batch_idx: int) -> None:
        if self.steps == self.skip and self.start is None:
            self._sync(module)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        self.steps += 1
        if self.start is not None:
            self.images += len(batch[0])

    def on_train_end(self, trainer, module) -> None:
        self._sync(module)
        if self.start is not None:
            self.seconds = time.perf_counter() - self.start


def step_timer() -> StepTimer:
    """The running configuration's timer, for `+callbacks.step_timer._target_`."""
    return _TIMER


def conv_flops_per_step(net: torch.nn.Module, batch: int, device: torch.device) -> int:
    """FLOPs of the convolutions in one forward + backward of `net` on a batch (precision-independent)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = getattr(net, "_orig_mod", net)
    x = (torch.rand(batch, *net.image_shape, device=device) < 0.5).float()
    counter = FlopCounterMode(display=False)
    with counter:
        net(x).float().sum().backward()
    net.zero_grad(set_to_none=True)
    return sum(n for op, n in counter.get_flop_counts()["Global"].items() if "convolution" in str(op))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=120, help="training time per configuration")
    parser.add_argument("--skip", type=int, default=50, help="warm-up steps not timed (compilation happens there)")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--accelerator", default="gpu", choices=["gpu", "cpu"])
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak (default: by name)")
    parser.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    parser.add_argument("overrides", nargs="*", help="more train.py overrides, e.g. data.batch_size=256")
    args = parser.parse_args()
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        sys.exit("error: no CUDA GPU here; run on a GPU machine, or try the script with --accelerator cpu")
    from hydra import compose, initialize_config_dir

    from autoreg.cli import train

    global _TIMER
    name = torch.cuda.get_device_name() if args.accelerator == "gpu" else "CPU"
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    minutes, seconds = divmod(args.seconds, 60)
    lines = [
        "| configuration | images/s | timed steps | conv TFLOP/s | of the bf16 peak |",
        "|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for config in args.configs:
        _TIMER = StepTimer(args.skip)
        overrides = [
            "trainer=gpu", f"trainer.accelerator={args.accelerator}", *QUIET, *CONFIGS[config], *args.overrides,
            f"trainer.max_time=00:00:{minutes:02d}:{seconds:02d}", f"paths.output_dir={ROOT}/outputs/gpu_speed/{config}",
            f"+callbacks.step_timer._target_={__name__}.step_timer",
        ]
        with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
            cfg = compose("train", overrides=overrides)
        metrics, objects = train(cfg)
        timer, module = _TIMER, objects["module"]
        if timer.images == 0:
            lines.append(f"| {config} | no steps after the {args.skip} warm-up steps: raise --seconds | | | |")
            print(lines[-1], flush=True)
            continue
        rate = timer.images / timer.seconds
        flops = conv_flops_per_step(module.net, cfg.data.batch_size, module.device)
        tflops = flops * (timer.images / cfg.data.batch_size) / timer.seconds / 1e12
        share = f"{tflops / peak:.1%}" if peak else "peak unknown: --peak-tflops"
        lines.append(f"| {config} | {rate:.0f} | {timer.steps - args.skip} | {tflops:.2f} | {share} |")
        print(lines[-1], flush=True)
    setup = (
        f"{name}, torch {torch.__version__}, default PixelCNN (`python train.py trainer=gpu`, batch "
        f"{cfg.data.batch_size}, bundled digits), {args.seconds} s per configuration, first {args.skip} steps untimed; "
        f"bf16 peak {peak or 'unknown'} TFLOP/s"
    )
    print(setup)
    write_results(args.out, "GPU training speed", [*lines, "", setup])


if __name__ == "__main__":
    main()
