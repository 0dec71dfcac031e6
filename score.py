"""The exact NLL of images under a trained model, per image (CSV) and per pixel (heatmaps):
`python score.py ckpt=... input=<PNG or dir>` or `split=test num=1000` (installed: `autoreg-score`).
The app: autoreg.apps."""
from autoreg.apps import score

if __name__ == "__main__":
    score()
