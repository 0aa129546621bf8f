"""Train a segmentation model: `python train.py [group=option ...] [key=value ...]`."""

import hydra
from omegaconf import DictConfig

from seglab.training import run


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run(cfg)
    return metrics.get(cfg.get("optimized_metric") or "")  # objective for sweepers


if __name__ == "__main__":
    main()
