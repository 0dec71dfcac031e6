"""The feature network of the sample-quality metrics (autoreg.analysis.quality): a small digit /
object classifier trained by autoreg on the very images the models see.

    python -m autoreg.analysis.classifier data=mnist                      # -> outputs/classifiers/mnist_<source>.pt
    python -m autoreg.analysis.classifier data=mnist data.source=bundled epochs=8 out=<file.pt>

Why not Inception: the Fréchet Inception Distance (Heusel et al. 2017, "GANs Trained by a Two
Time-Scale Update Rule Converge to a Local Nash Equilibrium", arXiv 1706.08500) and the Inception
Score (Salimans et al. 2016, "Improved Techniques for Training GANs", arXiv 1606.03498) read
features from an ImageNet network, which means a download from a model hub and a network that has
never seen binarized 28x28 digits. Here the features come from a classifier trained on the same
split, scaled the same way (binarized MNIST: the static binarization; `data.binarize=dynamic`:
resampled per batch, as the models see it), so the metrics measure what the likelihood models
were asked to learn. NOTE: numbers from different classifiers (another dataset, source or
training) do not compare; every score names its classifier file and that file keeps its test
accuracy.

The network (LeNet-like): two 3x3 convolutions, each followed by 2x2 max pooling, a
`FEATURES`-wide hidden layer (the features of the Fréchet distance) and a linear layer to the
class logits (the Inception-style score and the label accuracy). Trained with Adam for `epochs`
passes over the training split, on one seeded generator, so the same data gives the same file.
The file is written atomically (a sweep's jobs may train it at the same time) and holds plain
tensors and numbers, loaded with `weights_only=True`.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from autoreg.data.datamodule import NUM_CLASSES
from autoreg.errors import CheckpointError, ConfigError, UserError

log = logging.getLogger(__name__)

FEATURES = 64  # width of the feature layer: small against the few hundred images a Fréchet distance sees
DEFAULT_DIR = Path("outputs/classifiers")
DEFAULT_EPOCHS = 6  # the callback's first-use training; the command's default: conf/classifier.yaml
TRAIN_COMMAND = "python -m autoreg.analysis.classifier"


class FeatureClassifier(nn.Module):
    """images (N, C, H, W), scaled as the models see them -> class logits (N, classes);
    `features(x)` gives the penultimate layer (N, FEATURES)."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, width: int = 16, num_features: int = FEATURES):
        super().__init__()
        channels, height, width_px = image_shape
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * (height // 4) * (width_px // 4), num_features), nn.ReLU(),
        )
        self.head = nn.Linear(num_features, num_classes)
        self.num_features = num_features

    def features(self, x: Tensor) -> Tensor:
        return self.body(x.float())

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class FeatureLayer(nn.Module):
    """The classifier seen as a feature extractor, in the shape torchmetrics' Fréchet distance asks
    of a custom network: `num_features` and images -> (N, num_features)."""

    def __init__(self, classifier: FeatureClassifier):
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier.features(x)


def data_key(data: dict[str, Any], source_used: str) -> str:
    """What a classifier is valid for: the dataset, its bit depth and binarization, and the source
    (the bundled subset is not the full set)."""
    key = f"{data['dataset']}_{data['bits']}bit"
    if data["bits"] == 1:
        key += f"_{data.get('binarize', 'static')}"
    return f"{key}_{source_used}"


def default_path(key: str, directory: Path | str = DEFAULT_DIR) -> Path:
    return Path(directory) / f"{key}.pt"


def train_command(data: dict[str, Any]) -> str:
    """The one command that trains the classifier for `data` (for error messages)."""
    parts = [TRAIN_COMMAND, f"data={data.get('name', data['dataset'])}"]
    if data.get("source", "auto") != "auto":
        parts.append(f"data.source={data['source']}")
    if data.get("bits") == 1 and data.get("binarize", "static") != "static":
        parts.append(f"data.binarize={data['binarize']}")
    return " ".join(parts)


def _scaled(datamodule, images: Tensor, labels: Tensor, training: bool) -> tuple[Tensor, Tensor]:
    """A batch scaled as the models see it (the datamodule's own transform)."""
    if training and datamodule.bits == 1 and datamodule.binarize == "dynamic":
        return torch.bernoulli(images.float() / 255), labels
    return datamodule.on_after_batch_transfer((images, labels), 0)


@torch.no_grad()
def accuracy(classifier: nn.Module, datamodule, split: str, batch_size: int = 500) -> float:
    """Top-1 accuracy of `classifier` on a split of `datamodule` (set up), scaled as the models see it."""
    data = datamodule.splits[split]
    was_training = classifier.training
    classifier.eval()
    correct = 0
    for start in range(0, len(data), batch_size):
        x, y = _scaled(datamodule, *data[torch.arange(start, min(start + batch_size, len(data)))], training=False)
        correct += int((classifier(x).argmax(1) == y).sum())
    classifier.train(was_training)
    return correct / len(data)


def train_classifier(datamodule, epochs: int = DEFAULT_EPOCHS, batch_size: int = 64, lr: float = 2e-3,
                     seed: int = 0) -> tuple[FeatureClassifier, dict[str, Any]]:
    """Train a FeatureClassifier on `datamodule`'s (set up) training split; return it (in eval mode)
    and its record: validation and test accuracy, epochs, seconds."""
    train = datamodule.splits["train"]
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classifier = FeatureClassifier(tuple(datamodule.image_shape), NUM_CLASSES)
        optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * -(-len(train) // batch_size))
        start = time.perf_counter()
        classifier.train()
        for epoch in range(epochs):
            order = torch.randperm(len(train), generator=generator)
            for begin in range(0, len(order), batch_size):
                x, y = _scaled(datamodule, *train[order[begin : begin + batch_size]], training=True)
                loss = nn.functional.cross_entropy(classifier(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
            log.info("classifier epoch %d/%d: loss %.3f", epoch + 1, epochs, loss.item())
    classifier.eval()
    record = {
        "val_accuracy": accuracy(classifier, datamodule, "val"),
        "test_accuracy": accuracy(classifier, datamodule, "test"),
        "epochs": epochs,
        "train_images": len(train),
        "seconds": time.perf_counter() - start,
    }
    return classifier, record


def save_classifier(path: Path, classifier: FeatureClassifier, key: str, image_shape, record: dict[str, Any]) -> None:
    """Write atomically (autoreg.checkpoint's writer): a reader never sees half a file, and two
    writers leave one whole one."""
    from autoreg.checkpoint import AtomicCheckpointIO

    payload = {
        "state_dict": classifier.state_dict(),
        "key": key,
        "image_shape": list(image_shape),
        "num_classes": classifier.head.out_features,
        "num_features": classifier.num_features,
        **record,
    }
    AtomicCheckpointIO().save_checkpoint(payload, path)


def load_classifier(path: Path | str, key: str, data: dict[str, Any]) -> tuple[FeatureClassifier, dict[str, Any]]:
    """The classifier at `path` (eval mode) and its record; one line if it is missing, unreadable
    or trained for other data than `key` names."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no feature classifier at {path}: train it with `{train_command(data)} out={path}`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        classifier = FeatureClassifier(tuple(payload["image_shape"]), payload["num_classes"], num_features=payload["num_features"])
        classifier.load_state_dict(payload["state_dict"])
    except Exception as err:  # noqa: BLE001 (any unreadable file gets the same one line)
        raise CheckpointError(f"{path} is not a feature classifier ({type(err).__name__}); retrain it with `{train_command(data)} out={path}`") from None
    if payload["key"] != key:
        raise ConfigError(
            f"the feature classifier {path} was trained for {payload['key']}, not for this model's data ({key}): "
            f"scores from it would not compare; train one with `{train_command(data)}`"
        )
    classifier.eval()
    record = {k: v for k, v in payload.items() if k != "state_dict"}
    return classifier, record


def classifier_for(datamodule, data: dict[str, Any], path: Path | str | None = None, directory: Path | str = DEFAULT_DIR,
                   train_missing: bool = True) -> tuple[FeatureClassifier, dict[str, Any], Path]:
    """The classifier for `data` (the plain data config of `datamodule`, set up): the file at `path`,
    or the cached one under `directory`, trained there first when missing and `train_missing`."""
    key = data_key(data, datamodule.source_used)
    target = Path(path) if path else default_path(key, directory)
    if not target.is_file() and not path and train_missing:
        log.info("sample quality: no feature classifier for %s yet; training one into %s (once per dataset)", key, target)
        classifier, record = train_classifier(datamodule)
        save_classifier(target, classifier, key, datamodule.image_shape, record)
        log.info("feature classifier: test accuracy %.4f (%d epochs, %.0f s)", record["test_accuracy"], record["epochs"], record["seconds"])
    classifier, record = load_classifier(target, key, data)
    return classifier, record, target


def train_cli(cfg) -> Path:
    """The command's work (conf/classifier.yaml): train the classifier of `cfg.data`, save it."""
    from omegaconf import OmegaConf

    from autoreg.build import build_datamodule
    from autoreg.checks import check_int

    check_int(cfg, "epochs", minimum=1)
    check_int(cfg, "seed", minimum=0)
    epochs = cfg.epochs
    data = OmegaConf.to_container(cfg.data, resolve=True)
    datamodule = build_datamodule(data)
    datamodule.setup("fit")
    key = data_key(data, datamodule.source_used)
    out = Path(cfg.out or default_path(key))
    classifier, record = train_classifier(datamodule, epochs=epochs, seed=cfg.seed)
    save_classifier(out, classifier, key, datamodule.image_shape, record)
    print(f"feature classifier for {key}: test accuracy {record['test_accuracy']:.4f} ({len(datamodule.splits['test'])} images), "
          f"validation {record['val_accuracy']:.4f}; {epochs} epochs on {record['train_images']} images in {record['seconds']:.0f} s")
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    from autoreg.apps import classifier

    classifier()
