"""Read a CVAT "Segmentation Mask 1.1" export into classes and samples.

Parsing is strict on purpose: a silently mislabelled pixel or a dropped sample ruins a model
without anyone noticing, so every inconsistency raises a `DatasetError` that names the file
and says how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
LABELMAP_HEADER = "# label:color_rgb:parts:actions"


class DatasetError(ValueError):
    """A dataset that cannot be used as it is; the message says which file and how to fix it."""


@dataclass(frozen=True)
class SegClass:
    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class Sample:
    id: str
    image: Path
    mask: Path
    split: str


@dataclass(frozen=True)
class SegmentationExport:
    root: Path
    classes: tuple[SegClass, ...]
    samples: tuple[Sample, ...]

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def splits(self) -> list[str]:
        return sorted({s.split for s in self.samples})

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]


def parse_labelmap(path: Path) -> tuple[SegClass, ...]:
    """Parse CVAT's `name:r,g,b:parts:actions` lines; class order is the file's line order."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: labelmap.txt not found")
    classes: list[SegClass] = []
    seen_names: dict[str, int] = {}
    seen_colors: dict[tuple[int, int, int], int] = {}
    # utf-8-sig drops a BOM; splitlines() handles CRLF.
    for lineno, raw in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) != 4:
            raise DatasetError(
                f"{path}:{lineno}: expected 4 ':'-separated fields "
                f"'name:r,g,b:parts:actions', found {len(fields)} in {raw!r}"
            )
        name, color_text = fields[0].strip(), fields[1]
        if not name:
            raise DatasetError(f"{path}:{lineno}: empty label name in {raw!r}")
        color = _parse_color(color_text)
        if color is None:
            raise DatasetError(
                f"{path}:{lineno}: bad colour {color_text!r} for label {name!r}; "
                "expected three integers 0-255 such as '250,50,83'"
            )
        if name in seen_names:
            raise DatasetError(
                f"{path}:{lineno}: duplicate label name {name!r} (first on line {seen_names[name]})"
            )
        if color in seen_colors:
            raise DatasetError(
                f"{path}:{lineno}: label {name!r} reuses colour {color} of line "
                f"{seen_colors[color]}; masks could not tell the two classes apart"
            )
        seen_names[name] = lineno
        seen_colors[color] = lineno
        classes.append(SegClass(name, color))
    if not classes:
        raise DatasetError(f"{path}: no labels found")
    return tuple(classes)


def _parse_color(text: str) -> tuple[int, int, int] | None:
    parts = text.split(",")
    if len(parts) != 3:
        return None
    try:
        rgb = tuple(int(p) for p in parts)
    except ValueError:
        return None
    if any(not 0 <= v <= 255 for v in rgb):
        return None
    return rgb  # type: ignore[return-value]


def write_labelmap(path: Path, classes: Iterable[SegClass]) -> None:
    """Write a labelmap in the syntax CVAT's exporter uses."""
    lines = [LABELMAP_HEADER] + [f"{c.name}:{','.join(map(str, c.color))}::" for c in classes]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_export(
    root: str | Path,
    images_dir: str | Path | None = None,
    labelmap: str | Path | None = None,
) -> SegmentationExport:
    """Pair every item listed in `ImageSets/Segmentation/<subset>.txt` with its image and mask."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found; set data.path to a CVAT export")
    labelmap_path = Path(labelmap) if labelmap else root / "labelmap.txt"
    if not labelmap_path.is_file():
        raise DatasetError(
            f"{labelmap_path}: labelmap.txt not found. Export from CVAT as "
            "'Segmentation Mask 1.1', "
            "or point data.labelmap at the file"
        )
    classes = parse_labelmap(labelmap_path)

    sets_dir = root / "ImageSets" / "Segmentation"
    subset_files = sorted(sets_dir.glob("*.txt")) if sets_dir.is_dir() else []
    if not subset_files:
        raise DatasetError(
            f"{sets_dir}: no subset lists (<subset>.txt) found; is {root} a CVAT "
            "'Segmentation Mask 1.1' export?"
        )

    image_root = Path(images_dir) if images_dir else root / "JPEGImages"
    if not image_root.is_dir():
        raise DatasetError(
            f"{image_root}: image folder not found. The export was probably made without images: "
            "re-export with 'Save images', or set data.images_dir to the folder of original images"
        )
    images = _index_images(image_root)
    mask_root = root / "SegmentationClass"

    samples: list[Sample] = []
    seen: dict[str, str] = {}
    for subset_file in subset_files:
        split = subset_file.stem
        for lineno, raw in enumerate(subset_file.read_text(encoding="utf-8-sig").splitlines(), 1):
            item = raw.strip()
            if not item:
                continue
            if item in seen:
                raise DatasetError(
                    f"{subset_file}:{lineno}: item {item!r} is already in subset {seen[item]!r}; "
                    "an image must belong to exactly one split"
                )
            seen[item] = split
            image = images.get(item)
            if image is None:
                raise DatasetError(
                    f"{subset_file}:{lineno}: no image for item {item!r} in {image_root} "
                    f"(looked for {item}{{{','.join(IMAGE_EXTENSIONS)}}})"
                )
            mask = mask_root / f"{item}.png"
            if not mask.is_file():
                raise DatasetError(
                    f"{mask}: mask missing for item {item!r} listed in {subset_file.name}. "
                    "CVAT writes no mask for frames without annotations: annotate the frame "
                    "(or mark it as background) and export again, or remove it from the subset list"
                )
            samples.append(Sample(id=item, image=image, mask=mask, split=split))
    return SegmentationExport(root=root, classes=classes, samples=tuple(samples))


def _index_images(image_root: Path) -> dict[str, Path]:
    """Map item id (relative path without extension) to image file, refusing ambiguous stems."""
    index: dict[str, Path] = {}
    for path in sorted(image_root.rglob("*")):
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            continue
        item = path.relative_to(image_root).with_suffix("").as_posix()
        if item in index:
            raise DatasetError(
                f"{image_root}: two images for item {item!r}: {index[item].name} and {path.name}; "
                "keep one"
            )
        index[item] = path
    return index
