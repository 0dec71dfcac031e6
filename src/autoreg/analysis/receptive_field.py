"""Receptive fields: which input pixels the prediction at one pixel actually depends on.

    python -m autoreg.analysis.receptive_field model=pixelcnn model.depth=3 model.kernel=5
    python -m autoreg.analysis.receptive_field model=pixelcnn model.dilation=2
    python -m autoreg.analysis.receptive_field model=pixelrnn model.arch=diagonal_bilstm
    python -m autoreg.analysis.receptive_field ckpt=<run dir>/checkpoints/best.ckpt

The map is |d params(pixel) / d x|, summed over a batch of images and over channels, computed by
autograd through the real network (default pixel: the image centre). A model of
p(x_i | x_<i) in raster order (van den Oord et al. 2016, "Pixel Recurrent Neural Networks",
arXiv 1601.06759) should reach every earlier pixel and no later one; masks and recurrences
decide how much of that context a network really gets:

- PixelCNN: every k x k mask-B layer widens the field by k // 2 to the left and upwards, but to
  the right only in the rows above, one row per layer, so a triangle of earlier pixels above and
  right of the pixel stays unseen at any depth: the blind spot (van den Oord et al. 2016, "Conditional
  Image Generation with PixelCNN Decoders", arXiv 1606.05328, fig. 1). `model.dilation` spreads
  the taps, so the same depth reaches further, with holes (pre-lab question 3).
- Row LSTM: the state of row i reads the states of row i-1 through a 1 x k convolution, so the
  field is a triangle widening upwards and misses the sides.
- Gated PixelCNN: a vertical stack over the rows above and a horizontal one over the current row
  (arXiv 1606.05328): a full rectangle of rows above and the row's pixels to the left, no blind
  spot (autoreg.models.gated_pixelcnn gives its exact extent).
- Diagonal BiLSTM: two diagonal recurrences (left-to-right, and right-to-left shifted down a
  row) cover the whole context (but see the NOTE in autoreg.models.pixelrnn about one pixel).

A pixel counts as reached when its gradient is non-zero: masked taps and unconnected paths give
exact zeros, so the counts are exact, not thresholded. With ckpt=..., the map is drawn for the
trained network and for a fresh one of the same config, on the checkpoint's own validation
images; without, on random binary images (the geometry does not depend on the input).
Training logs the same picture to TensorBoard once per run (`ReceptiveFieldImage`).

The blind spot's size (dilation 1), derived: let h1 = first_kernel // 2, h = kernel // 2,
L = depth and R = h1 + L h (the field's radius). A path through the network adds one offset
(dy, dx) per masked layer: one with dy < 0 may have any |dx| <= h (h1 for the mask-A first layer);
one with dy = 0 needs dx <= 0 (mask B) or dx <= -1 (mask A: not the centre). The left edge is -R
in every row. To reach t <= L rows up as far right as possible, t layers each step one row up and
fully right, the others stay in the row at dx = 0 (mask B) or -1 (mask A): the right edge of row t above is
e(t) = (t - 1) h + max(h1, h - 1) (the first layer steps up, or stays and costs one column), and
from L + 1 rows up it is R. Row t <= L above misses R - e(t) pixels within the radius, so the blind
spot is sum_t (R - e(t)) = h L (L + 1) / 2 pixels when h1 >= h - 1 (e.g. the default 7x7 first
layer with blocks of kernel <= 9), and the field reaches R (current row) + R (2R + 1) - blind earlier
pixels, for a pixel at least R from the top, left and right edges. The tests check this against
autograd.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from torch import nn


from autoreg.errors import ConfigError

OWN_KEYS = ("ckpt", "pixel", "out")  # the command's own keys (conf/receptive_field.yaml); the rest are train.py's
MISSED_RGB = (1.0, 0.72, 0.72)   # earlier pixels the network cannot see
LATER_RGB = (0.88, 0.88, 0.88)   # pixels the model must not see
PIXEL_RGB = (0.85, 0.1, 0.1)     # the predicted pixel


@dataclass(frozen=True)
class ContextCounts:
    reached: int  # earlier pixels (raster order) with a non-zero gradient
    ideal: int  # all earlier pixels
    later: int  # later pixels with a non-zero gradient: 0 for a causal model

    def __str__(self) -> str:
        return f"reached {self.reached} of {self.ideal} earlier pixels ({100 * self.reached / max(self.ideal, 1):.0f}%), {self.later} later"


def gradient_map(net: nn.Module, x: torch.Tensor, pixel: tuple[int, int]) -> torch.Tensor:
    """|d params(pixel) / d x| summed over the batch, the params at `pixel` and input channels: (H, W).
    Only the input's gradient is computed: the parameters' .grad stay untouched (safe mid-training)."""
    was_training = net.training
    net.eval()
    x = x.detach().clone().requires_grad_(True)
    # a class-conditional net gets class 0: the field's geometry does not depend on the label
    y = torch.zeros(len(x), dtype=torch.long, device=x.device) if getattr(net, "num_classes", None) else None
    with torch.enable_grad():
        params = net(x, y)
        (grad,) = torch.autograd.grad(params[:, :, pixel[0], pixel[1]].sum(), x)
    net.train(was_training)
    return grad.abs().sum(dim=(0, 1)).cpu()


def context_counts(field: torch.Tensor, pixel: tuple[int, int]) -> ContextCounts:
    """Counts of reached pixels before and after `pixel` (the pixel itself is left out: with
    colour channels, later channels of a pixel rightly see its earlier ones)."""
    q = pixel[0] * field.shape[1] + pixel[1]
    flat = field.flatten() > 0
    return ContextCounts(int(flat[:q].sum()), q, int(flat[q + 1 :].sum()))


def field_image(field: torch.Tensor, pixel: tuple[int, int]) -> tuple[np.ndarray, LogNorm]:
    """An RGB picture of a gradient map: reached pixels coloured by log |gradient| (viridis),
    missed earlier pixels pink, later pixels grey, the predicted pixel red."""
    import matplotlib

    h, w = field.shape
    order = np.arange(h * w).reshape(h, w)
    q = pixel[0] * w + pixel[1]
    values = field.numpy().astype(np.float64)
    reached = values > 0
    norm = LogNorm(vmin=values[reached].min(), vmax=values[reached].max()) if reached.any() else LogNorm(1, 10)
    rgb = np.empty((h, w, 3))
    rgb[order < q] = MISSED_RGB
    rgb[order > q] = LATER_RGB
    rgb[reached] = matplotlib.colormaps["viridis"](norm(values[reached]))[:, :3]
    rgb[pixel] = PIXEL_RGB
    return rgb, norm


def plot_fields(panels: list[tuple[str, torch.Tensor]], pixel: tuple[int, int], title: str = "") -> Figure:
    """One heatmap per (label, gradient map), side by side, each titled with its context counts."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.patches import Patch

    fig = Figure(figsize=(max(6.0, 4.4 * len(panels)), 4.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, field) in zip(axes, panels):
        rgb, norm = field_image(field, pixel)
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(f"{label}\n{context_counts(field, pixel)}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(ScalarMappable(norm, "viridis"), ax=ax, shrink=0.7, label="|d output / d input|")
    handles = [Patch(color=MISSED_RGB, label="earlier, not reached"), Patch(color=LATER_RGB, label="later (must not be reached)"),
               Patch(color=PIXEL_RGB, label="predicted pixel")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8)
    if title:  # wrapped to the figure's width (about 11 characters per inch at this size)
        width = int(11 * fig.get_figwidth())
        fig.suptitle("\n".join(textwrap.fill(line, width) for line in title.splitlines()), fontsize=10)
    return fig


def describe(model_cfg: dict) -> str:
    """A short title naming the model and the keys that shape its field."""
    keys = ("arch", "cell", "depth", "kernel", "first_kernel", "dilation")
    return f"{model_cfg['name']} " + " ".join(f"{k}={model_cfg[k]}" for k in keys if k in model_cfg)


def blind_spot_note(model_cfg: dict, field: torch.Tensor, pixel: tuple[int, int]) -> str:
    """The family's theory of its field (`Family.field_theory`: PixelCNN's blind spot), next to
    the measured counts; empty where it has none."""
    from autoreg.families import declared

    theory = declared(model_cfg).field_theory()
    if theory is None:
        return ""
    radius, reached, blind = theory
    if pixel[0] < radius or pixel[1] < radius or pixel[1] + radius >= field.shape[1]:
        return f"radius {radius} reaches the image's edges; theory in a larger image: blind spot {blind}, reached {reached}"
    return f"theory: blind spot {blind}, reached {reached} (measured {context_counts(field, pixel).reached})"


def validation_images(datamodule, num: int) -> torch.Tensor:
    """The first `num` validation images, scaled as the model sees them."""
    datamodule.setup("fit")
    val = datamodule.splits["val"]
    x, _ = datamodule.on_after_batch_transfer(val[torch.arange(min(num, len(val)))], 0)
    return x


class ReceptiveFieldImage(pl.Callback):
    """Logs `receptive_field` to TensorBoard once per run, at the end of training: the gradient map
    of the network at the start of training next to the trained one, on the same `num`
    validation images (the picture `python -m autoreg.analysis.receptive_field ckpt=...` draws)."""

    def __init__(self, num: int = 8):
        self.num = num
        self.x: torch.Tensor | None = None
        self.start: tuple[int, torch.Tensor] | None = None

    def _pixel(self, pl_module) -> tuple[int, int]:
        _, h, w = pl_module.image_shape
        return h // 2, w // 2

    def on_fit_start(self, trainer: pl.Trainer, pl_module) -> None:
        dm = trainer.datamodule
        if not trainer.is_global_zero or not isinstance(trainer.logger, pl.loggers.TensorBoardLogger) or dm is None:
            return
        with torch.random.fork_rng(devices=[]):  # a picture must not change the run's random stream
            self.x = validation_images(dm, self.num).to(pl_module.device)
            self.start = trainer.global_step, gradient_map(pl_module.net, self.x, self._pixel(pl_module))

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        if self.start is None:
            return
        pixel = self._pixel(pl_module)
        step, start = self.start
        end = gradient_map(pl_module.net, self.x, pixel)
        fig = plot_fields([(f"step {step}", start), (f"step {trainer.global_step}", end)], pixel,
                          describe(pl_module.hparams.model))
        trainer.logger.experiment.add_figure("train/receptive_field", fig, trainer.global_step)


def _random_images(image_shape: tuple[int, int, int], num: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (num, *image_shape), generator=g).float()


def parse_pixel(value, shape: tuple[int, int, int]) -> tuple[int, int]:
    """`pixel=[row,col]` or `pixel='row,col'` (default: the centre) inside the image."""
    if value is None or value == "":
        return shape[1] // 2, shape[2] // 2
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        row, col = (int(v) for v in parts)
    except (TypeError, ValueError):
        row = col = -1
    if not (0 <= row < shape[1] and 0 <= col < shape[2]):
        text = value if isinstance(value, str) else ",".join(map(str, parts))
        raise ConfigError(f"pixel={text} is invalid: it must be [row,col] inside the {shape[1]}x{shape[2]} image")
    return row, col


def receptive_field_figure(cfg) -> Path:
    """The command's work (conf/receptive_field.yaml): build or load the model, draw its field(s),
    save the PNG, print counts."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from autoreg.build import build_datamodule
    from autoreg.config import IMAGE_SHAPES, validate
    from autoreg.families import build_model, distribution_from_config
    from autoreg.module import AutoregressiveModule
    from autoreg.run_dirs import job_dirname

    overrides = [o for o in HydraConfig.get().overrides.task if o.partition("=")[0] not in OWN_KEYS]
    torch.manual_seed(0)
    if cfg.ckpt:
        if overrides:
            raise ConfigError(f"ckpt={cfg.ckpt} takes the model and data from the checkpoint; drop the overrides {' '.join(overrides)}")
        trained = AutoregressiveModule.from_checkpoint(cfg.ckpt, key="ckpt")
        model_cfg, shape = dict(trained.hparams.model), tuple(trained.image_shape)
        fresh = build_model(model_cfg, shape, trained.distribution, num_classes=trained.net.num_classes)
        x = validation_images(build_datamodule(trained.hparams.data), 8)
        nets = [("untrained", fresh), ("trained", trained.net)]
        default_out = Path(cfg.ckpt).with_name(f"{Path(cfg.ckpt).stem}_receptive_field.png")
    else:
        validate(cfg)
        model_cfg, shape = OmegaConf.to_container(cfg.model, resolve=True), IMAGE_SHAPES[cfg.data.dataset]
        x = _random_images(shape)
        nets = [("untrained", build_model(model_cfg, shape, distribution_from_config(model_cfg, cfg.data.bits), cfg.data.num_classes))]
        default_out = Path("outputs/receptive_field") / f"{job_dirname(','.join(overrides)) or model_cfg['name']}.png"
    pixel = parse_pixel(cfg.pixel, shape)
    panels = [(label, gradient_map(net, x, pixel)) for label, net in nets]
    title = describe(model_cfg)
    note = blind_spot_note(model_cfg, panels[0][1], pixel)
    fig = plot_fields(panels, pixel, f"{title}\n{note}" if note else title)
    out = Path(cfg.out or default_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    for label, field in panels:
        print(f"{title} at pixel {pixel}, {label}: {context_counts(field, pixel)}")
    if note:
        print(note)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    from autoreg.apps import receptive_field

    receptive_field()
