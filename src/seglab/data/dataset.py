"""Torch dataset: decode an image and its mask, map the mask to class indices, augment."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from seglab.data.channels import file_channels, fits, is_tiff, mismatch, read_bands, tiff_bands
from seglab.data.errors import DatasetError
from seglab.data.intensity import Intensity, unsupported_depth
from seglab.data.layouts import Sample, SegmentationExport
from seglab.data.masks import MaskDecoder

Transform = Callable[..., dict]
AUTO = Intensity()


def read_image(path: Path, intensity: Intensity | None = None, channels: int = 3) -> np.ndarray:
    """Read any image OpenCV or tifffile can decode as (H, W, `channels`) uint8, >8-bit images
    mapped by `intensity` (default: `auto`, see `seglab.data.intensity`); see `decode_image`."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DatasetError(f"{path}: cannot read image ({err.strerror or err})") from err
    return decode_image(data, path, intensity, channels)


def decode_image(
    data: bytes, name: str | Path, intensity: Intensity | None = None, channels: int = 3
) -> np.ndarray:
    """An image file's bytes -> (H, W, `channels`) uint8 (the network's `model.in_channels`),
    exactly as training reads files, so that an upload to the server is seen as predict.py sees
    the same file. OpenCV decodes at full depth (EXIF orientation applied, alpha dropped);
    8-bit colour and grayscale images come out for 3 channels as `IMREAD_COLOR` always gave
    them (RGB, grayscale repeated), 16-bit ones are mapped to 8 bits by `intensity`, the rule
    the model was trained with. Multi-band TIFFs are read by tifffile, bands in file order,
    each band mapped on its own (`Intensity.apply`). A file whose channel count does not fit
    `channels` (`seglab.data.channels.fits`) raises ChannelMismatch; other depths (32-bit float
    or integer, signed) a DatasetError naming the file."""
    rule = intensity or AUTO
    bands = tiff_bands(data, name) if is_tiff(data) else None
    if bands is not None:
        if not fits(bands, channels):
            raise mismatch(name, bands, channels, "the model")
        return rule.apply(read_bands(data, name), name, per_band=True)
    found = file_channels(data, name) if channels != 3 else 3
    if found and not fits(found, channels):
        raise mismatch(name, found, channels, "the model")
    image = _decode(data, name, cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR)
    if channels == 1:
        return rule.apply(image, name)[..., None]
    image = rule.apply(image, name)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _decode(data: bytes, name: str | Path, flag: int) -> np.ndarray:
    buffer = np.frombuffer(data, np.uint8)
    with _quiet_libtiff(is_tiff(data)):
        image = cv2.imdecode(buffer, cv2.IMREAD_ANYDEPTH | flag) if data else None
    if image is None:
        raw = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if data else None
        if raw is not None:  # OpenCV reads it, but not as colour: a 32-bit float/integer TIFF
            raise unsupported_depth(name, f"{raw.dtype} values")
        raise DatasetError(f"{name}: cannot read image (missing, corrupt or unsupported format)")
    return image


_quiet = {"count": 0, "saved": 0}
_quiet_lock = threading.Lock()


@contextmanager
def _quiet_libtiff(active: bool) -> Iterator[None]:
    """OpenCV's log level at ERROR while a TIFF decodes: libtiff warns about every private tag
    of microscope and scanner TIFFs (3 lines per read of each BBBC039 image, every epoch),
    and the files decode correctly. Counted, so that concurrent decodes (the server's threads)
    restore the level the last one found."""
    if not active:
        yield
        return
    with _quiet_lock:
        if _quiet["count"] == 0:
            _quiet["saved"] = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        _quiet["count"] += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet["count"] -= 1
            if _quiet["count"] == 0:
                cv2.utils.logging.setLogLevel(_quiet["saved"])


def build_decoder(
    export: SegmentationExport, ignore_index: int = 255, unknown_colors: str = "error"
) -> MaskDecoder:
    """Labelmap label -> training class index, ignored labels -> ignore_index."""
    index = {c.name: i for i, c in enumerate(export.classes)}
    targets = [
        ignore_index if lb.name in export.ignored else index[lb.name] for lb in export.labels
    ]
    colors = [lb.color for lb in export.labels]
    return MaskDecoder(colors, targets, ignore_index, unknown_colors, export.colour_labels)


class SegmentationDataset(Dataset):
    def __init__(
        self,
        samples: Sequence[Sample],
        decoder: MaskDecoder,
        transform: Transform | None,
        background_index: int | None = None,
        intensity: Intensity | None = None,
        channels: int = 3,
    ):
        """`background_index` fills samples that have no mask file (missing_masks=background);
        `intensity` maps >8-bit images to uint8 (`data.intensity`; default `auto`); images are
        read with `channels` (`model.in_channels`, see `decode_image`)."""
        self.samples = list(samples)
        self.decoder = decoder
        self.transform = transform
        self.background_index = background_index
        self.intensity = intensity or AUTO
        self.channels = channels

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw image and its class-index mask, before any transform."""
        image = read_image(self.samples[i].image, self.intensity, self.channels)
        return image, self.load_mask(i, image.shape[:2])

    def load_mask(self, i: int, image_size: tuple[int, int]) -> np.ndarray:
        """The class-index mask of sample `i`, whose image is `image_size` (height, width):
        its decoded mask file, or the background class where it has none. Apart from `load`
        for readers that take the image a window at a time (`seglab.data.tiles`)."""
        sample = self.samples[i]
        if sample.mask is None:
            if self.background_index is None:
                raise DatasetError(f"{sample.image}: no mask and no background class to fill in")
            return self.decoder.full(tuple(image_size), self.background_index)
        mask = self.decoder(sample.mask)
        if tuple(image_size) != mask.shape:
            (mh, mw), (ih, iw) = mask.shape, image_size
            raise DatasetError(
                f"{sample.mask}: mask is {mw}x{mh} but image {sample.image} is {iw}x{ih} (WxH); "
                "resize neither: re-export the mask from CVAT for the image as it is"
            )
        return mask

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        """uint8 image (C, H, W), the mask in its decoded dtype (8x fewer bytes between
        processes than int64; the module converts both on the device), and the sample's
        index, which names the image in per-image results (the report's gallery)."""
        image, mask = self.load(i)
        return {**self.transform(image=image, mask=mask), "index": torch.tensor(i)}
