"""autoreg from Python (a notebook, a script): a trained model with its exact likelihood and its
samplers, the same functions train.py's module and sample.py use.

    import autoreg
    model = autoreg.load("paper_mnist_pixelcnn")   # a shipped model's name, or a checkpoint path
    nats = -model.log_prob(images)                  # per image; images (N, C, H, W) in [0, 1]
    samples = model.sample(16, seed=0)              # (16, C, H, W) in [0, 1]
    filled = model.complete(images, mask, seed=0)   # mask: True where a pixel is given
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from autoreg.module import AutoregressiveModule
from autoreg.sampling import sample


class Model(nn.Module):
    """A trained model in eval mode: `log_prob`, `sample`, `complete`. `net` is the family's network,
    `distribution` its likelihood head, `image_shape` (C, H, W), `num_classes` (None: unconditional)."""

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

    @torch.inference_mode()
    def log_prob(self, images: Tensor, labels: Tensor | None = None, batch_size: int = 256) -> Tensor:
        """log p(x) in nats per image (N,), exact (the module's NLL, negated), in batches."""
        images = self._images(images)
        if self.num_classes and labels is None:
            raise ValueError("a class-conditional model gives log p(x | label): pass labels (N,)")
        out = []
        for start in range(0, len(images), batch_size):
            y = labels[start : start + batch_size].to(self._device()) if labels is not None else None
            out.append(-self.module.nll(images[start : start + batch_size], y))
        return torch.cat(out)

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
