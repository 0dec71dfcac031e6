"""The family contract (autoreg.families) and class-conditional generation for every family:
discovery, argument checks, the label's path data -> module -> model -> samplers -> sample.py."""
from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize
from PIL import Image

from autoreg.build import build
from autoreg.config import validate
from autoreg.distributions import Bernoulli, Categorical
from autoreg.errors import ConfigError
from autoreg.families import build_model, family, names
from autoreg.sampling import has_fast_path, sample

from conftest import TINY, compose_train, read_events

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = names()  # each family's declaration is Hydra's config model=<name>
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
if "pixelsnail" in names():
    TINY_MODELS["pixelsnail"] = {"name": "pixelsnail", "channels": 6, "nr_resnet": 1, "depth": 1, "key_channels": 4,
                                 "value_channels": 4}


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
    assert {"pixelcnn", "pixelrnn", "gated_pixelcnn", "pixelcnn_pp", "pixelsnail"} <= set(CONFIGS)
    for name in CONFIGS:
        cfg = compose_train([f"model={name}"])
        validate(cfg)
        assert family(cfg.model.name).NAME == name
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


TINY_FAMILY = '''
from dataclasses import dataclass

from autoreg.checks import require_int
from autoreg.families import Family


@dataclass(frozen=True)
class TinyKeys(Family):
    NAME = "tiny_throwaway"
    NETWORK = "tiny_throwaway_net:TinyNet"

    channels: int = 4

    def check(self, image_shape, likelihood):
        require_int("model.channels", self.channels)
'''
TINY_NETWORK = '''
from torch import nn

from autoreg.nn.masked import MaskedConv2d


class TinyNet(nn.Module):
    def __init__(self, image_shape, distribution, keys, num_classes=None):
        super().__init__()
        c = image_shape[0]
        self.image_shape, self.distribution, self.num_classes = tuple(image_shape), distribution, num_classes
        self.net = nn.Sequential(MaskedConv2d(c, keys.channels, 3, "A", c), nn.ReLU(),
                                 MaskedConv2d(keys.channels, c * distribution.params_per_channel, 1, "B", c))

    def forward(self, x, y=None):
        return self.net(x)
'''


@pytest.fixture
def throwaway_family(tmp_path, monkeypatch):
    """A new family as a user adds one: a declaration file in autoreg.families' path and a network
    file, and no other line anywhere."""
    from hydra.core.config_store import ConfigStore

    import autoreg.families as families

    declared, network = tmp_path / "declared", tmp_path / "network"
    declared.mkdir(), network.mkdir()
    (declared / "tiny_throwaway.py").write_text(TINY_FAMILY)
    (network / "tiny_throwaway_net.py").write_text(TINY_NETWORK)
    monkeypatch.setattr(families, "__path__", [*families.__path__, str(declared)])
    monkeypatch.syspath_prepend(str(network))
    monkeypatch.setattr(families, "_FAMILIES", {})
    families.register_configs()
    yield "tiny_throwaway"
    monkeypatch.undo()
    families._FAMILIES.clear()
    ConfigStore.instance().repo["model"].pop("tiny_throwaway.yaml")


def test_a_new_family_is_its_declaration_and_its_network_file(throwaway_family, tmp_path):
    from autoreg.cli import train

    assert throwaway_family in names()
    tiny = [o for o in TINY if not o.startswith("model.")]
    cfg = compose_train([f"model={throwaway_family}", *tiny, "trainer.max_steps=2"], output_dir=tmp_path / "run")
    assert cfg.model.channels == 4 and cfg.model.likelihood == {"name": "auto"}  # the declaration's defaults, served by Hydra
    with pytest.raises(ConfigError, match=r"model.channels=0 is invalid"):
        validate(compose_train([f"model={throwaway_family}", "model.channels=0"]))
    metrics, objects = train(cfg)
    assert type(objects["module"].net).__name__ == "TinyNet" and metrics["global_step"] == 2
    assert sample(objects["module"].net, 2, method="naive", seed=0).shape[1:] == (1, 28, 28)


FLIPPED_HEAD = '''
import torch

from autoreg.distributions import Likelihood


class Flipped(Likelihood):
    """p(x = 1) = sigmoid(-logit): a head no family has, to plug in."""

    name = "flipped"
    params_per_channel = 1
    levels = 2

    def nll(self, params, x):
        return torch.nn.functional.binary_cross_entropy_with_logits(-params.float(), x.float(), reduction="none").flatten(1).sum(1)

    def probs(self, params, temperature=1.0, x=None):
        return torch.sigmoid(-params.float() / temperature)

    def sample(self, params, u, temperature=1.0):
        return (u < self.probs(params, temperature)).float()
'''


def test_a_new_head_is_one_class_and_one_registry_entry(tmp_path, monkeypatch):
    from autoreg.compression import sub_pixel_probs
    from autoreg.likelihoods import HEADS, Head, distribution_for

    (tmp_path / "flipped_head.py").write_text(FLIPPED_HEAD)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(HEADS, "flipped", Head(1, "flipped_head:Flipped"))
    head = distribution_for(1, "flipped")
    assert not head.joint and head.num_params(1) == 1
    torch.manual_seed(0)
    model = build_model(TINY_MODELS["pixelcnn"], (1, 6, 6), head)
    x = sample(model, 3, seed=0)
    assert torch.equal(x, sample(model, 3, method="naive", seed=0))  # the fast sampler draws with it
    assert torch.allclose(head.nll(model(x), x), Bernoulli().nll(-model(x), x))
    table = sub_pixel_probs(head, model(x)[:, :, 2, 3], 0, x[:, :, 2, 3])  # what compression codes with
    assert torch.allclose(table, torch.stack([1 - head.probs(model(x))[:, 0, 2, 3], head.probs(model(x))[:, 0, 2, 3]], 1))


def test_declarations_are_torch_free():
    """The config check imports every declaration; none may pull in torch (a bad value is answered in about a second)."""
    code = "import sys, autoreg.families as f; [f.family(n) for n in f.names()]; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr
