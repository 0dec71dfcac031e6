"""autoreg: autoregressive image models (PixelCNN, PixelRNN, Gated PixelCNN, PixelCNN++) with
Lightning and Hydra. `autoreg.load(path_or_name)` gives a trained model (autoreg.api). Importing
the package registers each model family's config with Hydra's ConfigStore (`model=<name>`,
autoreg.families), so any compose of conf/train.yaml finds them."""
from autoreg.families import register_configs

register_configs()


def __getattr__(name: str):
    # autoreg.load imports torch and Lightning only when asked for: the config checks run without them
    if name == "load":
        from autoreg.api import load

        return load
    raise AttributeError(f"module 'autoreg' has no attribute {name!r}")
