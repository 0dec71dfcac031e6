"""GPU leases for local parallel sweeps (autoreg.gpus, hydra/launcher=parallel) against a faked
device list, and the one-line refusal of trainer=gpu on a machine without a GPU. Nothing here
needs a GPU: the leases are file locks, and `visible_gpus` is what the tests fake."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from autoreg import gpus
from autoreg.errors import ConfigError
from autoreg.preflight import Preflight
from conftest import ROOT, compose_train
from hydra_plugins.autoreg_launcher.parallel_launcher import ParallelLauncher
from test_sweeps import compose_hydra


@pytest.fixture
def fake_gpus(monkeypatch):
    """`fake_gpus(n)`: torch "sees" GPUs 0..n-1."""
    def fake(n: int) -> None:
        monkeypatch.setattr(gpus, "visible_gpus", lambda: list(range(n)))

    return fake


def job_cfg(tmp_path, **trainer):
    return OmegaConf.create({"trainer": {"accelerator": "gpu", "devices": 1, **trainer}, "paths": {"output_dir": str(tmp_path)}})


def slots_held(lease_dir: Path, gpu_ids, jobs_per_gpu: int) -> int:
    return sum(gpus._is_held(gpus.slot_file(lease_dir, g, s)) for g in gpu_ids for s in range(jobs_per_gpu))


# --- the leases -------------------------------------------------------------------------------

def test_jobs_spread_over_the_gpus_before_they_share_one(tmp_path):
    leases = [gpus.try_lease(tmp_path, [0, 1, 2], jobs_per_gpu=2) for _ in range(6)]
    assert [lease.gpu for lease in leases[:3]] == [0, 1, 2]
    assert sorted(lease.gpu for lease in leases) == [0, 0, 1, 1, 2, 2]
    assert gpus.try_lease(tmp_path, [0, 1, 2], jobs_per_gpu=2) is None  # every slot held
    leases[4].release()
    again = gpus.try_lease(tmp_path, [0, 1, 2], jobs_per_gpu=2)
    assert (again.gpu, again.slot) == (leases[4].gpu, leases[4].slot)


def test_a_job_takes_the_least_busy_gpu_then_its_workers_last_one(tmp_path):
    first, second = gpus.try_lease(tmp_path, [0, 1], 2), gpus.try_lease(tmp_path, [0, 1], 2)
    third = gpus.try_lease(tmp_path, [0, 1], 2)  # both busy once: GPU 0
    first.release()  # GPU 0 slot 0 free, GPU 0 still busy with `third`; GPU 1 busy with `second`
    assert third.gpu == 0 and gpus.try_lease(tmp_path, [0, 1], 2, prefer=1).gpu == 1
    assert gpus.try_lease(tmp_path / "other", [0, 1, 2], 1, prefer=2).gpu == 2  # all free: the preferred one
    second.release()


def test_a_lease_is_released_when_its_job_dies(tmp_path):
    """A job killed with SIGKILL (no cleanup of its own) frees its GPU: the kernel drops the lock."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from autoreg.gpus import try_lease; "
         f"lease = try_lease(Path({str(tmp_path)!r}), [0], 1, holder='job 7'); print(lease.gpu, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "0"
        assert gpus.try_lease(tmp_path, [0], 1) is None
        assert (tmp_path / "gpu0.slot0.lock").read_text() == f"pid {holder.pid} job 7\n"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lease = gpus.try_lease(tmp_path, [0], 1)
    assert lease is not None and lease.gpu == 0


def test_lease_gpu_waits_while_every_slot_is_held(tmp_path):
    held = gpus.try_lease(tmp_path, [0], 1)
    got = []
    waiter = threading.Thread(target=lambda: got.append(gpus.lease_gpu(tmp_path, [0], 1, poll_seconds=0.02)))
    waiter.start()
    time.sleep(0.3)
    assert not got
    held.release()
    waiter.join(timeout=10)
    assert [lease.gpu for lease in got] == [0]


@pytest.mark.parametrize("n_jobs, n_gpus, jobs_per_gpu", [(4, 1, 1), (4, 1, 4), (6, 2, 1), (9, 2, 2), (5, 3, 1)])
def test_a_sweeps_jobs_never_overfill_a_gpu_and_release_every_lease(tmp_path, monkeypatch, n_jobs, n_gpus, jobs_per_gpu):
    """N jobs through M GPUs x k slots, as many at once as there are slots (joblib's workers are
    threads here: each lease is its own open file, so they exclude one another as processes do)."""
    real_sleep, slept = time.sleep, [0.0]

    def bounded_sleep(seconds):  # a lease never released fails the test instead of hanging it
        slept[0] += seconds
        assert slept[0] < 60, "jobs waited 60 s for a GPU slot"
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", bounded_sleep)
    plan = gpus.SweepGpus(tuple(range(n_gpus)), jobs_per_gpu, str(tmp_path / "leases"))
    running = {g: 0 for g in range(n_gpus)}
    most = dict(running)
    lock = threading.Lock()

    def task(cfg):
        (gpu,) = cfg.trainer.devices
        with lock:
            running[gpu] += 1
            most[gpu] = max(most[gpu], running[gpu])
        time.sleep(0.05)
        with lock:
            running[gpu] -= 1
        return gpu

    with ThreadPoolExecutor(max_workers=n_gpus * jobs_per_gpu) as pool:
        used = list(pool.map(lambda i: gpus.run_on_leased_gpu(task, plan, job_cfg(tmp_path / str(i))), range(n_jobs)))
    assert len(used) == n_jobs and set(used) <= set(range(n_gpus))
    assert all(m <= jobs_per_gpu for m in most.values()), most
    if n_jobs >= n_gpus * jobs_per_gpu:
        assert set(used) == set(range(n_gpus))
    assert slots_held(Path(plan.lease_dir), range(n_gpus), jobs_per_gpu) == 0


def test_a_failing_job_releases_its_lease(tmp_path):
    plan = gpus.SweepGpus((0,), 1, str(tmp_path))

    def task(cfg):
        raise ConfigError("model.kernel=4 is invalid")

    with pytest.raises(ConfigError):
        gpus.run_on_leased_gpu(task, plan, job_cfg(tmp_path))
    assert slots_held(tmp_path, [0], 1) == 0


@pytest.mark.parametrize("trainer, plan", [
    ({"accelerator": "cpu"}, True),         # a CPU job in a GPU sweep
    ({"devices": 2}, True),                 # a job that names its devices
    ({"devices": [3]}, True),
    ({}, False),                            # no GPUs planned (a CPU machine)
])
def test_jobs_that_do_not_train_on_one_gpu_run_as_they_are(tmp_path, trainer, plan):
    sweep = gpus.SweepGpus((0, 1), 1, str(tmp_path / "leases")) if plan else None
    cfg = job_cfg(tmp_path, **trainer)
    before = OmegaConf.to_container(cfg)
    assert gpus.run_on_leased_gpu(lambda c: OmegaConf.to_container(c), sweep, cfg) == before
    assert not (tmp_path / "leases").exists()


def test_the_job_trains_on_its_leased_gpu_and_its_log_says_which(tmp_path, caplog):
    plan = gpus.SweepGpus((0, 1), 2, str(tmp_path))
    other = gpus.try_lease(tmp_path, [0, 1], 2)  # GPU 0 busy: the job gets GPU 1
    with caplog.at_level("INFO", logger="autoreg"):
        devices = gpus.run_on_leased_gpu(lambda c: list(c.trainer.devices), plan, job_cfg(tmp_path, accelerator="auto"))
    assert other.gpu == 0 and devices == [1]
    assert "GPU 1 leased for this job (slot 1 of 2; trainer.devices=[1]" in caplog.text


# --- n_jobs, the launcher's config --------------------------------------------------------------

def sweep_config(tmp_path, *overrides):
    cfg = compose_hydra(list(overrides) + [f"hydra.sweep.dir={tmp_path}/sweep"])
    launcher = cfg.hydra.launcher
    return cfg, dict(n_jobs=launcher.n_jobs, jobs_per_gpu=launcher.jobs_per_gpu, gpus=launcher.gpus, lease_dir=launcher.lease_dir)


@pytest.mark.parametrize("overrides, n_gpus, n_jobs, leased", [
    ([], 4, 4, (0, 1, 2, 3)),                                                   # one job per GPU
    (["hydra.launcher.jobs_per_gpu=4"], 4, 16, (0, 1, 2, 3)),
    (["hydra.launcher.jobs_per_gpu=4"], 1, 4, (0,)),
    (["hydra.launcher.gpus=[1,3]", "hydra.launcher.jobs_per_gpu=2"], 4, 4, (1, 3)),
    (["hydra.launcher.n_jobs=3"], 4, 3, (0, 1, 2, 3)),                          # the user's n_jobs stays
    (["trainer=gpu", "hydra.launcher.jobs_per_gpu=2"], 2, 4, (0, 1)),
    ([], 0, gpus.CPU_SWEEP_JOBS, None),                                         # no GPU: the CPU rule
    (["hydra.launcher.n_jobs=-1"], 0, -1, None),
])
def test_n_jobs_is_gpus_times_jobs_per_gpu_where_jobs_train_on_gpus(tmp_path, fake_gpus, overrides, n_gpus, n_jobs, leased):
    fake_gpus(n_gpus)
    cfg, keys = sweep_config(tmp_path, "hydra/launcher=parallel", *overrides)
    got_n_jobs, plan = gpus.plan_parallel_sweep(cfg, **keys)
    assert got_n_jobs == n_jobs
    assert (plan.gpus if plan else None) == leased
    if plan:
        assert plan.lease_dir == str((tmp_path / "sweep" / ".gpu_leases").absolute())


def test_a_cpu_sweep_on_a_gpu_machine_leases_nothing_and_never_asks_torch(tmp_path, monkeypatch):
    monkeypatch.setattr(gpus, "visible_gpus", lambda: pytest.fail("asked for the GPUs of a CPU sweep"))
    cfg, keys = sweep_config(tmp_path, "hydra/launcher=parallel", "trainer.accelerator=cpu", "hydra.launcher.jobs_per_gpu=4")
    assert gpus.plan_parallel_sweep(cfg, **keys) == (gpus.CPU_SWEEP_JOBS, None)


@pytest.mark.parametrize("overrides, n_gpus, message", [
    (["hydra.launcher.jobs_per_gpu=0"], 2, "hydra.launcher.jobs_per_gpu=0 is invalid: it must be an integer >= 1"),
    (["hydra.launcher.n_jobs=0"], 2, "hydra.launcher.n_jobs=0 is invalid"),
    (["hydra.launcher.gpus=[2]"], 2, "hydra.launcher.gpus=[2] names GPU 2, which torch does not see here (it sees: 0-1)"),
    (["hydra.launcher.gpus=[]"], 2, "hydra.launcher.gpus=[] names no GPU (it sees: 0-1)"),
    (["trainer=gpu"], 0, "use trainer=default"),
])
def test_bad_launcher_keys_are_one_line(tmp_path, fake_gpus, overrides, n_gpus, message):
    fake_gpus(n_gpus)
    cfg, keys = sweep_config(tmp_path, "hydra/launcher=parallel", *overrides)
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        gpus.plan_parallel_sweep(cfg, **keys)
    assert "\n" not in str(err.value)


def test_parallel_launcher_composes_and_hands_joblib_only_its_own_keys():
    overrides = ["hydra/launcher=parallel", "hydra.launcher.jobs_per_gpu=4", "hydra.launcher.gpus=[0,1]"]
    launcher = compose_hydra(overrides).hydra.launcher
    assert launcher._target_ == "hydra_plugins.autoreg_launcher.parallel_launcher.ParallelLauncher"
    assert (launcher.n_jobs, launcher.jobs_per_gpu, list(launcher.gpus), launcher.lease_dir) == (None, 4, [0, 1], None)
    keys = {k: v for k, v in OmegaConf.to_container(launcher).items() if k != "_target_"}
    made = ParallelLauncher(**keys)
    assert (made.jobs_per_gpu, made.gpus) == (4, [0, 1])
    assert not {"jobs_per_gpu", "gpus", "lease_dir"} & set(made.joblib)  # joblib.Parallel would refuse them
    with pytest.raises(Exception, match="jobs_per_gpu"):
        compose_hydra(["hydra/launcher=parallel", "hydra.launcher.jobs_per_gpu=many"])


# --- trainer=gpu without a GPU -------------------------------------------------------------------

def test_require_gpu_asks_torch_only_for_a_gpu_config(monkeypatch):
    monkeypatch.setattr(gpus, "visible_gpus", lambda: pytest.fail("asked for GPUs of a config that wants none"))
    gpus.require_gpu(compose_train([]))  # trainer=default: accelerator auto
    gpus.require_gpu(compose_train(["trainer.accelerator=cpu"]))
    monkeypatch.setattr(gpus, "visible_gpus", lambda: [0])
    gpus.require_gpu(compose_train(["trainer=gpu"]))


def test_require_gpu_names_trainer_default(monkeypatch, fake_gpus):
    fake_gpus(0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ConfigError) as err:
        gpus.require_gpu(compose_train(["trainer=gpu"]))
    assert str(err.value) == ("trainer.accelerator=gpu needs a CUDA GPU, but torch sees none on this machine "
                              "(CUDA_VISIBLE_DEVICES=''); use trainer=default (the CPU here, a GPU where there is one)")


def test_a_gpu_sweep_without_a_gpu_fails_before_its_dir_exists(tmp_path, fake_gpus, capsys):
    fake_gpus(0)
    cfg = compose_hydra(["trainer=gpu", f"hydra.sweep.dir={tmp_path}/sweep"])
    with pytest.raises(SystemExit) as exit_:
        Preflight().on_multirun_start(cfg)
    assert exit_.value.code == 1 and "use trainer=default" in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_train_py_trainer_gpu_without_a_gpu_is_one_line_and_no_run_dir(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "trainer=gpu"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: trainer.accelerator=gpu needs a CUDA GPU, but torch sees none on this machine; "
        "use trainer=default (the CPU here, a GPU where there is one)"]
    assert not (tmp_path / "outputs").exists()


# --- a real sweep through joblib's worker processes (faked GPUs, jobs that only sleep) ------------

JOB_SCRIPT = """\
import json, os, sys, time
from pathlib import Path

import hydra

from autoreg import gpus

gpus.visible_gpus = lambda: [0, 1]  # the faked machine: two GPUs


@hydra.main(version_base="1.3", config_path="conf", config_name="job")
def main(cfg):
    start = time.time()
    time.sleep(0.6)
    record = {"pid": os.getpid(), "devices": list(cfg.trainer.devices), "start": start, "end": time.time()}
    Path(cfg.out, f"{cfg.job}.json").write_text(json.dumps(record))


main()
"""


@pytest.mark.parametrize("jobs_per_gpu", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_a_parallel_sweep_leases_gpus_across_joblibs_worker_processes(tmp_path, jobs_per_gpu):
    """hydra/launcher=parallel as Hydra runs it: the plan in the sweep's process, the leases in
    loky's reused workers; 6 jobs on 2 faked GPUs never hold more than jobs_per_gpu jobs on one."""
    conf = tmp_path / "conf"
    (conf / "hydra" / "launcher").mkdir(parents=True)
    (conf / "hydra" / "launcher" / "parallel.yaml").write_text((ROOT / "conf/hydra/launcher/parallel.yaml").read_text())
    (conf / "job.yaml").write_text(
        "defaults:\n  - override hydra/launcher: parallel\n  - _self_\n"
        f"trainer: {{accelerator: gpu, devices: 1}}\njob: 0\nout: {tmp_path}\n"
        f"hydra:\n  sweep: {{dir: {tmp_path}/sweep, subdir: '${{hydra.job.num}}'}}\n")
    (tmp_path / "job.py").write_text(JOB_SCRIPT)
    proc = subprocess.run([sys.executable, "job.py", "-m", "job=0,1,2,3,4,5", f"hydra.launcher.jobs_per_gpu={jobs_per_gpu}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{2 * jobs_per_gpu} jobs at once; each job leases a slot of GPU 0,1 (jobs_per_gpu={jobs_per_gpu})" in proc.stdout
    records = [json.loads((tmp_path / f"{i}.json").read_text()) for i in range(6)]
    assert {tuple(r["devices"]) for r in records} == {(0,), (1,)}
    for gpu in (0, 1):
        on_gpu = [r for r in records if r["devices"] == [gpu]]
        most = max(sum(o["start"] < r["start"] + 1e-3 < o["end"] for o in on_gpu) for r in on_gpu)
        assert most <= jobs_per_gpu, (gpu, on_gpu)
    assert len({r["pid"] for r in records}) <= 2 * jobs_per_gpu  # loky reuses its workers
    logs = [(tmp_path / "sweep" / str(i) / "job.log").read_text() for i in range(6)]
    assert all(f"GPU {r['devices'][0]} leased for this job" in log for r, log in zip(records, logs))
    assert slots_held(tmp_path / "sweep" / ".gpu_leases", (0, 1), jobs_per_gpu) == 0


@pytest.mark.slow
def test_gpu_sweep_script_runs_end_to_end_on_the_cpu(tmp_path):
    """experiments/benchmarks/gpu_sweep.py --cpu-smoke: gpu_speed.py, then both sweeps, every job done."""
    out = tmp_path / "gpu_sweep.md"
    script = ROOT / "experiments" / "benchmarks" / "gpu_sweep.py"
    proc = subprocess.run([sys.executable, str(script), "--cpu-smoke", "--out", str(out), "--sweep-root", str(tmp_path / "sweeps")],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows if "wall" in row] == ["| jobs_per_gpu=1", "| jobs_per_gpu=4"]
    jobs = [row for row in rows if row.startswith("| | model.kernel=")]
    assert len(jobs) == 8 and all(float(row.split(" | ")[-1].rstrip(" |")) > 0 for row in jobs)
    assert "| fp32 |" in (tmp_path / "gpu_speed.md").read_text()
