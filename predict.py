"""Predict masks with a checkpoint: `python predict.py ckpt=PATH input=PATH [output=DIR]`."""

import hydra
from omegaconf import DictConfig

from seglab.inference import predict_folder


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    summary = predict_folder(
        ckpt=cfg.ckpt,
        source=cfg.input,
        output=cfg.output,
        device=cfg.device,
        overlay_alpha=cfg.overlay_alpha,
    )
    rate = summary["images"] / max(summary["seconds"], 1e-9)
    print(
        f"Predicted {summary['images']} image(s) in {summary['seconds']:.1f} s "
        f"({rate:.1f} images/s)"
    )
    print(f"Output: {summary['output']}")


if __name__ == "__main__":
    main()
