"""Faults injected into real runs: kills, signals, bad checkpoints, bad data, unwritable dirs.
Each must either lose (almost) nothing or fail with one clear line."""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from autoreg.checkpoint import AtomicCheckpointIO, load_checkpoint
from autoreg.cli import train
from autoreg.data.datamodule import ShardedBatches
from autoreg.errors import CheckpointError, ConfigError, DataError, OutputError, TrainingDivergedError
from autoreg.module import AutoregressiveModule

from conftest import ROOT, TINY, compose_train, read_events, write_idx, write_tiny_mnist

# 2 epochs of 10 steps, last.ckpt every 3 steps, dynamic binarization (so the RNG matters too)
RUN = [o for o in TINY if not o.startswith(("trainer.limit_train_batches", "trainer.max_epochs", "callbacks.samples"))] + [
    "trainer.limit_train_batches=10",
    "trainer.max_epochs=2",
    "checkpoint.every_n_train_steps=3",
    "trainer.deterministic=true",
    "data.binarize=dynamic",
    "callbacks.samples.num=1",
]
FAULT = ["+callbacks.fault._target_=faults.Fault"]


def cli(args: list[str], cwd: Path, script: str = "train.py", **env: str) -> subprocess.CompletedProcess:
    """Run an entry point as the user does; tests/ is on PYTHONPATH for the fault callback."""
    base = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    # the same thread count as this process, so results match in-process runs bit for bit
    env = {**base, "PYTHONPATH": str(ROOT / "tests"), "OMP_NUM_THREADS": str(torch.get_num_threads()), **env}
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The run failed with exactly one `error: ...` line on stderr and no traceback."""
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


def tb_counts(run_dir: Path) -> collections.Counter:
    """(tag, step) -> how many times it was logged, over all event files of a run."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    counts = collections.Counter()
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            counts.update((value.tag, event.step) for value in event.summary.value)
    return counts


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: the same run, never interrupted."""
    out = tmp_path_factory.mktemp("uninterrupted")
    metrics, _ = train(compose_train(RUN, out))
    return out, metrics


# --- resume --------------------------------------------------------------------------------------


def test_sigkill_mid_epoch_then_ckpt_path_last_matches_uninterrupted(uninterrupted, tmp_path):
    ref_dir, ref = uninterrupted
    killed = cli([*RUN, *FAULT, "+callbacks.fault.step=5"], tmp_path)  # SIGKILL after step 5
    assert killed.returncode == -signal.SIGKILL
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 3  # lost: 2 steps
    resumed = cli([*RUN, "ckpt_path=last"], tmp_path)  # the newest run under outputs/runs
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert list((tmp_path / "outputs" / "runs").iterdir()) == [run_dir]  # no new run dir
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == ref["global_step"] == 20
    assert metrics["val/nll"] == ref["val/nll"]  # bitwise: weights, Adam, data order, RNG restored
    # TensorBoard: the same (tag, step) events as the uninterrupted run, none missing or twice
    assert tb_counts(run_dir) == tb_counts(ref_dir)
    assert read_events(run_dir)["scalars"]["train/nll"] == read_events(ref_dir)["scalars"]["train/nll"]
    assert (run_dir / ".hydra" / "overrides.yaml").is_file() and list((run_dir / ".hydra").glob("resume_*/overrides.yaml"))


def test_sigterm_saves_exits_cleanly_and_resume_dir_continues(uninterrupted, tmp_path):
    ref_dir, ref = uninterrupted
    run_dir = tmp_path / "run"
    no_periodic = [*RUN, "checkpoint.every_n_train_steps=0"]  # so the checkpoint can only come from SIGTERM
    stopped = cli([*no_periodic, *FAULT, "+callbacks.fault.step=6", "+callbacks.fault.action=term", f"hydra.run.dir={run_dir}"], tmp_path)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert f"stopped by a signal at step 6: saved {run_dir / 'checkpoints' / 'last.ckpt'}" in stopped.stderr
    assert f"resume={run_dir}" in stopped.stderr
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 6  # nothing lost
    assert not (run_dir / "metrics.json").exists()
    metrics, _ = train(compose_train([*no_periodic, f"resume={run_dir}"], run_dir))
    assert metrics["global_step"] == 20 and metrics["val/nll"] == ref["val/nll"]
    assert tb_counts(run_dir) == tb_counts(ref_dir)


def test_preemption_signal_saves_then_hands_over_to_the_schedulers_handler(tmp_path):
    """submitit installs a SIGUSR2 handler that requeues the job; ours saves last.ckpt at the
    batch end first, then calls it."""
    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        cfg = compose_train([*RUN, "checkpoint.every_n_train_steps=0", *FAULT, "+callbacks.fault.step=4", "+callbacks.fault.action=usr2"], tmp_path)
        with pytest.raises(SIGTERMException):
            train(cfg)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert calls == [signal.SIGUSR2]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 4


def test_checkpoint_write_killed_midway_leaves_the_old_file(tmp_path):
    script = f"""
import os, signal, torch
from autoreg.checkpoint import AtomicCheckpointIO
io, path = AtomicCheckpointIO(), {str(tmp_path / 'last.ckpt')!r}
io.save_checkpoint({{"step": 1, "w": torch.ones(1000)}}, path)
def dying_save(obj, f):
    f.write(b"PK" + b"x" * 5000)
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying_save
io.save_checkpoint({{"step": 2, "w": torch.zeros(1000)}}, path)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert ckpt["step"] == 1 and torch.equal(ckpt["w"], torch.ones(1000))


def test_resume_with_another_config_names_the_difference(uninterrupted, tmp_path):
    ref_dir, _ = uninterrupted
    with pytest.raises(ConfigError) as err:
        train(compose_train([*RUN, f"resume={ref_dir}", "model.depth=2", "seed=3"], ref_dir))
    message = str(err.value)
    assert "model.depth=2 (was 1)" in message and "seed=3 (was 0)" in message and "\n" not in message


@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # the run was copied to another dir
def test_a_run_of_an_older_release_resumes_and_loads(uninterrupted, tmp_path):
    """A checkpoint written when `model.likelihood` was the head's name (autoreg.likelihoods.as_node)
    resumes under today's config, and loads with the same head and weights."""
    import shutil

    ref_dir, _ = uninterrupted
    run_dir = tmp_path / "run"
    shutil.copytree(ref_dir, run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt = load_checkpoint(last)
    assert ckpt["hyper_parameters"]["model"]["likelihood"] == {"name": "auto"}
    ckpt["hyper_parameters"]["model"]["likelihood"] = "auto"  # the older form
    torch.save(ckpt, last)
    module = AutoregressiveModule.from_checkpoint(str(last))
    assert module.distribution.name == "bernoulli" and module.hparams["model"]["likelihood"] == {"name": "auto"}
    assert all(torch.equal(v, ckpt["state_dict"][k]) for k, v in module.state_dict().items())
    metrics, _ = train(compose_train([*RUN, "trainer.max_epochs=3", f"resume={run_dir}"], run_dir))
    assert metrics["global_step"] == 30
    assert load_checkpoint(last)["hyper_parameters"]["model"]["likelihood"] == {"name": "auto"}  # saved in today's form


def test_resume_dir_without_checkpoint_is_one_line_and_makes_no_dir(tmp_path):
    missing = tmp_path / "no_such_run"
    line = one_line_error(cli([*RUN, f"resume={missing}"], tmp_path))
    assert f"resume={missing} has no checkpoints/last.ckpt" in line
    assert not missing.exists()


def test_same_seed_same_metrics(uninterrupted, tmp_path):
    ref_dir, ref = uninterrupted
    metrics, _ = train(compose_train(RUN, tmp_path))
    assert metrics["val/nll"] == ref["val/nll"] and metrics["train/nll"] == ref["train/nll"]
    assert read_events(tmp_path)["scalars"]["train/nll"] == read_events(ref_dir)["scalars"]["train/nll"]


# --- fail fast, with one line ----------------------------------------------------------------------


def test_nonfinite_loss_stops_naming_step_and_batch_and_keeps_last_good_checkpoint(tmp_path):
    cfg = compose_train([*RUN, "checkpoint.every_n_train_steps=2", *FAULT, "+callbacks.fault.step=5", "+callbacks.fault.action=poison"], tmp_path)
    with pytest.raises(TrainingDivergedError) as err:
        train(cfg)
    message = str(err.value)
    assert message.startswith("training diverged: the loss is nan at step 5 (epoch 0, batch 5)") and "\n" not in message
    assert "batch of 32 images" in message and "25088 non-finite pixels" in message and "for 32 of 32" in message
    assert "optim.lr" in message
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert f"the last good checkpoint is {last}" in message
    ckpt = load_checkpoint(last)
    assert ckpt["global_step"] == 4 and all(torch.isfinite(w).all() for w in ckpt["state_dict"].values())


def test_nonfinite_gradient_stops_before_the_weights_are_hit(tmp_path):
    cfg = compose_train([*RUN, "checkpoint.every_n_train_steps=1", *FAULT, "+callbacks.fault.step=3", "+callbacks.fault.action=inf_grad"], tmp_path)
    with pytest.raises(TrainingDivergedError, match=r"^training diverged: the gradient norm is inf at step 3 \(epoch 0\) although the loss was finite"):
        train(cfg)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 3 and all(torch.isfinite(w).all() for w in ckpt["state_dict"].values())


def test_nonfinite_loss_on_the_command_line_is_one_line(tmp_path):
    line = one_line_error(cli([*RUN, *FAULT, "+callbacks.fault.step=2", "+callbacks.fault.action=poison"], tmp_path))
    assert "training diverged: the loss is nan at step 2" in line


@pytest.mark.slow
def test_hydra_full_error_shows_the_traceback(tmp_path):
    full = cli([*RUN, *FAULT, "+callbacks.fault.step=2", "+callbacks.fault.action=poison"], tmp_path, HYDRA_FULL_ERROR="1")
    assert full.returncode == 1 and "Traceback" in full.stderr and "TrainingDivergedError" in full.stderr
    full = cli([*RUN, f"resume={tmp_path / 'none'}"], tmp_path, HYDRA_FULL_ERROR="1")
    assert full.returncode == 1 and "Traceback" in full.stderr and "CheckpointError" in full.stderr


class Payload:
    """Pickles as a call to os.system: loading it with weights_only=False would run the command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_checkpoint_with_code_is_refused_and_never_run(tmp_path):
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": Payload(tmp_path / "pwned")}, evil)
    # the payload is real: an unsafe load runs it
    proof = tmp_path / "proof"
    torch.save({"x": Payload(proof)}, tmp_path / "proof.ckpt")
    torch.load(tmp_path / "proof.ckpt", weights_only=False)
    assert proof.exists()
    # training (resume) and sampling refuse it with one line, and nothing runs
    with pytest.raises(CheckpointError) as err:
        train(compose_train([*RUN, f"ckpt_path={evil}"], tmp_path / "run"))
    assert "could run code (posix.system)" in str(err.value) and "\n" not in str(err.value)
    line = one_line_error(cli([f"ckpt={evil}", "num=1"], tmp_path, script="sample.py"))
    assert f"ckpt={evil} holds pickled objects that could run code" in line
    assert not (tmp_path / "pwned").exists()


def test_truncated_and_foreign_checkpoints_are_one_line(uninterrupted, tmp_path):
    ref_dir, _ = uninterrupted
    good = (ref_dir / "checkpoints" / "last.ckpt").read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good[: len(good) // 2])
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weight": torch.ones(3)}, foreign)
    weights_only = tmp_path / "weights.ckpt"
    ckpt = torch.load(ref_dir / "checkpoints" / "last.ckpt", weights_only=True)
    torch.save({"state_dict": ckpt["state_dict"], "hyper_parameters": ckpt["hyper_parameters"]}, weights_only)
    cases = {truncated: "cannot be loaded: it is truncated or not a PyTorch checkpoint",
             foreign: "is not an autoreg training checkpoint", weights_only: "holds weights only, not the training state"}
    for path, expected in cases.items():
        with pytest.raises(CheckpointError) as err:
            train(compose_train([*RUN, f"ckpt_path={path}"], tmp_path / "run"))
        assert f"ckpt_path={path} {expected}" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint"):
        AutoregressiveModule.from_checkpoint(str(truncated))  # sample.py's loader
    text = tmp_path / "README.md"
    text.write_text("# not a checkpoint\n")
    with pytest.raises(CheckpointError, match=f"ckpt={text} is not a checkpoint at all") as err:
        AutoregressiveModule.from_checkpoint(str(text))  # not told that it "could run code"
    assert "\n" not in str(err.value)


def test_truncated_dataset_file_is_one_line_naming_it(tmp_path):
    write_tiny_mnist(tmp_path / "data")
    images = tmp_path / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])  # a download cut short
    with pytest.raises(DataError) as err:
        train(compose_train([*RUN, f"data.root={tmp_path / 'data'}", "data.source=auto"], tmp_path / "run"))
    message = str(err.value)
    assert message.startswith(f"{images} is truncated: its header promises 40x28x28 values (31376 bytes) but it has 31276 bytes")
    assert "\n" not in message  # and not silently replaced by a download or the bundled subset


def test_wrong_shaped_images_and_labels_out_of_range_are_one_line(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    write_tiny_mnist(root)
    write_idx(root / "MNIST" / "raw" / "train-images-idx3-ubyte", rng.integers(0, 256, (40, 32, 32)))
    with pytest.raises(DataError) as err:
        train(compose_train([*RUN, f"data.root={root}", "data.source=auto"], tmp_path / "run"))
    assert "the train split has images of 1x32x32 but mnist images are 1x28x28" in str(err.value)
    write_tiny_mnist(root)
    labels = rng.integers(0, 10, 10)
    labels[3] = 12
    write_idx(root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", labels)
    with pytest.raises(DataError) as err:
        train(compose_train([*RUN, f"data.root={root}", "data.source=auto"], tmp_path / "run"))
    assert "the test split has 1 label(s) out of range (first: 12); mnist labels are 0..9" in str(err.value)
    assert "\n" not in str(err.value)


def test_unwritable_output_dir_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    line = one_line_error(cli([*RUN, f"hydra.run.dir={blocker / 'run'}"], tmp_path))
    assert f"hydra.run.dir={blocker / 'run'} cannot be written (Not a directory)" in line
    with pytest.raises(OutputError, match="paths.output_dir=.* cannot be written"):
        train(compose_train(RUN, blocker / "run"))
    with pytest.raises(OutputError, match=f"cannot write checkpoint {blocker}/last.ckpt"):
        AtomicCheckpointIO().save_checkpoint({"x": 1}, blocker / "last.ckpt")


# --- data order and sharding ---------------------------------------------------------------------------


def test_sharded_batches_give_each_process_its_share():
    for size, batch, world in [(103, 8, 1), (103, 8, 2), (103, 8, 3), (9, 4, 2), (5, 4, 4)]:
        for shuffle in (True, False):
            shards = [list(ShardedBatches(size, batch, shuffle, seed=1, rank=r, world_size=world)) for r in range(world)]
            assert len({len(s) for s in shards}) == 1  # every process runs the same number of steps
            seen = torch.cat([torch.cat(s) for s in shards]).tolist()
            assert len(seen) == len(set(seen))  # nothing twice
            assert len(seen) == (size - size % world if shuffle else size)  # eval: everything, once


def test_sharded_batches_resume_mid_epoch_with_the_same_or_another_world_size():
    full = list(ShardedBatches(50, 4, True, seed=7))
    first = ShardedBatches(50, 4, True, seed=7)
    it = iter(first)
    head = [next(it) for _ in range(5)]
    restored = ShardedBatches(50, 4, True, seed=7)
    restored.load_state_dict(first.state_dict())
    assert [b.tolist() for b in head + list(restored)] == [b.tolist() for b in full]
    halves = [ShardedBatches(50, 2, True, seed=7, rank=r, world_size=2) for r in range(2)]
    for half in halves:
        half.load_state_dict(first.state_dict())
    rest = torch.cat([torch.cat([a, b]) for a, b in zip(*halves)])
    assert torch.equal(torch.cat(head + [rest]), torch.cat(full))  # the rest of the epoch, re-cut
    other_epoch = ShardedBatches(50, 4, True, seed=7)
    other_epoch.set_epoch(1)
    assert not torch.equal(torch.cat(list(other_epoch)), torch.cat(full))


# --- slow: faults from outside, at moments nobody chose --------------------------------------------

LONG = [o for o in RUN if not o.startswith(("trainer.limit_train_batches", "checkpoint."))] + [
    "trainer.limit_train_batches=30", "checkpoint.every_n_train_steps=4"]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_matches_uninterrupted(tmp_path):
    import random
    import time

    ref_metrics, _ = train(compose_train(LONG, tmp_path / "ref"))
    ref_counts = tb_counts(tmp_path / "ref")
    base = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env = {**base, "PYTHONPATH": str(ROOT / "tests"), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    rng = random.Random(0)
    for attempt in range(2):
        run_dir = tmp_path / f"run{attempt}"
        slow = ["+callbacks.slow._target_=faults.Slow", "+callbacks.slow.seconds=0.1", f"hydra.run.dir={run_dir}"]
        proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *LONG, *slow], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        last = run_dir / "checkpoints" / "last.ckpt"
        while not last.exists() and proc.poll() is None:
            time.sleep(0.05)
        delay = rng.uniform(0.0, 3.0)
        time.sleep(delay)  # anywhere: mid-step, mid-save, mid-log
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
        killed_at = load_checkpoint(last)["global_step"]
        before = tb_counts(run_dir)
        metrics, _ = train(compose_train([*LONG, f"resume={run_dir}"], run_dir))
        counts = tb_counts(run_dir)
        where = f"killed {delay:.2f}s after the first checkpoint, resumed from step {killed_at}, logged up to step {max(s for _, s in before)}"
        assert 0 < killed_at < 60 and metrics["global_step"] == 60, where
        assert metrics["val/nll"] == ref_metrics["val/nll"], where
        assert counts == ref_counts, f"{where}: missing {sorted((ref_counts - counts).items())}, extra {sorted((counts - ref_counts).items())}"


@pytest.mark.slow
def test_submitit_local_requeues_on_its_timeout_signal_and_the_job_resumes(tmp_path):
    """submitit's local executor sends SIGUSR2 30 s into a 1-minute job, as SLURM does before a
    time limit; the job saves, submitit requeues it, and the requeued job resumes from last.ckpt."""
    config = [o for o in LONG if not o.startswith("trainer.limit_train_batches")] + ["trainer.limit_train_batches=75"]
    ref_metrics, _ = train(compose_train(config, tmp_path / "ref"))
    sweep = tmp_path / "sweep"
    proc = cli(["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=1", f"hydra.sweep.dir={sweep}",
                "ckpt_path=last", *config, "+callbacks.slow._target_=faults.Slow", "+callbacks.slow.seconds=0.2"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (job,) = [p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")]
    log = (job / "train.log").read_text()
    assert "SIGUSR2: saved" in log and "resuming from" in log, log
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["global_step"] == 150 and metrics["val/nll"] == ref_metrics["val/nll"]
