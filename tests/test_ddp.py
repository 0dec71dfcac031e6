"""DDP across 2 CPU processes (gloo), as `python train.py trainer=ddp trainer.devices=2` runs it."""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch

from autoreg.build import build_datamodule
from autoreg.module import AutoregressiveModule

from conftest import ROOT, compose_train, torch_threads, write_tiny_mnist


def test_ddp_on_cpu_shards_data_and_val_nll_equals_single_process_eval(tmp_path):
    root, run = tmp_path / "data", tmp_path / "run"
    write_tiny_mnist(root, n_train=53, n_test=10)  # 42 train, 11 val: shards of 6 and 5, uneven batches
    data = [f"data.root={root}", "data.source=auto", "data.val_size=11", "data.batch_size=4", "data.eval_batch_size=3"]
    args = ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "model.channels=8", "model.depth=1", *data,
            "trainer.max_epochs=2", "trainer.num_sanity_val_steps=0", "trainer.log_every_n_steps=1",
            "trainer.enable_model_summary=false", "callbacks.samples.num=1", "callbacks.progress_bar.refresh_rate=0",
            f"hydra.run.dir={run}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr  # Lightning's lines go through Hydra's log handlers (it is imported after they exist)
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 2 * 6  # 42 images / (2 processes x 4) = 6 steps an epoch (11 on one process)

    # the same weights evaluated by one process over the whole validation split
    module = AutoregressiveModule.from_checkpoint(str(run / "checkpoints" / "last.ckpt"))
    datamodule = build_datamodule(compose_train(data).data)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    (single,) = trainer.validate(module, datamodule=datamodule, verbose=False)
    # float32 convolutions on shards of 4 vs batches of 11 round differently: ~1e-8 relative seen
    # (1e-5 absolute is a float32 ulp at ~544 nats), while one lost or repeated image would move the
    # mean by nats
    assert metrics["val/nll"] == pytest.approx(single["val/nll"], rel=1e-6), (metrics["val/nll"], single["val/nll"])
    assert len(datamodule.splits["val"]) == 11

    # only rank 0 writes: one event file, one grid per validation, no step logged twice
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    (events,) = run.glob("events.out.tfevents.*")
    counts = collections.Counter((v.tag, e.step) for e in EventFileLoader(str(events)).Load() for v in e.summary.value)
    assert sorted(step for (tag, step) in counts if tag == "val/samples") == [5, 11]
    assert all(n == 1 for (tag, _), n in counts.items() if tag != "epoch")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12


@pytest.mark.slow
def test_ddp_sigterm_saves_and_resumes_like_the_uninterrupted_ddp_run(tmp_path):
    root = tmp_path / "data"
    write_tiny_mnist(root, n_train=53, n_test=10)
    args = ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "model.channels=8", "model.depth=1",
            f"data.root={root}", "data.source=auto", "data.val_size=11", "data.batch_size=4", "data.eval_batch_size=3",
            "data.binarize=dynamic", "trainer.deterministic=true", "trainer.max_epochs=2", "trainer.num_sanity_val_steps=0",
            "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false", "callbacks.samples.num=1",
            "callbacks.progress_bar.refresh_rate=0", "checkpoint.every_n_train_steps=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}

    def train_py(*extra):
        return subprocess.run([sys.executable, str(ROOT / "train.py"), *args, *extra], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)

    ref, run = tmp_path / "ref", tmp_path / "run"
    assert train_py(f"hydra.run.dir={ref}").returncode == 0
    stopped = train_py("+callbacks.fault._target_=faults.Fault", "+callbacks.fault.step=4", "+callbacks.fault.action=term",
                       f"hydra.run.dir={run}")
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    resumed = train_py(f"resume={run}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ref_metrics, metrics = (json.loads((d / "metrics.json").read_text()) for d in (ref, run))
    assert metrics["global_step"] == ref_metrics["global_step"] == 12
    assert metrics["val/nll"] == ref_metrics["val/nll"]  # both processes' RNG and data position restored


@pytest.mark.slow
def test_ddp_nonfinite_loss_on_one_process_stops_every_process_with_one_line(tmp_path):
    args = ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "model.channels=8", "model.depth=1",
            "data.source=bundled", "trainer.max_epochs=1", "trainer.limit_train_batches=6", "trainer.limit_val_batches=1",
            "trainer.num_sanity_val_steps=0", "trainer.enable_model_summary=false", "callbacks.samples.num=1",
            "callbacks.progress_bar.refresh_rate=0", "checkpoint.every_n_train_steps=1",
            "+callbacks.fault._target_=faults.Fault", "+callbacks.fault.step=3", "+callbacks.fault.action=poison",
            "+callbacks.fault.rank=1", f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors and all("training diverged" in e and "at step 3 (epoch 0, batch 3)" in e for e in errors), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


def run_bounded(args: list[str], cwd, timeout: int, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python train.py *args` with every process it starts killed after `timeout` s: a hang fails
    the test instead of holding the suite (Lightning's DDP children outlive a killed parent)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests"), **(env_extra or {})}
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"train.py {' '.join(args)} did not finish in {timeout} s (a hang); its log ends:\n{(stdout + stderr)[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_ddp_with_the_default_callbacks_scores_sample_quality_as_one_process_would(tmp_path):
    """The callbacks exactly as shipped (grids, completions, receptive field, sample quality with
    its classifier trained on first use), on data large enough to be scored (450 validation and
    500 test images)."""
    from autoreg.analysis.classifier import load_classifier
    from autoreg.analysis.quality import QualityReference

    root, run = tmp_path / "data", tmp_path / "run"
    write_tiny_mnist(root, n_train=450 + 40, n_test=500)
    data = [f"data.root={root}", "data.source=auto", "data.val_size=450", "data.batch_size=8"]
    proc = run_bounded(["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "model.channels=8", "model.depth=1",
                        *data, "trainer.max_steps=2", f"hydra.run.dir={run}"], tmp_path, timeout=240)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    log = proc.stdout + proc.stderr
    assert log.count("training one into") == 1  # one process trains the classifier, once
    (classifier_file,) = (tmp_path / "outputs" / "classifiers").glob("*.pt")
    metrics = json.loads((run / "metrics.json").read_text())

    module = AutoregressiveModule.from_checkpoint(str(run / "checkpoints" / "last.ckpt"))
    datamodule = build_datamodule(compose_train(data).data)
    datamodule.setup("fit")
    classifier, _ = load_classifier(classifier_file, classifier_file.stem, dict(module.hparams.data))
    with torch_threads(1):
        scores, _ = QualityReference(classifier, datamodule, 400).score_model(module.net.eval(), "fast", seed=0)
    assert set(scores) == {"fid", "classifier_score", "memorisation", "nn_distance"}
    for key, value in scores.items():  # the same samples and scores; metrics.json holds them as float32
        assert metrics[f"val/{key}"] == pytest.approx(value, rel=1e-6), key


def test_ddp_process_that_stops_making_progress_fails_every_process_in_one_line(tmp_path):
    root = tmp_path / "data"
    write_tiny_mnist(root, n_train=53, n_test=10)
    proc = run_bounded(["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "model.channels=8", "model.depth=1",
                        f"data.root={root}", "data.source=auto", "data.val_size=11", "data.batch_size=4",
                        "trainer.max_epochs=2", "trainer.strategy.timeout.seconds=15", "callbacks.progress_bar.refresh_rate=0",
                        "+callbacks.fault._target_=faults.Fault", "+callbacks.fault.step=3", "+callbacks.fault.action=stall",
                        "+callbacks.fault.rank=1", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, timeout=240)
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors and all("waited more than 0:00:15" in e and "trainer.strategy.timeout" in e for e in errors), proc.stderr[-3000:]
    assert any("during training, at step 3" in e for e in errors), errors
    assert "Traceback" not in proc.stderr
