"""Train a segmentation model: `python train.py [group=option ...] [key=value ...]`.

With no `data.path=`, `data=` or `experiment=` on the command line it trains the demo preset
(`experiment=demo`); `python train.py data.path=/path/to/export` trains your CVAT export.
"""

import sys

import hydra
from omegaconf import DictConfig

from seglab.config import with_default_experiment
from seglab.console import exit_on_user_error
from seglab.sweep import run_job


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with exit_on_user_error():
        return run_job(cfg)  # cfg.optimized_metric, the objective for sweepers


if __name__ == "__main__":
    sys.argv[1:] = with_default_experiment(sys.argv[1:])
    main()
