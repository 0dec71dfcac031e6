"""The family contract (autoreg.models) and class-conditional generation for every family:
discovery, argument checks, the label's path data -> module -> model -> samplers -> sample.py."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize
from omegaconf import OmegaConf
from PIL import Image

from autoreg.build import build
from autoreg.config import ConfigError, validate
from autoreg.distributions import Bernoulli, Categorical
from autoreg.models import build_model, family, names
from autoreg.sampling import has_fast_path, sample

from conftest import ROOT, compose_train, read_events

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))
# tiny conditional models of every family (arch variants included): name -> model config
TINY_MODELS = {
    "pixelcnn": {"name": "pixelcnn", "channels": 8, "depth": 2, "kernel": 3, "first_kernel": 3},
    "row_lstm": {"name": "pixelrnn", "arch": "row_lstm", "channels": 8, "depth": 2},
    "diagonal_bilstm": {"name": "pixelrnn", "arch": "diagonal_bilstm", "channels": 8, "depth": 1},
}
if "gated_pixelcnn" in names():
    TINY_MODELS["gated_pixelcnn"] = {"name": "gated_pixelcnn", "channels": 6, "depth": 2, "kernel": 3}
if "pixelcnn_pp" in names():
    TINY_MODELS["pixelcnn_pp"] = {"name": "pixelcnn_pp", "channels": 6, "nr_resnet": 1}


def conditional(key: str, shape=(1, 6, 6), distribution=None, classes: int = 4):
    """A tiny conditional model whose label biases are random (they start at zero)."""
    torch.manual_seed(0)
    model = build_model({**TINY_MODELS[key], "conditional": True}, shape, distribution or Bernoulli(), num_classes=classes)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "label_bias" in name:
                p.normal_()
    return model


def test_every_model_config_is_a_discovered_family_that_builds():
    assert set(CONFIGS) <= set(names()), "a conf/model/<name>.yaml without a family file"
    for name in CONFIGS:
        cfg = compose_train([f"model={name}"])
        validate(cfg)
        assert family(cfg.model.name).name == name
        module, datamodule = build(cfg)
        assert module.net.num_classes is None and datamodule.batch_size == cfg.data.batch_size


def test_a_pixelcnn_without_context_is_refused():
    with pytest.raises(ConfigError, match=r"model.first_kernel=1 leaves the mask-A first layer no earlier pixel"):
        validate(compose_train(["model.first_kernel=1"]))


def test_unknown_family_and_unknown_key_are_one_line():
    with pytest.raises(ConfigError, match=r"model.name=nope is not a model family; choose one of: .*pixelcnn") as err:
        build_model({"name": "nope"}, (1, 4, 4), Bernoulli())
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"model.kernal is not an option of model=pixelcnn; its options are: .*kernel"):
        validate(compose_train(["+model.kernal=3"]))


@pytest.mark.parametrize("key", list(TINY_MODELS))
def test_label_changes_the_output_and_a_later_pixel_does_not(key):
    model = conditional(key)
    x = torch.rand(2, 1, 6, 6).round()
    y = torch.tensor([0, 3])
    out = model(x, y)
    assert not torch.allclose(model(x, torch.tensor([1, 2])), out)
    later = x.clone()
    later[:, :, 3, 4:] = 1 - later[:, :, 3, 4:]
    later[:, :, 4:] = 1 - later[:, :, 4:]
    changed = (model(later, y) - out).abs().flatten(2).amax((0, 1)) > 0
    assert not changed[: 3 * 6 + 4].any()  # up to pixel (3, 4) itself: no output moved
    assert changed.any()  # the later pixels do see the flipped ones


@pytest.mark.parametrize("key", list(TINY_MODELS))
def test_conditional_model_without_labels_fails_clearly(key):
    with pytest.raises(ValueError, match="class-conditional: it needs labels"):
        conditional(key)(torch.zeros(1, 1, 6, 6))


@pytest.mark.parametrize("key,shape,distribution", [
    ("pixelcnn", (1, 6, 6), Bernoulli()), ("pixelcnn", (3, 4, 4), Categorical(256)),
    ("row_lstm", (1, 6, 6), Bernoulli()), ("row_lstm", (3, 4, 4), Categorical(256)),
] + ([("gated_pixelcnn", (1, 6, 6), Bernoulli()), ("gated_pixelcnn", (3, 4, 4), Categorical(256))] if "gated_pixelcnn" in names() else []))
def test_fast_sampler_is_exact_for_conditional_models(key, shape, distribution):
    model = conditional(key, shape, distribution, classes=3)
    with torch.no_grad():
        model.head[-1].weight.mul_(8)  # sharp outputs: a wrong bias would show
    assert has_fast_path(model)
    noise = torch.rand((6, *shape), generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    naive, naive_probs = sample(model, 6, method="naive", noise=noise, y=y, return_probs=True)
    fast, fast_probs = sample(model, 6, method="fast", noise=noise, y=y, return_probs=True)
    assert torch.equal(fast, naive) and (fast_probs - naive_probs).abs().max() < 1e-5
    other = sample(model, 6, method="fast", noise=noise, y=torch.tensor([1, 2, 0, 1, 2, 0]))
    assert not torch.equal(other, fast)  # the label is used
    mask = torch.zeros(1, 1, *shape[1:], dtype=torch.bool)
    mask[..., : shape[1] // 2, :] = True
    naive = sample(model, method="naive", known=fast, known_mask=mask, noise=noise, y=y)
    assert torch.equal(sample(model, method="fast", known=fast, known_mask=mask, noise=noise, y=y), naive)


def test_sample_rejects_labels_outside_the_classes():
    with pytest.raises(ValueError, match=r"labels \(or one\) in 0..3"):
        sample(conditional("pixelcnn"), 2, y=4)


def test_conditional_on_a_dataset_without_labels_is_one_line():
    with pytest.raises(ConfigError, match=r"model.conditional=true needs labelled data, but data.num_classes=None") as err:
        validate(compose_train(["model.conditional=true", "data.num_classes=null"]))
    assert "\n" not in str(err.value)


def sample_cfg(*overrides: str):
    with initialize(version_base="1.3", config_path="../conf"):
        return compose(config_name="sample", overrides=[*overrides, "progress=false"])


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    """A tiny class-conditional PixelCNN trained end to end (labels from the data)."""
    from autoreg.cli import train
    from conftest import TINY

    out = tmp_path_factory.mktemp("conditional")
    metrics, _ = train(compose_train(TINY + ["model.conditional=true", "callbacks.samples.num=20"], out))
    return out, metrics


def test_conditional_training_logs_class_rows_and_says_so(conditional_run):
    out, metrics = conditional_run
    events = read_events(out)
    assert events["hparams"]["model.conditional"] is True and events["hparams"]["data.num_classes"] == "10"
    assert metrics["val/nll"] > 0
    grid = Image.open(io.BytesIO(events["images"]["val/samples"][-1][1]))
    assert grid.size == (3 * (2 * 28 + 3 * 2), 3 * (10 * 28 + 11 * 2))  # 20 samples: a row of 2 per class, 3x3 pixels


def test_sample_py_labels(conditional_run, tmp_path):
    from autoreg.sample_cli import sample as sample_py

    ckpt = conditional_run[0] / "checkpoints" / "last.ckpt"
    three = Image.open(sample_py(sample_cfg(f"ckpt={ckpt}", "num=4", "label=3", f"out={tmp_path}/3.png")))
    assert three.size == (2 * 28 + 3 * 2,) * 2
    every = Image.open(sample_py(sample_cfg(f"ckpt={ckpt}", "num=20", "label=all", f"out={tmp_path}/all.png")))
    assert every.size == (2 * 28 + 3 * 2, 10 * 28 + 11 * 2)
    default = Image.open(sample_py(sample_cfg(f"ckpt={ckpt}", "num=20", f"out={tmp_path}/default.png")))
    assert default.tobytes() == every.tobytes()  # no label: one row per class, said in the log
    completed = sample_py(sample_cfg(f"ckpt={ckpt}", "num=2", "complete=true", "label=5", f"out={tmp_path}/c.png"))
    assert Image.open(completed).size == (5 * 28 + 6 * 2, 2 * 28 + 3 * 2)
    for label, message in [(10, r"label=10 is invalid: it must be a class in 0..9 or all"),
                           ("all", r"label=all draws one row per class; completions take")]:
        extra = ["complete=true"] if label == "all" else []
        with pytest.raises(ConfigError, match=message):
            sample_py(sample_cfg(f"ckpt={ckpt}", f"label={label}", *extra))


def test_label_on_an_unconditional_model_is_one_line(tiny_cfg, tmp_path):
    from autoreg.cli import train
    from autoreg.sample_cli import sample as sample_py

    train(tiny_cfg())
    with pytest.raises(ConfigError, match="label=3 needs a class-conditional model; this checkpoint's model is unconditional"):
        sample_py(sample_cfg(f"ckpt={tmp_path}/checkpoints/last.ckpt", "label=3"))


BAD_VALUES = (0, -1, 1, 2, 4, 9, "x", True, False, None, 2.5)


@pytest.mark.parametrize("name", names())
def test_the_torch_free_check_is_the_family_check(name):
    """The config check reads each family from its source (autoreg.models.spec) so that a bad value
    is answered before torch is imported; it must accept and refuse exactly what the family does."""
    from autoreg.models import spec

    light, real = spec(name), family(name)
    assert light.torch_free, f"{name}'s check uses a name that needs its module (torch) imported"
    assert light.defaults == real.defaults and light.likelihoods == real.likelihoods
    refused = 0
    for keys in [dict(light.defaults)] + [{**light.defaults, key: bad} for key in light.defaults for bad in BAD_VALUES]:
        outcomes = []
        for check in (light.check, real.check):
            try:
                check(keys)
                outcomes.append(None)
            except ConfigError as err:
                outcomes.append(str(err))
        assert outcomes[0] == outcomes[1], keys
        refused += outcomes[0] is not None
    assert refused > len(light.defaults)  # the cases test something
