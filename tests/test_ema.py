"""optim.ema_decay: the weight average is what is validated, sampled, kept in best.ckpt and tested;
last.ckpt keeps both weight sets and a resumed run continues exactly."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from autoreg.build import build_datamodule
from autoreg.cli import train
from autoreg.config import validate
from autoreg.errors import ConfigError
from autoreg.module import AutoregressiveModule

from conftest import TINY, compose_train

pytestmark = pytest.mark.usefixtures("one_thread")

RUN = [o for o in TINY if not o.startswith(("trainer.limit_train_batches", "trainer.max_epochs"))] + [
    "optim.ema_decay=0.9", "optim.lr=3e-3", "trainer.max_epochs=-1", "trainer.max_steps=8", "trainer.limit_train_batches=6",
    "trainer.deterministic=true", "checkpoint.every_n_train_steps=3", "test=true",
]


def evaluate(state_dict, module: AutoregressiveModule, data_cfg, split: str) -> float:
    module.load_state_dict(state_dict)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=2, limit_test_batches=2)
    run = trainer.validate if split == "val" else trainer.test
    (result,) = run(module, datamodule=build_datamodule(data_cfg), verbose=False)
    return result[f"{split}/nll"]


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ema")
    metrics, objects = train(compose_train(RUN, out))
    return out, metrics, objects


def test_validation_best_ckpt_and_test_use_the_average(ema_run):
    out, metrics, objects = ema_run
    best = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)
    average, trained = best["state_dict"], best["current_model_state"]
    assert any(not torch.equal(average[k], trained[k]) for k in average)  # two different weight sets
    module, data = AutoregressiveModule.from_checkpoint(str(out / "checkpoints" / "best.ckpt")), objects["cfg"].data
    for k, v in module.state_dict().items():  # what sample.py and compress.py load is the average
        assert torch.equal(v, average[k])
    assert evaluate(average, module, data, "val") == pytest.approx(metrics["val/nll"], rel=1e-5)
    assert evaluate(average, module, data, "test") == pytest.approx(metrics["test/nll"], rel=1e-5)
    assert evaluate(trained, module, data, "test") != pytest.approx(metrics["test/nll"], rel=1e-5)
    for k, v in objects["module"].state_dict().items():  # after training, the module holds the average
        assert torch.equal(v, torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"][k])


def test_last_ckpt_written_after_training_keeps_the_trained_weights(ema_run):
    out, _, _ = ema_run
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 8
    assert any(not torch.equal(last["state_dict"][k], last["current_model_state"][k]) for k in last["state_dict"])


def test_resumed_ema_run_equals_the_uninterrupted_one(ema_run, tmp_path):
    out, metrics, _ = ema_run
    run = tmp_path / "run"
    stopped = compose_train([*RUN, "trainer.max_steps=3", "test=false"], run)
    train(stopped)  # stops after step 3 with last.ckpt; then resume the same run to step 8
    metrics_resumed, _ = train(compose_train([*RUN, f"resume={run}"], run))
    assert metrics_resumed["global_step"] == 8
    assert metrics_resumed["val/nll"] == metrics["val/nll"] and metrics_resumed["test/nll"] == metrics["test/nll"]
    a, b = (torch.load(d / "checkpoints" / "last.ckpt", weights_only=True) for d in (out, run))
    for key in ("state_dict", "current_model_state"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key


@pytest.mark.parametrize("bad", ["0", "1", "1.5", "true", "fast"])
def test_bad_decay_is_one_line_before_torch(bad):
    with pytest.raises(ConfigError, match=f"(?i)optim.ema_decay={bad} is invalid"):
        validate(compose_train([f"optim.ema_decay={bad}"]))
