"""Model families: pure nn.Modules mapping an image batch (+ label) to likelihood parameters."""
from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from autoreg.models.pixelcnn import PixelCNN
from autoreg.models.pixelrnn import PixelRNN

MODELS: dict[str, type[nn.Module]] = {"pixelcnn": PixelCNN, "pixelrnn": PixelRNN}


def build_model(model_cfg: Mapping, image_shape: tuple[int, int, int], distribution) -> nn.Module:
    """Instantiate the network named `model_cfg['name']`; the other keys are its arguments."""
    kwargs = {k: v for k, v in dict(model_cfg).items() if k not in ("name", "compile")}
    return MODELS[model_cfg["name"]](tuple(image_shape), distribution, **kwargs)
