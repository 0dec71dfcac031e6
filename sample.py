"""Draw a PNG grid of samples (or completions) from a checkpoint: `python sample.py ckpt=... num=64`."""
import sys

import hydra

from autoreg.preflight import check_group_options
from autoreg.resolvers import register_resolvers


register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg):
    from autoreg.cli import sample_main  # torch and Lightning: after Hydra has composed the config

    return sample_main(cfg)


if __name__ == "__main__":
    check_group_options(sys.argv[1:])
    main()
