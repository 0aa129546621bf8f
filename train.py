"""Train a segmentation model: `python train.py [group=option ...] [key=value ...]`."""

import hydra
from omegaconf import DictConfig

from seglab.sweep import run_job


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_job(cfg)  # cfg.optimized_metric, the objective for sweepers


if __name__ == "__main__":
    main()
