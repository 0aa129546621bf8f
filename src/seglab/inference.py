"""Load a checkpoint with everything it carries, predict class masks, and write them out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import to_absolute_path

from seglab.data.cvat import IMAGE_EXTENSIONS, DatasetError
from seglab.data.dataset import read_image
from seglab.data.masks import colorize, index_dtype
from seglab.models.module import SegmentationModule

REQUIRED_METADATA = ("model", "loss", "optimizer", "classes", "image_size", "mean", "std")


@dataclass
class Predictor:
    """A model in eval mode plus the preprocessing it was trained with."""

    module: SegmentationModule
    device: torch.device

    @property
    def classes(self) -> list[dict[str, Any]]:
        return list(self.module.hparams.classes)

    @torch.inference_mode()
    def predict(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 image of any size -> class-index mask of the same size."""
        hp = self.module.hparams
        height, width = image.shape[:2]
        resized = cv2.resize(image, tuple(reversed(hp.image_size)), interpolation=cv2.INTER_LINEAR)
        x = torch.from_numpy(resized).to(self.device).permute(2, 0, 1).float().div_(255)
        mean = torch.tensor(hp.mean, device=self.device)[:, None, None]
        std = torch.tensor(hp.std, device=self.device)[:, None, None]
        logits = self.module((x - mean).div_(std)[None])
        logits = F.interpolate(
            logits.float(), size=(height, width), mode="bilinear", align_corners=False
        )
        labels = logits.argmax(dim=1)[0].cpu().numpy()
        return labels.astype(index_dtype(len(hp.classes)))


def load_predictor(ckpt: str | Path, device: str = "auto") -> Predictor:
    """Rebuild the model from the checkpoint's own metadata; no training config needed."""
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(f"ckpt={ckpt}: no such checkpoint file")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{ckpt}: not a readable seglab checkpoint ({err})") from err
    hparams = dict(state.get("hyper_parameters") or {})
    missing = [key for key in REQUIRED_METADATA if key not in hparams]
    if missing or "state_dict" not in state:
        raise ValueError(
            f"{ckpt}: checkpoint lacks seglab metadata {missing or ['state_dict']}; "
            "it was not written by seglab's train.py (or by an incompatible version)"
        )
    # The trained weights replace the encoder's, so never download pretrained ones here.
    hparams["model"] = {**hparams["model"], "encoder_weights": None}
    module = SegmentationModule(**hparams)
    module.load_state_dict(state["state_dict"])
    resolved = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    )
    return Predictor(module.eval().to(resolved), resolved)


def find_images(source: str | Path) -> tuple[Path, list[Path]]:
    """The root to mirror and the images under `source` (a file or a folder, recursive)."""
    source = Path(source)
    if source.is_file():
        return source.parent, [source]
    if not source.is_dir():
        raise FileNotFoundError(f"input={source}: no such file or folder")
    images = sorted(
        p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not images:
        raise FileNotFoundError(
            f"input={source}: no images ({', '.join(IMAGE_EXTENSIONS)}) found in this folder"
        )
    return source, images


def overlay(image: np.ndarray, color_mask: np.ndarray, alpha: float) -> np.ndarray:
    """Blend the colour mask over the image; `alpha` is the mask's weight."""
    return cv2.addWeighted(image, 1.0 - alpha, color_mask, alpha, 0.0)


def predict_folder(
    ckpt: str | Path,
    source: str | Path,
    output: str | Path,
    device: str = "auto",
    overlay_alpha: float = 0.5,
) -> dict[str, Any]:
    """Write `<name>_index.png`, `<name>_color.png` and `<name>_overlay.jpg` per input image."""
    predictor = load_predictor(to_absolute_path(str(ckpt)), device)
    root, images = find_images(to_absolute_path(str(source)))
    output = Path(to_absolute_path(str(output)))
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"output={output} is an existing file; give a folder")
    colors = [tuple(c["color"]) for c in predictor.classes]
    start = time.perf_counter()
    written = 0
    for path, image in _read_all(images):
        labels = predictor.predict(image)
        color = colorize(labels, colors)
        stem = output / path.relative_to(root).with_suffix("")
        stem.parent.mkdir(parents=True, exist_ok=True)
        _write(stem.with_name(f"{stem.name}_index.png"), labels)
        _write(stem.with_name(f"{stem.name}_color.png"), color[..., ::-1])
        _write(
            stem.with_name(f"{stem.name}_overlay.jpg"),
            overlay(image, color, overlay_alpha)[..., ::-1],
        )
        written += 1
    seconds = time.perf_counter() - start
    return {"images": written, "seconds": seconds, "output": str(output.resolve())}


def _read_all(paths: list[Path]) -> Iterator[tuple[Path, np.ndarray]]:
    for path in paths:
        try:
            yield path, read_image(path)
        except DatasetError as err:
            raise DatasetError(f"{err}. Remove the file from the input or fix it") from err


def _write(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), np.ascontiguousarray(array)):
        raise OSError(f"{path}: could not write file")
