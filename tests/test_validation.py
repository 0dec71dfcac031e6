"""Bad values fail before any data is read, with one line naming the key, value and allowed values."""
from __future__ import annotations

import subprocess
import sys

import pytest

from autoreg.config import validate

from autoreg.errors import ConfigError
from autoreg.families import names

from conftest import ROOT, TINY, compose_train

BAD = [
    ("model.kernel=4", "model.kernel=4"),
    ("model.kernel=0", "model.kernel=0"),
    ("model.kernel=-3", "model.kernel=-3"),
    ("model.first_kernel=6", "model.first_kernel=6"),
    ("model.depth=0", "model.depth=0"),
    ("model.channels=0", "model.channels=0"),
    ("model.channels=7", "model.channels=7"),
    ("data.source=ftp", "data.source=ftp"),
    ("data.binarize=otsu", "data.binarize=otsu"),
    ("data.batch_size=0", "data.batch_size=0"),
    ("optim.lr=-1", "optim.lr=-1"),
    ("model.likelihood=bernoulli", "model.likelihood=bernoulli: the head is chosen as a config group; write model/likelihood=bernoulli"),
]


@pytest.mark.parametrize("override,named", BAD)
def test_bad_value_names_key_and_value(override, named):
    cfg = compose_train([override])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    message = str(err.value)
    assert named in message and "\n" not in message


def test_plain_stack_accepts_odd_channels():
    validate(compose_train(["model.residual=false", "model.channels=7"]))


def test_cifar_has_no_bundled_fallback_named():
    cfg = compose_train(["data=cifar10", "data.source=bundled"])
    with pytest.raises(ConfigError, match="data.source=bundled"):
        validate(cfg)


def run_train(*overrides: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={cwd}/run"],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )


def test_cli_bad_value_is_one_line_before_data(tmp_path):
    proc = run_train("model.kernel=4", "data.root=" + str(tmp_path / "nodata"), cwd=tmp_path)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: model.kernel=4 is invalid: it must be an odd integer >= 1 (e.g. 3, 5, 7)"]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "nodata").exists()  # no data was read or downloaded
    assert not (tmp_path / "run").exists()  # and no run dir was made


def test_a_bad_value_is_answered_before_torch_is_imported(tmp_path):
    """The config checks run without torch (autoreg.families): about 1 s instead of torch's and
    Lightning's import time (experiments/benchmarks/time_to_error.py)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "train.py"), "model=pixelrnn", "model.cell=lsmt", f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and lines[-1] == "error: model.cell=lsmt is not allowed; choose one of: lstm, gru"
    imported = {line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")}
    assert "autoreg.families" in imported and "hydra" in imported  # the check ran, and importtime reports
    assert not {"torch", "pytorch_lightning"} & imported
    assert not (tmp_path / "run").exists()


def test_cli_misspelt_group_option_is_one_line_with_a_suggestion(tmp_path):
    proc = run_train("model=pixelrnnn", cwd=tmp_path)
    assert proc.returncode == 1
    options = ", ".join(names())
    assert "pixelcnn, " in options and proc.stderr.strip().splitlines() == [
        f"error: model=pixelrnnn is not an option of the config group 'model' (did you mean pixelrnn?); choose one of: {options}"
    ]
    assert not (tmp_path / "run").exists()  # nothing was made


def test_group_options_of_a_sweep_and_presets_are_checked():
    from autoreg.preflight import _check_group_options

    conf = ROOT / "conf"
    _check_group_options(["-m", "model=pixelcnn,pixelrnn", "+experiment=lab", "hparams_search=null",
                          "hydra/launcher=basic", "model.kernel=3"], conf)  # all fine, hydra/ left to Hydra
    with pytest.raises(ConfigError, match=r"model=transformer is not an option of the config group 'model'; choose one of"):
        _check_group_options(["-m", "model=pixelcnn,transformer"], conf)
    with pytest.raises(ConfigError, match=r"experiment=kernel_sweeep .*did you mean kernel_sweep\?"):
        _check_group_options(["+experiment=kernel_sweeep"], conf)
    _check_group_options(["model/likelihood=bernoulli", "-m", "model/likelihood=auto,categorical"], conf)
    with pytest.raises(ConfigError, match=r"model/likelihood=softmax is not an option of the config group 'model/likelihood'; "
                                          r"choose one of: auto, bernoulli, categorical, logistic_mixture$"):
        _check_group_options(["model/likelihood=softmax"], conf)
    with pytest.raises(ConfigError, match=r"model=likelihood is not an option"):  # the head's group is not a family
        _check_group_options(["model=likelihood"], conf)


@pytest.mark.parametrize("config,argv,line", [
    ("train", ["model.kernal=5"], "model.kernal is not a key of conf/train.yaml (or its groups): check the spelling (+model.kernal=... adds a new key)"),
    ("quality", ["ckpt=x.ckpt", "nmu=4"], "nmu is not a key of conf/quality.yaml (or its groups): check the spelling (+nmu=... adds a new key)"),
    ("sample", ["ckpt=x.ckpt", "num=[4"], "no viable alternative at input '[4'."),
    ("train", ["model=pixelcnn_pp", "model.nr_logistic_mix=5"],
     "model.nr_logistic_mix is an option of the logistic_mixture likelihood: write model/likelihood=logistic_mixture model.likelihood.nr_logistic_mix=5"),
])
def test_a_key_the_config_does_not_have_is_one_line_before_hydra(config, argv, line, capsys):
    from autoreg.apps import check_overrides

    with pytest.raises(SystemExit) as exit_:
        check_overrides(config, argv)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {line}")


def test_long_sweep_job_names_are_cut_and_unique():
    from autoreg.run_dirs import job_dirname

    a, b = "x" * 300 + "model.kernel=3", "x" * 300 + "model.kernel=5"
    assert job_dirname("model.kernel=3") == "model.kernel=3"
    assert len(job_dirname(a)) <= 120 and job_dirname(a) != job_dirname(b)


@pytest.mark.parametrize("override,named", [
    ("trainer.max_epochs=-5", "trainer.max_epochs=-5 is invalid: it must be an integer >= 0, or -1 for no limit"),
    ("trainer.max_steps=2.5", "trainer.max_steps=2.5 is invalid"),
    ("trainer.limit_train_batches=1.5", "trainer.limit_train_batches=1.5 is invalid"),
    ("trainer.limit_val_batches=-1", "trainer.limit_val_batches=-1 is invalid"),
    ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0 is invalid: it must be an integer >= 1"),
    ("trainer.precision=64-bit", "trainer.precision=64-bit is not allowed; choose one of: auto, 32-true"),
])
def test_common_trainer_arguments_are_checked_before_torch(override, named):
    with pytest.raises(ConfigError) as err:
        validate(compose_train([override]))
    assert named in str(err.value) and "\n" not in str(err.value)


def test_other_trainer_arguments_lightning_refuses_are_one_line(tmp_path):
    from autoreg.cli import train

    with pytest.raises(ConfigError, match=r"^a trainer.<argument> is invalid: .*nonsense") as err:
        train(compose_train([*TINY, "trainer.strategy=nonsense"], output_dir=tmp_path))
    assert "\n" not in str(err.value)
