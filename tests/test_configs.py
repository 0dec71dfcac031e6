"""Every config in every group composes and instantiates, exactly as train.py would use it."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from autoreg.build import build_datamodule
from autoreg.config import run_spec, validate
from autoreg.data import IMAGE_SHAPES
from autoreg.module import AutoregressiveModule
from autoreg import trainer_config
from autoreg.trainer_config import resolve_precision
from omegaconf import OmegaConf

from conftest import ROOT, compose_train


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


def build_module(cfg) -> AutoregressiveModule:
    return AutoregressiveModule(
        model=OmegaConf.to_container(cfg.model, resolve=True),
        image_shape=IMAGE_SHAPES[cfg.data.dataset],
        bits=cfg.data.bits,
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
    )


@pytest.mark.parametrize("name", options("model"))
def test_model_configs(name):
    for data in ("mnist", "mnist256"):
        cfg = compose_train([f"model={name}", f"data={data}"])
        validate(cfg)
        assert sum(p.numel() for p in build_module(cfg).parameters()) > 0


@pytest.mark.parametrize("name", options("data"))
def test_data_configs(name):
    cfg = compose_train([f"data={name}"])
    validate(cfg)
    dm = build_datamodule(cfg.data)  # constructing reads nothing
    assert dm.image_shape == IMAGE_SHAPES[cfg.data.dataset] and not dm.splits


@pytest.mark.parametrize("name", [n for n in options("trainer") if n != "gpu"])
def test_trainer_configs(name, tmp_path):
    cfg, _ = run_spec(compose_train([f"trainer={name}"], tmp_path))  # as train() builds its Trainer
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    assert trainer.max_epochs == cfg.trainer.max_epochs


def test_gpu_trainer_config_composes():
    cfg = compose_train(["trainer=gpu"])
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"


def test_logger_and_callbacks_instantiate(tmp_path):
    cfg = compose_train([], tmp_path)
    logger = instantiate(cfg.logger)
    assert Path(logger.log_dir) == tmp_path
    names = {type(instantiate(c)).__name__ for c in cfg.callbacks.values()}
    assert {"RunCheckpoint", "SampleGrid", "TQDMProgressBar", "ReceptiveFieldImage"} <= names  # RunCheckpoint is a ModelCheckpoint


@pytest.mark.parametrize("name", options("experiment"))
def test_experiment_presets(name):
    cfg = compose_train([f"+experiment={name}"])
    validate(cfg)
    build_module(cfg)


def test_lab_preset_is_the_labs_network():
    cfg = compose_train(["+experiment=lab"])
    m = cfg.model
    assert (m.kernel, m.first_kernel, m.depth, m.channels, m.residual) == (7, 7, 5, 64, False)
    assert cfg.data.batch_size == 64 and cfg.optim.lr == 1e-3


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("accelerator,cuda,device", [("auto", False, "cpu"), ("auto", True, "cuda"), ("cpu", True, "cpu"), ("gpu", True, "cuda")])
def test_precision_auto_picks_bf16_only_where_it_is_fast(fast, accelerator, cuda, device, monkeypatch):
    asked = []
    monkeypatch.setattr(trainer_config, "fast_bf16", lambda d: asked.append(d) or fast)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    composed = compose_train([f"trainer.accelerator={accelerator}"])
    assert composed.trainer.precision == "auto"  # the default
    resolved, note = resolve_precision(composed)
    assert asked == [device]
    assert resolved == {"precision": "bf16-mixed" if fast else "32-true"}
    cfg, notes = run_spec(composed)
    assert cfg.trainer.precision == resolved["precision"] and notes[0] == note and composed.trainer.precision == "auto"
    assert note.startswith(f"trainer.precision=auto -> {cfg.trainer.precision}")
    assert ("GPU" if device == "cuda" else "CPU") in note if fast else device in note


def test_precision_chosen_by_the_user_is_kept(monkeypatch):
    monkeypatch.setattr(trainer_config, "fast_bf16", lambda device: True)
    cfg = compose_train(["trainer.precision=32-true"])
    assert resolve_precision(cfg) == ({}, None) and run_spec(cfg)[0].trainer.precision == "32-true"
