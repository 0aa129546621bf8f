"""The preprocessing a network is trained with, defined once for training, validation and
prediction.

- The evaluation geometry: an image is fitted into the training size (`data.image_size`)
  with its aspect kept (`letterbox`), and the logits of the fitted region are brought back to
  the image's own size (`restore_logits`) before the argmax. Validation, testing
  (`data/transforms.py`, `SegmentationModule`) and `predict.py`'s `mode=resize` all call these,
  so a checkpoint's validation scores are its predictions' scores, at each image's own
  resolution.
- The normalisation, on the device: uint8 (N, C, H, W) -> float32 `(x - 255 mean) / (255 std)`
  with the `data.mean` / `data.std` a checkpoint stores. The module (training and validation
  batches), the Predictor and the W&B callback (which undoes it for display) call
  `normalise` / `denormalise` here.

Loaders ship uint8 and normalising happens after the transfer because, in the loader workers,
it was the most expensive step of a sample (2.9 ms of ~7 at 512 px) and made the batches 4x
more bytes to pass between processes and copy to the GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch


def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """An (H, W, C) image resized to [height, width], bilinear (cv2.INTER_LINEAR), any C (OpenCV
    drops the axis of a 1-channel image; it is put back)."""
    height, width = (int(v) for v in size)
    if image.shape[:2] == (height, width):
        return image  # bilinear at scale 1 reproduces every pixel exactly
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return resized[..., None] if image.ndim == 3 and resized.ndim == 2 else resized


def resize_mask(mask: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """An (H, W) class-index mask resized to [height, width], nearest-neighbour (no new ids)."""
    height, width = (int(v) for v in size)
    if mask.shape[:2] == (height, width):
        return mask
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)


def pixel_statistics(
    mean: Sequence[float], std: Sequence[float], device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`mean` and `std` (in [0, 1] units, as configured) times 255, shaped (1, C, 1, 1)."""
    if len(mean) != len(std):
        raise ValueError(
            f"data.mean has {len(mean)} values but data.std {len(std)}; give one per channel"
        )
    if any(float(s) <= 0 for s in std):
        raise ValueError(f"data.std={list(std)}: every value must be positive")
    shape = (1, -1, 1, 1)
    mean_255 = torch.tensor([float(v) for v in mean], device=device).view(shape) * 255
    std_255 = torch.tensor([float(v) for v in std], device=device).view(shape) * 255
    return mean_255, std_255


def images_to_batch(images: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """Same-size uint8 (H, W, C) images -> a uint8 (N, C, H, W) tensor on `device`.

    The result is a channels-last view of the stacked images (no copy); its values equal the
    validation loader's (ToTensorV2, then default collation).
    """
    # One image (batch 1, the CPU default): a view of it, no copy, unless it is strided (a flip).
    # torch's unsqueeze, not numpy's [None]: numpy gives the new axis a stride of 0, which
    # oneDNN's convolutions do not take as channels-last; such a batch ran U-Net ResNet-34 at
    # 0.83x the speed of a properly strided one (2-core AMD EPYC, benchmarks/inference.py).
    if len(images) == 1:
        batch = torch.from_numpy(np.ascontiguousarray(images[0])).unsqueeze(0)
    else:
        batch = torch.from_numpy(np.stack(images))
    return batch.to(device, non_blocking=True).permute(0, 3, 1, 2)


def normalise(images: torch.Tensor, mean_255: torch.Tensor, std_255: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 `(x - mean_255) / std_255` (from `pixel_statistics`)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"normalise takes uint8 images (0-255), got {images.dtype}")
    # In place on the one new float tensor: the same operations, in the same order, as
    # `(x - mean) / std`, without two more image-sized allocations (a third of its time).
    return images.float().sub_(mean_255).div_(std_255)


def denormalise(
    images: torch.Tensor, mean_255: torch.Tensor, std_255: torch.Tensor
) -> torch.Tensor:
    """The inverse of `normalise`, rounded back to uint8 (N, C, H, W), e.g. to show a batch."""
    restored = images.float() * std_255.to(images.device) + mean_255.to(images.device)
    return restored.round().clamp(0, 255).to(torch.uint8)


# --- Evaluation geometry: the whole image, aspect kept ------------------------------------------
# Training, validation, testing and predict.py's `mode=resize` all fit an image into the
# training size without squashing it: scaled by one factor until it touches the canvas on one
# side (`data.upscale: true`), or only shrunk when it is larger than the canvas and otherwise
# kept at its own pixels (`data.upscale: false`, the default), placed top-left on a black
# canvas of the training size; the logits of that region are cropped and resized back to the
# image's own size, where the metrics are computed.


def fit_size(
    image_size: Sequence[int], canvas: Sequence[int], max_ratio: float | None = None
) -> tuple[int, int]:
    """The (height, width) an image of `image_size` takes when scaled, aspect kept, to fit
    inside `canvas`: up or down, or, with `max_ratio`, enlarged by at most that factor
    (`1.0`: an image that fits is kept at its own size; a test-time scale s gives `s`).

    Why not enlarge by default: a resample by a few percent moves every outline by up to half a
    pixel against its nearest-neighbour label, noise as large as what small objects' IoU is
    decided by (bbbc039's nuclei, 520x696 in a 512x704 canvas: the labels taken to 0.985 and
    back score nucleus IoU 0.884 against themselves; benchmarks/README.md)."""
    height, width = (int(v) for v in image_size[:2])
    canvas_h, canvas_w = (int(v) for v in canvas)
    ratio = min(canvas_h / height, canvas_w / width)
    if max_ratio is not None:
        ratio = min(ratio, float(max_ratio))
    return (
        min(canvas_h, max(1, round(height * ratio))),
        min(canvas_w, max(1, round(width * ratio))),
    )


def max_fit_ratio(upscale: bool, scale: float = 1.0) -> float | None:
    """`fit_size`'s `max_ratio` for `data.upscale` at a test-time `scale` of the canvas."""
    return None if upscale else float(scale)


def letterbox(
    image: np.ndarray, canvas: Sequence[int], max_ratio: float | None = None
) -> np.ndarray:
    """The image fitted into `canvas` (`fit_size`, bilinear), top-left on black pixels."""
    height, width = fit_size(image.shape[:2], canvas, max_ratio)
    resized = resize_image(image, (height, width))
    if resized.shape[:2] == tuple(int(v) for v in canvas):
        return resized
    out = np.zeros((int(canvas[0]), int(canvas[1]), *image.shape[2:]), image.dtype)
    out[:height, :width] = resized
    return out


def restore_logits(
    logits: torch.Tensor, fitted: Sequence[int], image_size: Sequence[int]
) -> torch.Tensor:
    """(C, H, W) logits of a `letterbox` canvas -> (C, h, w) at the image's own size: the fitted
    region cropped, then resized bilinearly (logits, not labels, so edges stay smooth)."""
    height, width = (int(v) for v in fitted)
    region = logits[None, :, :height, :width]
    if tuple(region.shape[-2:]) != tuple(int(v) for v in image_size):
        region = torch.nn.functional.interpolate(
            region, size=tuple(int(v) for v in image_size), mode="bilinear", align_corners=False
        )
    return region[0]


def class_map(logits: torch.Tensor) -> torch.Tensor:
    """(C, H, W) logits -> (H, W) class indices, the first of equal maxima, as `argmax(dim=0)`.
    On a CPU the argmax runs over a channels-last copy: torch reduces across the outer
    dimension of a contiguous (C, H, W) tensor ~20x slower (4 x 512 x 512: 61 ms against 3 ms
    with the copy; 59 x 436 x 288: 27 against 13), which made it half of `slide` mode's
    per-image work in predict.py."""
    if logits.device.type == "cpu" and logits.stride(0) != 1:
        return logits.permute(1, 2, 0).contiguous().argmax(dim=-1)
    return logits.argmax(dim=0)
