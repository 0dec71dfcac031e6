"""The post-lab sweep presets, the launchers and the Optuna search: each composes as train.py
composes it, every job a preset would launch passes validation, and small sweeps run end to end
through train.py in a subprocess (as a user runs them) into a report."""
from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize

from autoreg.analysis.report import write_report
from autoreg.config import validate

from conftest import QUALITY_FAST, ROOT

PRESETS = {
    "depth_sweep": {"model.depth": ["2", "4", "8", "12"]},
    "kernel_sweep": {"model.kernel": ["3", "5", "7", "9"]},
    "rnn_cell_sweep": {"model.cell": ["lstm", "gru"], "model.arch": ["row_lstm", "diagonal_bilstm"]},
}

# A sweep job in seconds: tiny model, 4 steps, validation (and a sample grid) after steps 2 and 4.
TINY_SWEEP = [
    "model.channels=8",
    "model.depth=1",
    "data.source=bundled",
    "trainer.max_epochs=-1",
    "trainer.max_steps=4",
    "trainer.check_val_every_n_epoch=null",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=2",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1",
    "trainer.enable_model_summary=false",
    "callbacks.samples.num=4",
    "callbacks.progress_bar.refresh_rate=0",
    *QUALITY_FAST,
]


def compose_hydra(overrides: list[str]):
    """The train config with its `hydra` node, as a multirun sees it."""
    with initialize(version_base="1.3", config_path="../conf"):
        return compose(config_name="train", overrides=overrides + ["paths.output_dir=unused"], return_hydra_config=True)


def train_py(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def job_dirs(sweep) -> list:
    return sorted((p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: int(p.name.split("_")[0]))


@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_sweeps_its_keys_and_every_job_is_valid(name, quick):
    preset = f"{name}_quick" if quick else name
    cfg = compose_hydra([f"+experiment={preset}"])
    params = {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}
    assert params == PRESETS[name]
    assert (cfg.data.source == "bundled") == quick  # quick: offline data, a fixed step budget
    assert cfg.trainer.max_steps == (1200 if quick else -1)
    for values in itertools.product(*params.values()):
        validate(compose_hydra([f"+experiment={preset}", *(f"{k}={v}" for k, v in zip(params, values))]))


def test_parallel_and_slurm_launchers_compose():
    parallel = compose_hydra(["hydra/launcher=parallel"]).hydra.launcher
    assert parallel._target_.endswith("autoreg_launcher.parallel_launcher.ParallelLauncher") and parallel.jobs_per_gpu == 1  # tests/test_gpus.py
    slurm = compose_hydra(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"]).hydra.launcher
    assert slurm._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (slurm.partition, slurm.gpus_per_node, slurm.tasks_per_node, slurm.timeout_min) == ("gpu", 1, 1, 240)


def test_slurm_launcher_config_makes_a_valid_sbatch_script(tmp_path, monkeypatch):
    """submitit turns the config into the sbatch script without a cluster (the launcher's own
    mapping: shared keys as they are, the others prefixed with `slurm_`)."""
    import submitit

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", staticmethod(lambda: 1))  # as if srun existed
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    launcher = OmegaConf.to_container(compose_hydra(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"]).hydra.launcher)
    for key in ("_target_", "submitit_folder", "max_num_timeout", "name"):  # the launcher's, not sbatch's
        launcher.pop(key)
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in launcher.items()})
    script = executor._executor._make_submission_file_text("python train.py", "0")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--time=240", "--ntasks-per-node=1", "--cpus-per-task=8"):
        assert f"#SBATCH {line}" in script, line


def test_optuna_search_composes():
    sweeper = compose_hydra(["hparams_search=optuna"]).hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "minimize"
    assert set(sweeper.params) == {"optim.lr", "model.depth", "model.kernel", "model.channels"}


def test_preset_sweep_in_parallel_with_a_failing_job_and_its_report(tmp_path):
    """kernel_sweep_quick with one bad kernel, through the joblib launcher: the bad job fails
    (and Hydra exits non-zero), the others finish, and the report marks it."""
    sweep = tmp_path / "sweep"
    proc = train_py("-m", "+experiment=kernel_sweep_quick", "model.kernel=3,4,5", "hydra/launcher=parallel",
                    *TINY_SWEEP, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 1 and "model.kernel=4 is invalid" in proc.stderr, proc.stderr[-2000:]
    jobs = job_dirs(sweep)
    assert [(j / "metrics.json").is_file() for j in jobs] == [True, False, True]

    report = write_report(sweep, tmp_path / "report").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[0] for row in rows] == ["| 3", "| 4", "| 5"]
    assert "FAILED" in rows[1] and "FAILED" not in rows[0] + rows[2]
    assert "model.kernel=4 is invalid" in report.split("## Failed jobs")[1]
    assert "data.source_used=bundled" in report and "4 optimizer steps per job" in report
    for png in ("val_nll.png", "curves.png", "samples.png"):
        assert (tmp_path / "report" / png).stat().st_size > 1000, png
        assert f"]({png})" in report


def test_optuna_search_minimises_the_returned_val_nll(tmp_path):
    sweep = tmp_path / "sweep"
    proc = train_py("hparams_search=optuna", "hydra.sweeper.n_trials=2", *TINY_SWEEP, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    nll = [json.loads((j / "metrics.json").read_text())["val/nll"] for j in job_dirs(sweep)]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert len(nll) == 2 and best["best_value"] == pytest.approx(min(nll))
    assert {"optim.lr", "model.kernel"} <= set(best["best_params"])  # channels, depth fixed here


def test_submitit_local_executor_runs_a_sweep_job(tmp_path):
    """The submitit launcher's path (pickled task, a separate job process) on this machine."""
    sweep = tmp_path / "sweep"
    proc = train_py("-m", "hydra/launcher=submitit_local", "model.kernel=3", *TINY_SWEEP, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (job,) = job_dirs(sweep)
    assert json.loads((job / "metrics.json").read_text())["global_step"] == 4
    assert list((sweep / ".submitit").glob("*/*_log.out"))
