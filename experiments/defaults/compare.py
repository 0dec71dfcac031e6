"""Which defaults should a family train with? Lowest validation NLL per CPU-minute.

Every candidate of a set (`--set`: PixelCNN and Gated PixelCNN, or PixelSNAIL) gets the same CPU
budget on the same data (`--data`, default the offline MNIST digits): its training throughput is
measured first (all candidates interleaved in one process, so they share the machine's state),
then it trains for the number of steps that budget buys at that rate, and is validated on the
validation split (its first `--val-batches` batches, where given). Training by steps makes the result independent of other load during
training; only the throughput measurement needs a quiet machine.

    .venv/bin/python experiments/defaults/compare.py --minutes 3
    .venv/bin/python experiments/defaults/compare.py --set pixelsnail --minutes 5 --windows 3 --val-batches 8 \
        --data data=binarized_mnist data.root=../shared/data/binarized_mnist
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from autoreg.cli import train

ROOT = Path(__file__).resolve().parents[2]
# Every candidate pins the keys it varies (model.kernel included: the default changes over time).
CANDIDATES = {
    "lab (+experiment=lab)": ["+experiment=lab"],
    "residual k3, depth 2, 64 ch": ["model.depth=2", "model.channels=64", "model.kernel=3"],
    "residual k3, depth 4, 64 ch": ["model.depth=4", "model.channels=64", "model.kernel=3"],
    "residual k3, depth 8, 64 ch": ["model.depth=8", "model.channels=64", "model.kernel=3"],
    "residual k5, depth 2, 64 ch": ["model.depth=2", "model.channels=64", "model.kernel=5"],
    "residual k7, depth 2, 64 ch": ["model.depth=2", "model.channels=64", "model.kernel=7"],
    "gated k5, depth 4, 24 ch": ["model=gated_pixelcnn", "model.depth=4", "model.channels=24", "model.kernel=5"],
    "gated k5, depth 4, 48 ch": ["model=gated_pixelcnn", "model.depth=4", "model.channels=48", "model.kernel=5"],
    "gated k3, depth 6, 32 ch": ["model=gated_pixelcnn", "model.depth=6", "model.channels=32", "model.kernel=3"],
}
# PixelSNAIL (model=pixelsnail): its default, and one key varied at a time.
SNAIL = {
    "snail depth 2, nr_resnet 2, 16 ch, 2 heads (default)": ["model=pixelsnail", "model.depth=2", "model.nr_resnet=2", "model.channels=16", "model.heads=2"],
    "snail depth 1, nr_resnet 2, 16 ch": ["model=pixelsnail", "model.depth=1"],
    "snail depth 4, nr_resnet 2, 16 ch": ["model=pixelsnail", "model.depth=4"],
    "snail depth 2, nr_resnet 1, 32 ch": ["model=pixelsnail", "model.nr_resnet=1", "model.channels=32", "model.key_channels=32", "model.value_channels=32"],
    "snail depth 2, nr_resnet 2, 16 ch, no u stream": ["model=pixelsnail", "model.u_stream=false"],
}
SETS = {"pixelcnn": CANDIDATES, "pixelsnail": SNAIL}


def config(overrides: list[str], output_dir: Path):
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose("train", overrides=overrides + [f"paths.output_dir={output_dir}"])


def throughput(candidates: dict[str, list[str]], data: list[str], windows: int, steps: int) -> dict[str, float]:
    """Training images/s of each candidate: median over `windows` rounds, candidates interleaved,
    at the precision training will use (`trainer.precision=auto` resolved on this machine)."""
    from autoreg.build import build
    from autoreg.trainer_config import resolve_precision

    setups = {}
    for name, overrides in candidates.items():
        cfg = config(overrides + data, Path("unused"))
        torch.manual_seed(0)
        module, dm = build(cfg)
        dm.setup("fit")
        batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
        bf16 = resolve_precision(cfg)[0].get("precision", cfg.trainer.precision) == "bf16-mixed"
        setups[name] = (module, torch.optim.Adam(module.parameters(), cfg.optim.lr), batch, bf16)

    def step(module, opt, batch, bf16):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = module.nll(*batch).mean()
        loss.backward()
        opt.step()

    rates: dict[str, list[float]] = {name: [] for name in candidates}
    for name, s in setups.items():  # warm-up
        step(*s)
    for _ in range(windows):
        for name, (module, opt, batch, bf16) in setups.items():
            start = time.perf_counter()
            for _ in range(steps):
                step(module, opt, batch, bf16)
            rates[name].append(steps * len(batch[0]) / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="CPU budget per candidate")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "defaults")
    parser.add_argument("--set", choices=sorted(SETS), default="pixelcnn", help="the candidates")
    parser.add_argument("--data", nargs="+", default=["data.source=bundled"], metavar="OVERRIDE", help="the data, as train.py overrides")
    parser.add_argument("--val-batches", type=int, default=None, help="validate on the first N batches only (default: the whole split)")
    parser.add_argument("--only", nargs="+", default=None, metavar="TEXT", help="candidates whose name contains TEXT")
    args = parser.parse_args()
    candidates = {k: v for k, v in SETS[args.set].items() if not args.only or any(t in k for t in args.only)}

    rates = throughput(candidates, args.data, args.windows, steps=3)
    print("measured train img/s:", {name: round(rate) for name, rate in rates.items()}, flush=True)
    rows = []
    for i, (name, overrides) in enumerate(candidates.items()):
        cfg0 = config(overrides + args.data, args.out)
        steps = max(1, int(args.minutes * 60 * rates[name] / cfg0.data.batch_size))
        run = [
            *args.data, f"trainer.max_steps={steps}", "trainer.max_epochs=-1",
            "trainer.check_val_every_n_epoch=100000", "trainer.num_sanity_val_steps=0",
            "callbacks.samples.num=0", "callbacks.progress_bar.refresh_rate=0", "~callbacks.checkpoint",
            "~callbacks.final_validation", "~callbacks.receptive_field", "~callbacks.sample_quality",
        ]
        if args.val_batches:
            run.append(f"trainer.limit_val_batches={args.val_batches}")
        cfg = config(overrides + run, args.out / str(i))
        metrics, objects = train(cfg)
        val = objects["trainer"].validate(objects["module"], datamodule=objects["datamodule"], verbose=False)[0]
        rows.append((name, metrics["params"], rates[name], steps, val["val/nll"], val["val/bpd"]))
        print("done:", rows[-1], flush=True)

    val = f"the first {args.val_batches} validation batches" if args.val_batches else "the whole validation split"
    print(f"\nBudget: {args.minutes:g} CPU minutes per candidate at its measured rate "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads, trainer.precision=auto), data {' '.join(args.data)}, "
          f"batch {cfg0.data.batch_size}; val NLL on {val}.\n")
    print("| candidate | params | train img/s | steps in budget | val nll (nats) | val bpd |")
    print("|---|---|---|---|---|---|")
    for name, params, rate, steps, nll, bpd in rows:
        print(f"| {name} | {int(params):,} | {rate:.0f} | {steps} | {nll:.1f} | {bpd:.4f} |")


if __name__ == "__main__":
    main()
