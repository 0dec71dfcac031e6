"""PixelCNN++'s model keys (Salimans et al. 2017, arXiv 1701.05517): down- and down-right-shifted
convolutions (no masks, no blind spot), gated resnet blocks with concat_elu, three resolutions with
shortcut connections, a discretized logistic mixture per pixel. Sized for a CPU; the paper's
CIFAR-10 network is nr_resnet=5, channels=160, dropout=0.5 (+experiment=paper_cifar10_pixelcnn_pp).
The network: autoreg.models.pixelcnn_pp."""
from __future__ import annotations

from dataclasses import dataclass

from autoreg.checks import require_int
from autoreg.errors import ConfigError
from autoreg.families import Family
from autoreg.likelihoods import HEADS


@dataclass(frozen=True)
class PixelCNNppKeys(Family):
    NAME = "pixelcnn_pp"
    NETWORK = "autoreg.models.pixelcnn_pp:PixelCNNpp"
    LIKELIHOODS = ("logistic_mixture", "bernoulli", "categorical")  # auto: the mixture for 8-bit data, Bernoulli for 1-bit

    nr_resnet: int = 2     # gated resnet blocks per resolution and stream in the up pass (down pass: +1 at the two upper resolutions)
    channels: int = 32     # features of both streams (the paper's nr_filters)
    dropout: float = 0.0   # dropout inside every block, in [0, 1) (the paper: 0.5)

    def check(self, image_shape: tuple[int, int, int], likelihood: str) -> None:
        require_int("model.nr_resnet", self.nr_resnet)
        require_int("model.channels", self.channels)
        require_dropout(self.dropout)
        require_whole_pixel_head(self.NAME, image_shape, likelihood)


def require_dropout(dropout) -> None:
    """`model.dropout` must be a number in [0, 1)."""
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"model.dropout={dropout} is invalid: it must be a number in [0, 1)")


def require_whole_pixel_head(family: str, image_shape: tuple[int, int, int], likelihood: str) -> None:
    """A network that sees earlier pixels only (PixelCNN++'s streams) needs a head that draws whole
    pixels for images of more than one channel."""
    c = image_shape[0]
    if c > 1 and not HEADS[likelihood].joint:
        raise ConfigError(
            f"model/likelihood={likelihood} cannot model {c}-channel images with model={family}: its network "
            "sees earlier pixels only, not a pixel's earlier channels; use model/likelihood=logistic_mixture"
        )
