"""Draw a PNG grid of samples (or completions) from a checkpoint: `python sample.py ckpt=... num=64`
(installed: `autoreg-sample`). The app: autoreg.apps."""
from autoreg.apps import sample

if __name__ == "__main__":
    sample()
