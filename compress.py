"""Lossless compression with a trained model: `python compress.py ckpt=... split=test num=100 out=x.arz`,
`python compress.py ckpt=... input=<PNG or dir> out=x.arz`, `python compress.py ckpt=... decompress=x.arz out=<dir>`
(installed: `autoreg-compress`). The app: autoreg.apps."""
from autoreg.apps import compress

if __name__ == "__main__":
    compress()
