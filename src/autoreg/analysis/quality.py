"""Sample quality beside the likelihood: the same numbers for every run, so that runs compare.

    python -m autoreg.analysis.quality ckpt=<run dir>/checkpoints/best.ckpt [num=400] [seed=0] [method=auto]
    python train.py callbacks.sample_quality.every_validation=true     # also at every validation

A good likelihood does not imply good samples, nor the reverse (Theis et al. 2016, "A note on the
evaluation of generative models", arXiv 1511.01844): a model can spend its nats on details that
a viewer does not see, or draw sharp digits while missing modes. So every run is also scored on
`num` samples drawn with a fixed seed, in the feature space of a classifier trained on the same
data (autoreg.analysis.classifier; nothing comes from a model hub):

- `val/fid`: the Fréchet distance between the samples' and `num` test images' features (Heusel et
  al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium",
  arXiv 1706.08500), computed by torchmetrics' FrechetInceptionDistance with the classifier's
  feature layer as its network. Lower is better; it depends on `num` (the estimate is biased
  upwards for small sets), so compare runs at the same `num` only.
- `val/classifier_score`: the Inception Score (Salimans et al. 2016, "Improved Techniques for
  Training GANs", arXiv 1606.03498) with the classifier's logits: exp E_x KL(p(y|x) || p(y)),
  between 1 and the number of classes; high when every sample is clearly one class and the
  classes are all drawn. torchmetrics' InceptionScore, over the whole set (one split).
- `val/label_accuracy` (class-conditional models only): the classifier's accuracy on samples
  drawn for the test images' own labels (so the class mix is the test set's).
- `val/memorisation`: the mean pixel-space (L2) distance of each sample to its nearest training
  image, divided by the same for the `num` test images. About 1: samples are as far from the
  training set as new real digits are; well below 1: samples copy training images; above 1:
  samples are further from any digit than real ones (poor samples). `val/nn_distance` is the
  samples' mean distance itself. Read it beside the FID: 400 copies of training digits score 0
  with an FID better than held-out digits (the FID cannot see copying), and all-black images also
  score below 1 (an empty image is near thin digits) with an FID of about 1800 (bundled MNIST).

Reference values, at the same `num` and with the same classifier, are computed beside every
score (`reference/...`): `num` held-out validation images scored as if they were samples, the
best a model can reach at that `num` (a set of real digits is not at distance 0 from another).
NOTE: the issue asked for held-out test images as the reference samples; the test images are the
other side of the comparison, and the bundled MNIST has too few to split in two at a useful
`num`, so the validation images (held out from training too) play the part.

Cost: `num` samples (the fast sampler: seconds for a small PixelCNN, see README) plus one pass of
the tiny classifier; the callback is on where the model has a fast sampler (every built-in family)
and skips (saying so) where only the naive one (a full forward pass per sub-pixel) exists, unless
asked for with `callbacks.sample_quality.method=naive`.
"""
from __future__ import annotations

import json
import logging
import math
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from autoreg.analysis.classifier import DEFAULT_DIR, FeatureLayer, classifier_for
from autoreg.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_NUM = 400  # fits the bundled MNIST's 450 validation and 500 test images
MODEL_KEYS = ("fid", "classifier_score", "label_accuracy", "memorisation", "nn_distance")


@torch.no_grad()
def frechet_distance(classifier: nn.Module, real: Tensor, fake: Tensor, batch_size: int = 500) -> float:
    """The Fréchet distance between `real` and `fake` (N, C, H, W) in the classifier's feature
    space (torchmetrics' FID with a custom feature network; statistics in float64)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    # its sums and covariances are float64; no sync: one process scores alone (SampleQuality)
    metric = FrechetInceptionDistance(feature=FeatureLayer(classifier), sync_on_compute=False)
    metric.to(real.device)
    for start in range(0, len(real), batch_size):
        metric.update(real[start : start + batch_size], real=True)
    for start in range(0, len(fake), batch_size):
        metric.update(fake[start : start + batch_size], real=False)
    return max(0.0, float(metric.compute()))  # rounding can leave -1e-6 for identical sets


@torch.no_grad()
def classifier_score(classifier: nn.Module, images: Tensor) -> float:
    """The Inception-style score with the classifier's logits, over the whole set (one split)."""
    from torchmetrics.image.inception import InceptionScore

    # its warnings: "will save all extracted features" (a few hundred x 10 here) and the std of one split
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):  # fork: its (here irrelevant) shuffle
        warnings.simplefilter("ignore", UserWarning)
        metric = InceptionScore(feature=classifier, splits=1, sync_on_compute=False).to(images.device)
        metric.update(images)
        mean, _ = metric.compute()
    return float(mean)


@torch.no_grad()
def nearest_distances(images: Tensor, train: Tensor, chunk: int = 100) -> Tensor:
    """Each image's L2 distance (pixel space) to its nearest image in `train` (N,)."""
    train_flat = train.flatten(1).float()
    out = [torch.cdist(images[s : s + chunk].flatten(1).float(), train_flat).min(dim=1).values for s in range(0, len(images), chunk)]
    return torch.cat(out)


class QualityReference:
    """The fixed side of every score: `num` test images (and labels), the training images for
    the nearest-neighbour distances, the classifier, and the held-out reference values."""

    def __init__(self, classifier: nn.Module, datamodule, num: int, key: str = "callbacks.sample_quality.num"):
        datamodule.setup("fit")
        test, val = datamodule.splits["test"], datamodule.splits["val"]
        if not isinstance(num, int) or num < 2:
            raise ConfigError(f"{key}={num} is invalid: the Fréchet distance needs at least 2 samples")
        for split, data in (("test", test), ("validation", val)):
            if num > len(data):
                raise ConfigError(
                    f"{key}={num} is larger than the {split} set ({len(data)} images of {datamodule.source_used} {datamodule.dataset}): "
                    f"use at most {min(len(test), len(val))}"
                )
        self.classifier, self.num = classifier, num
        self.real, self.labels = datamodule.on_after_batch_transfer(test[torch.arange(num)], 0)
        self.train_images = self._train_images(datamodule)
        self.test_nn_distance = float(nearest_distances(self.real, self.train_images).mean())
        heldout, heldout_labels = datamodule.on_after_batch_transfer(val[torch.arange(num)], 0)
        self.reference = self.score(heldout, heldout_labels)

    @staticmethod
    def _train_images(datamodule) -> Tensor:
        """The training images as the models see them (dynamic binarization: its static draw)."""
        from autoreg.data.datamodule import static_binarize

        images = datamodule.splits["train"].images.cpu()
        if datamodule.bits == 1 and datamodule.binarize == "dynamic":
            images = static_binarize(images)
        return datamodule.on_after_batch_transfer((images, torch.zeros(len(images), dtype=torch.long)), 0)[0]

    def to(self, device) -> "QualityReference":
        self.classifier.to(device)
        self.real, self.labels = self.real.to(device), self.labels.to(device)
        self.train_images = self.train_images.to(device)
        return self

    @torch.no_grad()
    def score(self, images: Tensor, labels: Tensor | None = None) -> dict[str, float]:
        """Scores of `images` (N, C, H, W) scaled as the model's data; `labels`: the labels they
        were drawn for (class-conditional models), for the label accuracy."""
        images = images.to(self.real.device)
        nn_distance = float(nearest_distances(images, self.train_images).mean())
        scores = {
            "fid": frechet_distance(self.classifier, self.real, images),
            "classifier_score": classifier_score(self.classifier, images),
            "memorisation": nn_distance / self.test_nn_distance,
            "nn_distance": nn_distance,
        }
        if labels is not None:
            scores["label_accuracy"] = float((self.classifier(images).argmax(1) == labels.to(images.device)).float().mean())
        return scores

    def score_model(self, net: nn.Module, method: str, seed: int = 0, batch_size: int | None = None) -> tuple[dict[str, float], Tensor]:
        """Draw `num` samples from `net` (autoreg.sampling.sample, the same seed every time; a
        class-conditional net draws them for the test images' labels) and score them; return (scores, samples)."""
        from autoreg.sampling import sample

        conditional = bool(getattr(net, "num_classes", None))
        y = self.labels.to(next(net.parameters()).device) if conditional else None
        images = sample(net, self.num, y=y, method=method, seed=seed, batch_size=batch_size)
        return self.score(images, self.labels if conditional else None), images


def scored_method(method: str, net: nn.Module) -> str | None:
    """The sampler sample quality uses (autoreg.sampling.resolve_method), or None where `auto` finds
    only the naive one: not scored by default, too slow."""
    from autoreg.sampling import resolve_method

    resolved = resolve_method(net, method, key="callbacks.sample_quality.method")
    return None if method == "auto" and resolved == "naive" else resolved


def tagged(scores: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}/{k}": v for k, v in scores.items()}


class SampleQuality(pl.Callback):
    """Scores `num` samples (module docstring) at the end of training and, with
    `every_validation`, after every validation: `val/fid`, `val/classifier_score`,
    `val/memorisation`, `val/nn_distance` (and `val/label_accuracy` for class-conditional models)
    in TensorBoard (and its HParams tab) and metrics.json, which also gets the held-out reference
    values (`reference/...`), the classifier's test accuracy and the seconds the scoring took.

    The classifier is `classifier` (a file), or the one cached under `classifier_dir` for the
    run's data, trained there first if missing and `train_classifier` (about a minute on a CPU,
    once per dataset); otherwise a missing one fails with one line naming the command."""

    def __init__(self, num: int | str = "auto", method: str = "auto", seed: int = 0, every_validation: bool = False,
                 classifier: str | None = None, classifier_dir: str = str(DEFAULT_DIR), train_classifier: bool = True,
                 batch_size: int | None = None):
        """num: 'auto' (DEFAULT_NUM where the test and validation sets hold that many, else not
        scored, said in the log), an int (more than either set holds: one line), or 0 (off)."""
        if not (num == "auto" or (isinstance(num, int) and not isinstance(num, bool) and num >= 0)):
            raise ConfigError(f"callbacks.sample_quality.num={num} is invalid: use auto, 0 (off) or a number of samples >= 2")
        self.num, self.method, self.seed, self.every_validation = num, method, seed, every_validation
        self.classifier_path, self.classifier_dir, self.train_classifier = classifier, classifier_dir, train_classifier
        self.batch_size = batch_size
        self.reference: QualityReference | None = None
        self.extra: dict[str, float] = {}
        self.scored_at: int | None = None
        self.last: dict[str, float] = {}
        self.prepared = False

    def _num(self, datamodule) -> int:
        if self.num != "auto":
            return self.num
        smallest = min(len(datamodule.splits["test"]), len(datamodule.splits["val"]))
        if smallest < DEFAULT_NUM:
            log.info("sample quality: not scored, the test and validation sets hold %d images, fewer than the %d samples "
                     "scores are compared at; set callbacks.sample_quality.num to score fewer", smallest, DEFAULT_NUM)
            return 0
        return DEFAULT_NUM

    def before_launch(self, trainer: pl.Trainer, pl_module, datamodule) -> None:
        """The classifier (trained on first use) and the reference scores, on global rank 0 before
        a DDP run starts its other processes (autoreg.distributed), so none of them waits at a
        collective while this one trains it. Every score is computed by this process alone, with
        no cross-process sync: the samples are one fixed-seed set, so the scores are exactly the
        single-process ones."""
        self.prepared = True
        if self.num == 0 or datamodule is None:
            return
        method = scored_method(self.method, pl_module.net)
        if method is None:
            log.info("sample quality: not scored, %s has no fast sampler (the naive one costs a full forward pass per "
                     "sub-pixel); set callbacks.sample_quality.method=naive to score anyway", type(pl_module.net).__name__)
            return
        if not pl_module.hparams.data.get("num_classes"):
            log.info("sample quality: not scored, data=%s has no labels to train the feature classifier on",
                     pl_module.hparams.data.get("name"))
            return
        datamodule.setup("fit")
        num = self._num(datamodule)
        if num == 0:
            return
        self.method = method
        classifier, record, path = classifier_for(datamodule, dict(pl_module.hparams.data), self.classifier_path,
                                                  self.classifier_dir, self.train_classifier)
        self.reference = QualityReference(classifier, datamodule, num)
        self.extra = {**tagged(self.reference.reference, "reference"), "reference/classifier_test_accuracy": record["test_accuracy"]}
        log.info("sample quality: %d %s samples at the end of training%s; classifier %s (test accuracy %.4f)",
                 num, method, " and every validation" if self.every_validation else "", path, record["test_accuracy"])

    def on_fit_start(self, trainer: pl.Trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        if not self.prepared:  # a Trainer used without autoreg.cli.train
            self.before_launch(trainer, pl_module, trainer.datamodule)
        if self.reference is not None:
            self.reference.to(pl_module.device)

    def _score(self, trainer: pl.Trainer, pl_module) -> None:
        step = trainer.global_step
        if self.reference is None or self.scored_at == step:
            return
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[pl_module.device] if pl_module.device.type == "cuda" else []):
            scores, _ = self.reference.score_model(pl_module.net, self.method, self.seed, self.batch_size)
        self.last = {**tagged(scores, "val"), "quality_seconds": time.perf_counter() - start}
        self.scored_at = step
        if trainer.logger is not None:
            from autoreg.compat import logged_step

            trainer.logger.log_metrics(tagged(scores, "val"), step=logged_step(trainer))
        log.info("sample quality at step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in self.last.items()))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if self.every_validation and not trainer.sanity_checking:
            self._score(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        self._score(trainer, pl_module)

    def run_metrics(self) -> dict[str, float]:
        """What this callback adds to the run's metrics.json (autoreg.cli.train): the last scores
        and the reference's."""
        return {**self.last, **self.extra} if self.last else {}


def score_checkpoint(cfg) -> dict[str, float]:
    """The command's work (conf/quality.yaml): load the checkpoint, score it, print and save the
    scores and a grid."""
    from autoreg.build import build_datamodule
    from autoreg.checks import check_int
    from autoreg.module import AutoregressiveModule
    from autoreg.sampling.grids import grid_image

    check_int(cfg, "num", minimum=1)
    check_int(cfg, "seed", minimum=0)
    module = AutoregressiveModule.from_checkpoint(cfg.ckpt, key="ckpt")
    net = module.net.eval()
    method = scored_method(cfg.method, net) or "naive"
    datamodule = build_datamodule(module.hparams.data)
    datamodule.setup("fit")
    classifier, record, path = classifier_for(datamodule, dict(module.hparams.data), cfg.classifier, cfg.classifier_dir)
    reference = QualityReference(classifier, datamodule, cfg.num, key="num")
    start = time.perf_counter()
    scores, images = reference.score_model(net, method, cfg.seed)
    seconds = time.perf_counter() - start
    result = {**tagged(scores, "val"), **tagged(reference.reference, "reference"),
              "reference/classifier_test_accuracy": record["test_accuracy"], "quality_seconds": seconds,
              "num": cfg.num, "seed": cfg.seed}
    out = Path(cfg.out or Path(cfg.ckpt).with_name(f"{Path(cfg.ckpt).stem}_quality.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**result, "classifier": str(path), "method": method}, indent=2, sort_keys=True) + "\n")
    from torchvision.utils import save_image

    shown = min(64, len(images))
    save_image(grid_image(images[:shown].cpu(), int(math.ceil(math.sqrt(shown))), scale=2), out.with_suffix(".png"))
    print(f"{cfg.ckpt}: {cfg.num} {method} samples (seed {cfg.seed}) in {seconds:.1f} s; "
          f"classifier {path} (test accuracy {record['test_accuracy']:.4f})")
    for key in MODEL_KEYS:
        if key in scores:
            held = reference.reference.get(key)
            print(f"  {key:17s} {scores[key]:10.4f}   held-out reference {held:10.4f}" if held is not None else f"  {key:17s} {scores[key]:10.4f}")
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return result


if __name__ == "__main__":
    from autoreg.apps import quality

    quality()
