"""End to end: a tiny training run and a 2-job multirun, as the user runs them."""
from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

from PIL import Image

from autoreg.cli import train

from conftest import QUALITY_FAST, ROOT, TINY, compose_train, read_events


def test_tiny_run_logs_checkpoints_and_learns(tmp_path, caplog, monkeypatch):
    """Every default callback as shipped (sample quality: 400 samples, its classifier trained on first use)."""
    caplog.set_level(logging.INFO)
    monkeypatch.chdir(tmp_path)  # the classifier's default dir: outputs/classifiers
    shipped = [o for o in TINY if o not in QUALITY_FAST]
    cfg = compose_train(shipped + ["trainer.limit_train_batches=12", "optim.lr=3e-3", "test=true"], tmp_path)
    metrics, objects = train(cfg)
    assert "Seed set to 0" in caplog.text and "litlogger" not in caplog.text  # Lightning's info, not its advert
    assert "GPU available: False" not in caplog.text and "was configured so 100%" not in caplog.text  # nor its noise
    events = read_events(tmp_path)
    for tag in ("train/nll", "train/bpd", "train/lr", "val/nll", "val/bpd", "test/nll", "test/bpd"):
        assert tag in events["scalars"], tag
    assert {"val/samples", "val/completions"} <= set(events["images"])
    completions = Image.open(io.BytesIO(events["images"]["val/completions"][-1][1]))
    assert completions.size == (3 * (4 * 28 + 5 * 2),) * 2  # 4 val images: original, half hidden, 2 completions
    assert "epoch" not in events["scalars"]  # no staircase chart above the nll curves
    nll = events["scalars"]["train/nll"]
    assert len(nll) == 12 and max(nll[-3:]) < nll[0] - 20  # learning, far beyond batch noise
    assert events["hparams"]["model.kernel"] == str(cfg.model.kernel) and events["hparams"]["data.source_used"] == "bundled"
    assert events["hparams"]["model.residual"] is True and events["hparams"]["optim.lr"] == cfg.optim.lr
    assert events["metrics"] == ["val/nll", "best/val/nll", "test/nll", "val/bpd", "val/fid", "val/classifier_score",
                                 "val/label_accuracy", "val/memorisation"]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and (tmp_path / "checkpoints" / "best.ckpt").is_file()
    assert abs(metrics["val/nll"] - events["scalars"]["val/nll"][-1]) < 1e-3
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["val/fid"] > 0 and written["reference/fid"] > 0 and "training one into outputs/classifiers" in caplog.text
    # metrics.json keeps the exact float64 mean; TensorBoard stores float32
    assert written["global_step"] == 12 and abs(written["best/val/nll"] - min(events["scalars"]["val/nll"])) < 1e-3
    assert abs(events["scalars"]["best/val/nll"][-1] - written["best/val/nll"]) < 1e-3  # HParams shows the kept weights' figure too
    assert written["test/nll"] == metrics["test/nll"] and written["params"] > 0
    assert f"    kernel: {cfg.model.kernel}" in config_text(tmp_path)  # the composed config, in the Text tab
    # the summary says where everything went and how to go on
    best = tmp_path / "checkpoints" / "best.ckpt"
    assert f"run dir: {tmp_path}" in caplog.text and f"best checkpoint: {best}" in caplog.text
    assert f"val/nll: final {metrics['val/nll']:.2f} nats" in caplog.text and "12 steps in" in caplog.text
    assert f"next: tensorboard --logdir {tmp_path}  |  python sample.py ckpt={best}" in caplog.text


def config_text(run_dir) -> str:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    for path in run_dir.glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag.startswith("config"):
                    return tensor_util.make_ndarray(value.tensor).item().decode()
    return ""


def test_multirun_two_jobs_into_one_sweep_dir(tmp_path):
    sweep = tmp_path / "sweep"
    overrides = [o for o in TINY if not o.startswith("model.")] + ["model.channels=8", "model.depth=1"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", "model.kernel=3,5", *overrides, f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 2
    assert f"sweep dir: {sweep}" in proc.stdout and f"python -m autoreg.analysis.report {sweep}" in proc.stdout
    for job in jobs:  # the end-of-sweep table: one row per job with its final val/nll
        final = json.loads((job / "metrics.json").read_text())["val/nll"]
        assert f"| {job.name} | {final:.2f} |" in proc.stdout
    for job, kernel in zip(jobs, (3, 5)):
        assert f"model.kernel={kernel}" in job.name  # the TensorBoard run name shows the overrides
        events = read_events(job)
        assert events["hparams"]["model.kernel"] == str(kernel) and "val/nll" in events["scalars"]
        columns = {key: (kind, differs, domain) for key, kind, differs, domain in events["columns"]}
        # HParams: the swept key first and marked, then the model's; ints shown as ints, bools as choices
        assert [key for key, *_ in events["columns"][:3]] == ["model.kernel", "model.name", "model.depth"]
        assert columns["model.kernel"] == ("DATA_TYPE_STRING", True, [])
        assert columns["model.residual"] == ("DATA_TYPE_BOOL", False, [False, True])
        assert columns["optim.lr"][0] == "DATA_TYPE_FLOAT64" and "pixelrnn" in columns["model.name"][2]
        assert {"model.cell", "model.arch", "model.first_kernel"} <= set(columns)  # every family's keys have a column
        assert (job / "checkpoints" / "last.ckpt").is_file() and (job / "train.log").is_file()
        assert (job / ".hydra" / "config.yaml").is_file()


def test_a_run_stopped_by_max_steps_mid_epoch_validates_its_last_step(tiny_cfg, tmp_path):
    import torch

    metrics, _ = train(tiny_cfg("trainer.max_steps=3", "trainer.limit_train_batches=10", "trainer.val_check_interval=1.0", "callbacks.samples.num=0"))
    events = read_events(tmp_path)
    assert events["steps"]["val/nll"] == [events["steps"]["train/nll"][-1]]  # validated after the last step, once
    assert metrics["global_step"] == 3 and abs(metrics["val/nll"] - events["scalars"]["val/nll"][-1]) < 1e-3
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["global_step"] == 3  # best.ckpt describes the final step, not an earlier one


def test_a_short_run_validates_by_steps_across_epochs(tiny_cfg, tmp_path, caplog):
    """trainer.val_check_interval=auto: 5 validations over trainer.max_steps, whatever the epochs."""
    caplog.set_level(logging.INFO, logger="autoreg")
    train(tiny_cfg("trainer.max_steps=10", "trainer.max_epochs=-1", "trainer.limit_train_batches=3", "callbacks.samples.num=0"))
    steps = read_events(tmp_path)["steps"]
    assert steps["val/nll"] == steps["train/nll"][1::2] and len(steps["val/nll"]) == 5  # epochs of 3 batches
    assert "trainer.val_check_interval=auto -> 2: 5 validations over trainer.max_steps=10" in caplog.text


def test_run_names_say_what_the_run_is():
    from autoreg.run_dirs import run_name, trial_name

    assert run_name("pixelrnn", "model.cell=gru,model=pixelrnn") == "pixelrnn_model.cell=gru"
    assert run_name("pixelcnn", "") == "pixelcnn"
    assert len(run_name("pixelcnn", ",".join(f"model.k{i}=1" for i in range(40)))) <= 100
    assert trial_name(Path("outputs/runs/2026-11-29_03-10-00_pixelrnn_model.cell=gru")) == "pixelrnn_model.cell=gru (2026-11-29_03-10-00)"
    assert trial_name(Path("outputs/multirun/2026-11-29_03-10-00/0_model.kernel=3")) == "0_model.kernel=3 (2026-11-29_03-10-00)"


def test_summary_of_a_run_without_validation_says_so(tmp_path):
    from autoreg.summary import run_summary

    lines = run_summary(tmp_path, {"global_step": 7, "train_seconds": 3.2}, None)
    assert lines == [f"run dir: {tmp_path}", "val/nll: none (no validation ran, trainer.limit_val_batches=0?); 7 steps in 3 s",
                     f"next: tensorboard --logdir {tmp_path}"]
