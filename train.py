"""Train an autoregressive image model: `python train.py [overrides]`, `python train.py -m ...`."""
import sys

import hydra

from autoreg.preflight import check_group_options
from autoreg.resolvers import register_resolvers


register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg):
    from autoreg.cli import train_main  # torch and Lightning: after the config checks (autoreg.preflight)

    return train_main(cfg)


if __name__ == "__main__":
    check_group_options(sys.argv[1:])
    main()
