"""Lossless compression with a trained model: `python compress.py ckpt=... split=test num=100 out=x.arz`,
`python compress.py ckpt=... input=<PNG or dir> out=x.arz`, `python compress.py ckpt=... decompress=x.arz out=<dir>`."""
import sys

import hydra

from autoreg.preflight import check_group_options
from autoreg.resolvers import register_resolvers


register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="compress")
def main(cfg):
    from autoreg.compression import compress_main  # torch: after Hydra has composed the config

    return compress_main(cfg)


if __name__ == "__main__":
    check_group_options(sys.argv[1:])
    main()
