"""The exact NLL of images under a trained model: `python score.py ckpt=... input=<PNG or dir>`,
`python score.py ckpt=... split=test num=1000`: a CSV, per-pixel NLL heatmaps and a summary."""
import sys

import hydra

from autoreg.preflight import check_group_options
from autoreg.resolvers import register_resolvers


register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="score")
def main(cfg):
    from autoreg.score_cli import score_main  # its checks run before torch is imported

    return score_main(cfg)


if __name__ == "__main__":
    check_group_options(sys.argv[1:])
    main()
