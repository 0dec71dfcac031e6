"""compress.py: lossless round trips for every family and head, the size against the model's NLL,
and one-line refusals of altered files and other checkpoints."""
from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize
from omegaconf import OmegaConf
from PIL import Image

from autoreg.cli import train
from autoreg.compression import HEADER_BYTES, CompressedFileError, compress, decompress, split_images
from autoreg.compression.cli import compress_main, compress_task
from autoreg.errors import DataError
from autoreg.module import AutoregressiveModule
from autoreg.sampling import resolve_method
from conftest import TINY, compose_train

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_module(image_shape, bits: int, *overrides: str, classes: int | None = None) -> AutoregressiveModule:
    """A randomly initialised model of a family on small images (no data, no training)."""
    torch.manual_seed(0)
    cfg = compose_train(list(overrides))
    model = OmegaConf.to_container(cfg.model, resolve=True)
    return AutoregressiveModule(model=model, image_shape=image_shape, bits=bits, optim={"lr": 1e-3},
                                data={"num_classes": classes} if classes else None)


def random_images(n: int, image_shape, levels: int) -> torch.Tensor:
    return torch.randint(0, levels, (n, *image_shape), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


FAMILIES = {
    "pixelcnn": ["model=pixelcnn", "model.channels=8", "model.depth=1"],
    "row_lstm": ["model=pixelrnn", "model.channels=4", "model.depth=1"],
    "diagonal_bilstm": ["model=pixelrnn", "model.arch=diagonal_bilstm", "model.channels=4", "model.depth=1"],
    "gated_pixelcnn": ["model=gated_pixelcnn", "model.channels=8", "model.depth=1"],
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("head", ["bernoulli", "categorical"])
def test_round_trip_is_exact_for_every_family_and_head(family, head):
    shape, bits = ((1, 5, 4), 1) if head == "bernoulli" else ((3, 3, 3), 8)
    rgb = ["model.channels=6"] if shape[0] == 3 else []  # a multiple of the colours
    module = tiny_module(shape, bits, *FAMILIES[family], *rgb)
    images = random_images(5, shape, 2**bits)
    data, stats = compress(module, images, batch_size=2)  # batches of 2, 2 and 1
    decoded, labels, _ = decompress(module, data)
    assert torch.equal(decoded, images) and labels is None
    # random images under a random model: the payload is still their code length
    assert 8 * (len(data) - HEADER_BYTES) <= stats.nll_bits * 1.01 + 64


@pytest.mark.parametrize("family", ["pixelcnn", "diagonal_bilstm"])
def test_conditional_models_store_the_labels(family):
    shape = (1, 4, 4)
    module = tiny_module(shape, 1, *FAMILIES[family], "model.conditional=true", classes=10)
    with torch.no_grad():  # make the label matter: class biases are zero at initialisation
        for name, p in module.named_parameters():
            if "label_bias" in name:
                p.normal_()
    images, labels = random_images(3, shape, 2), torch.tensor([7, 0, 9])
    data, stats = compress(module, images, labels, batch_size=2)
    decoded, decoded_labels, _ = decompress(module, data)
    assert torch.equal(decoded, images) and decoded_labels.tolist() == [7, 0, 9]
    with torch.no_grad():
        nll_bits = float(module.nll(images.float(), labels).sum()) / math.log(2)
    assert stats.nll_bits == pytest.approx(3 * math.log2(10) + nll_bits, rel=1e-4)  # + log2(10) bits per label


def test_naive_and_fast_paths_both_round_trip():
    shape = (1, 4, 5)
    module = tiny_module(shape, 1, *FAMILIES["pixelcnn"])
    images = random_images(3, shape, 2)
    for method in ("fast", "naive"):
        data, _ = compress(module, images, method=method)
        assert torch.equal(decompress(module, data)[0], images)


@pytest.mark.parametrize("shape,bits,overrides,classes", [
    ((3, 5, 4), 8, ["model/likelihood=logistic_mixture", "model.likelihood.nr_logistic_mix=2"], None),
    ((1, 5, 6), 1, ["model.conditional=true"], 10),
])
def test_pixelcnn_pp_fast_path_writes_the_naive_file(shape, bits, overrides, classes):
    """PixelCNN++ codes on its cached sampler by default (`method=auto`), and round-trips there as
    on the naive path, at the same size to a few bytes (the same probabilities to float rounding)."""
    module = tiny_module(shape, bits, "model=pixelcnn_pp", "model.nr_resnet=1", "model.channels=6", *overrides, classes=classes)
    assert resolve_method(module.net, "auto") == "fast"
    assert_fast_and_naive_files_round_trip(module, random_images(3, shape, 2**bits), torch.tensor([3, 0, 9]) if classes else None)


def assert_fast_and_naive_files_round_trip(module, images, labels=None):
    """Coded on the path `method=auto` picks and on the naive one, in batches of two: both decode to
    the images (and labels), at the same size to a few bytes. Returns the auto path's stats."""
    sizes, stats = [], []
    for method in ("auto", "naive"):
        data, coded = compress(module, images, labels, method=method, batch_size=2)
        decoded, decoded_labels, _ = decompress(module, data)
        assert torch.equal(decoded, images) and (labels is None or torch.equal(decoded_labels, labels))
        sizes.append(len(data))
        stats.append(coded)
    assert abs(sizes[0] - sizes[1]) <= 2
    return stats[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_round_trip_on_a_gpu():
    shape = (3, 3, 3)
    module = tiny_module(shape, 8, *FAMILIES["pixelcnn"], "model.channels=6")
    images = random_images(3, shape, 256)
    data, _ = compress(module, images, batch_size=2, device="cuda")
    assert torch.equal(decompress(module, data)[0], images)


def test_a_head_that_couples_channels_plugs_in():
    """A head that draws whole pixels (`joint`: one step per pixel, each channel's table given the
    pixel's earlier channels), PixelCNN++'s logistic mixture, codes through the same loop."""
    shape = (3, 4, 4)
    module = tiny_module(shape, 8, "model=pixelcnn_pp", "model.nr_resnet=1", "model.channels=8", "model/likelihood=logistic_mixture", "model.likelihood.nr_logistic_mix=2")
    assert module.net.distribution.joint
    images = random_images(2, shape, 256)
    data, stats = compress(module, images, batch_size=1)
    assert torch.equal(decompress(module, data)[0], images)
    with torch.no_grad():
        nll_bits = float(module.nll(images.float() / 255).sum()) / math.log(2)
    assert stats.nll_bits == pytest.approx(nll_bits, rel=1e-4)


# --- a trained checkpoint, the command line and its errors -----------------------------------------


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    train(compose_train(TINY + ["callbacks.samples.num=0"], run_dir))
    return run_dir / "checkpoints" / "last.ckpt"


def compress_cfg(*overrides: str):
    with initialize(version_base="1.3", config_path="../conf"):
        return compose(config_name="compress", overrides=["progress=false", *overrides])


@pytest.fixture(scope="module")
def encoded(ckpt, tmp_path_factory):
    """10 test images compressed by compress.py in batches of 6 and 4."""
    out = tmp_path_factory.mktemp("encoded") / "test.arz"
    return compress_task(compress_cfg(f"ckpt={ckpt}", "split=test", "num=10", "batch_size=6", f"out={out}"))


def test_size_is_the_models_nll_within_one_percent(ckpt, encoded):
    module = AutoregressiveModule.from_checkpoint(str(ckpt))
    images, _ = split_images(module, "test", 10)
    with torch.no_grad():
        nll_bits = float(module.nll(images.float()).sum()) / math.log(2)  # a full forward pass, as test/nll
    payload_bits = 8 * (encoded.stat().st_size - HEADER_BYTES)
    assert nll_bits * 0.999 <= payload_bits <= nll_bits * 1.01 + 64  # + the coder's last word
    assert HEADER_BYTES <= 64


def test_decompress_writes_the_pngs_and_they_compress_to_the_same_file(ckpt, encoded, tmp_path):
    pngs = compress_task(compress_cfg(f"ckpt={ckpt}", f"decompress={encoded}", f"out={tmp_path}/pngs"))
    names = sorted(p.name for p in pngs.iterdir())
    assert names == [f"{n:05d}.png" for n in range(10)]
    images, _ = split_images(AutoregressiveModule.from_checkpoint(str(ckpt)), "test", 10)
    for name, image in zip(names, images):
        pixels = torch.tensor(list(Image.open(pngs / name).convert("L").getdata())).view(28, 28)
        assert torch.equal(pixels // 255, image[0].long()) and set(pixels.unique().tolist()) <= {0, 255}
    again = compress_task(compress_cfg(f"ckpt={ckpt}", f"input={pngs}", "batch_size=6", f"out={tmp_path}/b.arz"))
    assert again.read_bytes() == encoded.read_bytes()  # deterministic: the same images, the same bytes


def one_line_error(capsys, *overrides: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        compress_main(compress_cfg(*overrides))
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


@pytest.mark.parametrize("damage", ["truncated", "altered", "not ours", "another version"])
def test_a_damaged_file_is_one_line_and_writes_nothing(ckpt, encoded, tmp_path, capsys, damage):
    data = encoded.read_bytes()
    if damage == "truncated":
        data = data[:-4]
    elif damage == "altered":
        data = data[:-3] + bytes([data[-3] ^ 0x10]) + data[-2:]
    elif damage == "not ours":
        data = b"\x89PNG" + data[4:]
    else:
        data = data[:3] + b"\x02" + data[4:]
    (tmp_path / "b.arz").write_bytes(data)
    err = one_line_error(capsys, f"ckpt={ckpt}", f"decompress={tmp_path}/b.arz", f"out={tmp_path}/out")
    expected = {"not ours": "not a file written by compress.py", "another version": "another version of the format"}
    assert expected.get(damage, "truncated or corrupt") in err
    assert not (tmp_path / "out").exists()


def test_another_checkpoint_is_refused(ckpt, encoded, tmp_path, capsys):
    other = torch.load(ckpt, weights_only=True)
    name = next(iter(other["state_dict"]))
    other["state_dict"][name] = other["state_dict"][name] + 1e-3
    torch.save(other, tmp_path / "other.ckpt")
    err = one_line_error(capsys, f"ckpt={tmp_path}/other.ckpt", f"decompress={encoded}", f"out={tmp_path}/out")
    assert "encoded with another model" in err and not (tmp_path / "out").exists()


def test_probabilities_that_differ_at_decoding_are_caught(monkeypatch):
    """Decoding on a machine whose arithmetic differs (here: probabilities nudged) must not write
    other images than were encoded."""
    import autoreg.compression.coder as compression

    shape = (1, 4, 4)
    module = tiny_module(shape, 1, *FAMILIES["pixelcnn"])
    images = random_images(4, shape, 2)
    data, _ = compress(module, images)
    exact = compression.sub_pixel_probs
    monkeypatch.setattr(compression, "sub_pixel_probs", lambda *a: (exact(*a) + torch.tensor([0.0, 0.3])).clamp(0, 1))
    with pytest.raises(CompressedFileError, match="decodes to other images than were encoded"):
        decompress(module, data)


def test_inputs_that_the_model_cannot_code_are_one_line(ckpt, tmp_path, capsys):
    grey = tmp_path / "grey.png"
    Image.new("L", (28, 28), 128).save(grey)
    assert "binarize it first" in one_line_error(capsys, f"ckpt={ckpt}", f"input={grey}", f"out={tmp_path}/a.arz")
    Image.new("L", (32, 32), 0).save(grey)
    assert "this model codes 28x28 images" in one_line_error(capsys, f"ckpt={ckpt}", f"input={grey}", f"out={tmp_path}/a.arz")
    assert "input=<PNG file or directory> or split=" in one_line_error(capsys, f"ckpt={ckpt}", f"out={tmp_path}/a.arz")
    assert "pass one or the other" in one_line_error(capsys, f"ckpt={ckpt}", "decompress=x.arz", "split=test", f"out={tmp_path}/a")
    assert "label=3 needs a class-conditional model" in one_line_error(
        capsys, f"ckpt={ckpt}", f"input={grey}", "label=3", f"out={tmp_path}/a.arz")
    assert not (tmp_path / "a.arz").exists()
    with pytest.raises(DataError, match="models \\(1, 4, 4\\)"):
        compress(tiny_module((1, 4, 4), 1, *FAMILIES["pixelcnn"]), random_images(1, (1, 5, 5), 2))
