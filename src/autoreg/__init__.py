"""autoreg: autoregressive image models (PixelCNN, PixelRNN, Gated PixelCNN, PixelCNN++) with
Lightning and Hydra. Importing it registers each model family's config with Hydra's ConfigStore
(`model=<name>`, autoreg.families), so any compose of conf/train.yaml finds them."""
from autoreg.families import register_configs

register_configs()
