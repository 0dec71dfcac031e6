"""autoreg from Python (a notebook, a script): a trained model with its exact likelihood and its
samplers, the same functions train.py's module and sample.py use.

    import autoreg
    model = autoreg.load("paper_mnist_pixelcnn")   # a shipped model's name, or a checkpoint path
    nats = -model.log_prob(images)                  # per image; images (N, C, H, W) in [0, 1]
    heat = model.nll_map(images)                    # (N, H, W): -log p(x_i | x_<i) per pixel, sums to nats
    scores = model.score(images)                    # both, and for a class-conditional model log p(x)
    samples = model.sample(16, seed=0)              # (16, C, H, W) in [0, 1]
    filled = model.complete(images, mask, seed=0)   # mask: True where a pixel is given
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from autoreg.distributions import bits_per_dim
from autoreg.module import AutoregressiveModule
from autoreg.sampling import sample


@dataclass
class Scores:
    """`Model.score`'s figures for N images, on the CPU. A class-conditional model's `nll`,
    `bpd` and `pixel_nll` are those given `labels` (the labels passed, else each image's most
    likely class); `log_px` is log p(x) = log sum_y p(x | y) p(y) over the classes."""

    nll: Tensor  # (N,) -log p(x) (conditional: -log p(x | label)), nats per image
    bpd: Tensor  # (N,) the same in bits per dimension (sub-pixel)
    pixel_nll: Tensor  # (N, H, W) -log p(x_i | x_<i) per pixel (its channels summed), nats; sums to nll
    labels: Tensor | None = None  # (N,) the class nll is conditioned on
    class_log_probs: Tensor | None = None  # (N, K) log p(x | y) for every class y
    log_px: Tensor | None = None  # (N,) log p(x) under the prior p(y)
    most_likely: Tensor | None = None  # (N,) argmax_y p(y | x) under the prior


class Model(nn.Module):
    """A trained model in eval mode: `log_prob`, `nll_map`, `score`, `sample`, `complete`. `net` is
    the family's network, `distribution` its likelihood head, `image_shape` (C, H, W), `num_classes`
    (None: unconditional)."""

    def __init__(self, module: AutoregressiveModule):
        super().__init__()
        self.module = module
        self.image_shape, self.num_classes = tuple(module.image_shape), module.net.num_classes
        self.eval()

    @property
    def net(self) -> nn.Module:
        return self.module.net

    @property
    def distribution(self):
        return self.module.distribution

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _images(self, images: Tensor) -> Tensor:
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"images have shape {tuple(images.shape)}; this model takes (N, {', '.join(map(str, self.image_shape))})")
        if not images.is_floating_point():  # levels 0..levels-1, as the datasets store them
            images = images.float() / (self.distribution.levels - 1)
        return images.to(self._device())

    def _labels(self, labels: Tensor | None, n: int, needed: str | None) -> Tensor | None:
        """`labels` as (n,) classes of this model; `needed` says why a conditional model wants them."""
        if not self.num_classes:
            return None
        if labels is None:
            if needed:
                raise ValueError(f"a class-conditional model {needed}: pass labels (N,)")
            return None
        labels = torch.as_tensor(labels).long().cpu()
        labels = labels.expand(n) if labels.dim() == 0 else labels  # one class for every image
        if labels.shape != (n,) or not bool(((labels >= 0) & (labels < self.num_classes)).all()):
            raise ValueError(f"labels must be {n} classes in 0..{self.num_classes - 1}")
        return labels

    def _nll(self, images: Tensor, labels: Tensor | None, batch_size: int, per_pixel: bool, bar=None) -> Tensor:
        """The module's exact NLL (per image, or per pixel) of scaled `images`, in batches."""
        out = []
        for start in range(0, len(images), batch_size):
            y = labels[start : start + batch_size].to(self._device()) if labels is not None else None
            out.append(self.module.nll(images[start : start + batch_size], y, per_pixel=per_pixel))
            if bar is not None:
                bar.update(len(out[-1]))
        return torch.cat(out)

    @torch.inference_mode()
    def log_prob(self, images: Tensor, labels: Tensor | None = None, batch_size: int = 256) -> Tensor:
        """log p(x) in nats per image (N,), exact (the module's NLL, negated), in batches."""
        images = self._images(images)
        labels = self._labels(labels, len(images), "gives log p(x | label)")
        return -self._nll(images, labels, batch_size, per_pixel=False)

    @torch.inference_mode()
    def nll_map(self, images: Tensor, labels: Tensor | None = None, batch_size: int = 256) -> Tensor:
        """-log p(x_i | x_<i) per pixel in nats (N, H, W), a pixel's channels summed: which pixels
        surprise the model. Each image's map sums to its NLL, -`log_prob`."""
        images = self._images(images)
        labels = self._labels(labels, len(images), "gives log p(x | label) per pixel")
        return self._nll(images, labels, batch_size, per_pixel=True)

    @torch.inference_mode()
    def score(self, images: Tensor, labels: Tensor | None = None, prior: Tensor | None = None, batch_size: int = 256,
              progress: bool = False) -> Scores:
        """Per-image NLL, bits/dim and per-pixel NLL of `images` (what score.py writes). A
        class-conditional model is also run once per class y for log p(x | y), giving
        log p(x) = logsumexp_y [log p(x | y) + log p(y)] and the most likely class (a generative
        classifier); `prior` p(y) (K,) defaults to uniform."""
        images = self._images(images)
        n, dims = len(images), math.prod(self.image_shape)
        labels = self._labels(labels, n, None)
        passes = self.num_classes or 1
        with tqdm(total=n * passes, unit="image", desc="scoring", disable=not progress) as bar:
            if not self.num_classes:
                pixel = self._nll(images, None, batch_size, per_pixel=True, bar=bar).cpu()
                nll = pixel.flatten(1).sum(1)
                return Scores(nll, bits_per_dim(nll, dims), pixel)
            log_prior = self._log_prior(prior)
            per_class = torch.empty(n, self.num_classes)
            pixel = torch.empty(n, *self.image_shape[1:])
            best = torch.full((n,), -math.inf)  # the best log p(x | y) + log p(y) so far, for the map without labels
            for y in range(self.num_classes):
                maps = self._nll(images, torch.full((n,), y), batch_size, per_pixel=True, bar=bar).cpu()
                per_class[:, y] = -maps.flatten(1).sum(1)
                joint = per_class[:, y] + log_prior[y]
                keep = labels == y if labels is not None else (joint > best) | (y == 0)  # the first maximum, as argmax
                best = torch.where(keep, joint, best)
                pixel[keep] = maps[keep]
        log_joint = per_class + log_prior
        most_likely = log_joint.argmax(1)
        chosen = labels if labels is not None else most_likely
        nll = -per_class.gather(1, chosen[:, None])[:, 0]
        return Scores(nll, bits_per_dim(nll, dims), pixel, chosen, per_class, torch.logsumexp(log_joint, 1), most_likely)

    def _log_prior(self, prior: Tensor | None) -> Tensor:
        if prior is None:
            return torch.full((self.num_classes,), -math.log(self.num_classes))
        prior = torch.as_tensor(prior, dtype=torch.float64).cpu()
        if prior.shape != (self.num_classes,) or not bool((prior >= 0).all()) or not prior.sum() > 0:
            raise ValueError(f"prior must be {self.num_classes} non-negative class probabilities")
        return (prior / prior.sum()).log().float()

    def sample(self, n: int, label: int | Tensor | None = None, temperature: float = 1.0, seed: int = 0,
               batch_size: int | None = None) -> Tensor:
        """`n` images (n, C, H, W) in [0, 1], with the fast sampler where the model has one (the same
        images as `python sample.py num=<n> seed=<seed>`)."""
        if self.num_classes and label is None:
            raise ValueError(f"a class-conditional model draws for a label: pass label=<0..{self.num_classes - 1}> (or n labels)")
        return sample(self.net, n, method="auto", y=label, temperature=temperature, seed=seed, batch_size=batch_size)

    def complete(self, images: Tensor, mask: Tensor, labels: Tensor | None = None, temperature: float = 1.0,
                 seed: int = 0) -> Tensor:
        """`images` with the sub-pixels where `mask` is false drawn anew, conditioned on every given one
        before them in raster order; `mask` is broadcast to the images' shape."""
        images = self._images(images)
        if self.num_classes and labels is None:
            raise ValueError("a class-conditional model completes for a label: pass labels (N,)")
        return sample(self.net, method="auto", known=images, known_mask=torch.as_tensor(mask, device=images.device),
                      y=labels, temperature=temperature, seed=seed)


def load(path_or_name: str, device: str = "cpu") -> Model:
    """The model of a checkpoint (train.py's .ckpt) or a shipped model's name (autoreg.pretrained),
    in eval mode on `device`. Loaded with `weights_only=True`: a file carrying code is refused."""
    return Model(AutoregressiveModule.from_checkpoint(str(path_or_name), map_location=device, key="path_or_name")).to(device)
