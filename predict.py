"""Predict masks with a checkpoint: `python predict.py ckpt=PATH input=PATH [output=DIR]`."""

import hydra
from omegaconf import DictConfig

from seglab.console import exit_on_user_error
from seglab.prediction.run import run, summary_line


@hydra.main(version_base="1.3", config_path="conf/predict", config_name="predict")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        summary = run(cfg)
    print(summary_line(summary))
    print(f"Output: {summary['output']}")
    if "cvat_export" in summary:
        print(f"CVAT export: {summary['cvat_export']} (import as Segmentation mask 1.1)")


if __name__ == "__main__":
    main()
