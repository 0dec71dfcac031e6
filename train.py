"""Train an autoregressive image model: `python train.py [overrides]`, `python train.py -m ...`
(installed: `autoreg-train`). The app: autoreg.apps."""
from autoreg.apps import train

if __name__ == "__main__":
    train()
