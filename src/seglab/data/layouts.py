"""Read a segmentation dataset, as CVAT users have it, into classes and samples.

Three layouts are detected from `data.path` (a folder, or a `.zip` of one):
- `cvat`: a "Segmentation Mask 1.1" export (labelmap.txt, ImageSets/Segmentation/<subset>.txt,
  SegmentationClass/, JPEGImages/ unless exported without images);
- `split`: images/<split>/ + masks/<split>/ colour masks + labelmap.txt (what platforms ask for);
- `index`: images/ + masks/ whose pixel values are class ids, named by data.classes or classes.txt.

Parsing is strict on purpose: a silently mislabelled pixel or a dropped sample ruins a model
without anyone noticing, so every inconsistency raises a `DatasetError` that names the file and
says how to fix it; what is deliberately left out is reported in `notes`. The labels themselves
are parsed in `labelmap.py`; this module pairs images with masks and splits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from seglab.data.archive import find_dataset_root
from seglab.data.errors import DatasetError
from seglab.data.images import IMAGE_EXTENSIONS
from seglab.data.labelmap import (
    BACKGROUND,
    CVAT_COLOR_LIMIT,
    SegClass,
    read_labels,
    read_text,
    training_classes,
)
from seglab.data.splits import SPLITS, UNSPLIT, assign_unsplit, split_of


@dataclass(frozen=True)
class Sample:
    id: str
    image: Path
    mask: Path | None  # None: no mask on disk, trained as all background (missing_masks=background)
    split: str


@dataclass(frozen=True)
class SegmentationExport:
    root: Path
    layout: str
    labels: tuple[SegClass, ...]  # as the labelmap lists them: mask values refer to these
    classes: tuple[SegClass, ...]  # what the model predicts, in class-index order
    ignored: tuple[str, ...]  # labels whose pixels become ignore_index
    samples: tuple[Sample, ...]
    notes: tuple[str, ...] = field(default=())
    # Labels from a labelmap (colours): masks are expected in colour, and a grayscale mask is
    # more likely a mistake than label positions. False for data.classes / classes.txt.
    colour_labels: bool = True

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def splits(self) -> list[str]:
        return [s for s in SPLITS if self.split(s)]

    @property
    def background_index(self) -> int | None:
        """The class named `background` (CVAT's name for unlabeled pixels), if any."""
        names = self.class_names
        return names.index(BACKGROUND) if BACKGROUND in names else None

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]


def read_export(
    path: str | Path,
    images_dir: str | Path | None = None,
    labelmap: str | Path | None = None,
    classes: Sequence[str] | None = None,
    class_order: Sequence[str] | None = None,
    ignore_classes: Sequence[str] = (),
    subset_map: Mapping[str, str] | None = None,
    missing_masks: str = "error",
    val_fraction: float = 0.2,
    split_seed: int = 0,
    require_images: bool = True,
) -> SegmentationExport:
    """Detect the layout under `path` and pair every image with its mask and split.

    `require_images=False` (seglab inspect) accepts a CVAT export made without images: each
    sample's mask then stands in for its image, so the masks can still be counted."""
    if missing_masks not in ("error", "background", "skip"):
        raise DatasetError(f"data.missing_masks={missing_masks!r}: use error, background or skip")
    notes: list[str] = []
    root = find_dataset_root(Path(path).expanduser().resolve(), notes)
    labels, label_source = read_labels(root, labelmap, classes)
    colour_labels = bool(labelmap) or (root / "labelmap.txt").is_file()
    if len(labels) > CVAT_COLOR_LIMIT:
        notes.append(
            f"{label_source}: {len(labels)} labels; CVAT's own exports reuse mask colours past "
            f"{CVAT_COLOR_LIMIT} labels, so check that every label's colour is unique in the masks"
        )
    train_classes = training_classes(labels, class_order, ignore_classes, label_source)

    subset_map = dict(subset_map or {})
    if _is_cvat(root):
        layout = "cvat"
        items = _cvat_items(
            root, Path(images_dir) if images_dir else None, subset_map, notes, require_images
        )
    else:
        layout = "split" if colour_labels else "index"
        items = _folder_items(root, subset_map, notes)

    samples = _attach_splits(items, val_fraction, split_seed, notes)
    samples = _apply_missing_masks(samples, missing_masks, train_classes, ignore_classes, notes)
    return SegmentationExport(
        root=root,
        layout=layout,
        labels=labels,
        classes=train_classes,
        ignored=tuple(ignore_classes),
        samples=tuple(samples),
        notes=tuple(notes),
        colour_labels=colour_labels,
    )


# ---------------------------------------------------------------- items


@dataclass(frozen=True)
class _Item:
    id: str
    image: Path
    mask: Path | None
    subset: str  # split name, or UNSPLIT


def _is_cvat(root: Path) -> bool:
    return (root / "ImageSets" / "Segmentation").is_dir() or (root / "SegmentationClass").is_dir()


def _cvat_items(
    root: Path,
    images_dir: Path | None,
    subset_map: Mapping[str, str],
    notes: list[str],
    require_images: bool = True,
) -> list[_Item]:
    sets_dir = root / "ImageSets" / "Segmentation"
    subset_files = sorted(sets_dir.glob("*.txt")) if sets_dir.is_dir() else []
    if not subset_files:
        raise DatasetError(
            f"{sets_dir}: no subset lists (<subset>.txt) found; is {root} a complete CVAT "
            "'Segmentation Mask 1.1' export?"
        )
    image_root = images_dir or root / "JPEGImages"
    mask_root = root / "SegmentationClass"
    masks = _index_files(mask_root, (".png",)) if mask_root.is_dir() else {}
    fix = "re-export with 'Save images', or set data.images_dir to the folder of original images"
    without_images = (
        f"{image_root}: image folder not found. The export was probably made without images: "
    )
    if image_root.is_dir():
        images = _index_files(image_root, IMAGE_EXTENSIONS)
    elif require_images:
        raise DatasetError(without_images + fix)
    else:  # annotations only: the masks stand in for the images, to be counted
        notes.append(
            f"{image_root}: no images (an export made without images); the statistics come from "
            f"the masks alone. Training needs the images: {fix}"
        )
        images, image_root = masks, mask_root

    items: list[_Item] = []
    subset_of: dict[str, str] = {}
    for subset_file in subset_files:
        split = split_of(subset_file.stem, subset_map, str(subset_file))
        lines = read_text(subset_file, "the subset list").splitlines()
        if not any(line.strip() for line in lines):
            notes.append(f"{subset_file}: empty, lists no image")
        for lineno, raw in enumerate(lines, 1):
            item = raw.strip()
            if not item:
                continue
            where = f"{subset_file}:{lineno}"
            _check_item_id(item, where)
            if item in subset_of:
                raise DatasetError(
                    f"{where}: item {item!r} is already in subset {subset_of[item]!r}; "
                    "an image must belong to exactly one subset"
                )
            subset_of[item] = subset_file.stem
            if item not in images:
                raise DatasetError(
                    f"{where}: no image for item {item!r} in {image_root} "
                    f"(looked for {item}{{{','.join(IMAGE_EXTENSIONS)}}}, any case)"
                )
            items.append(_Item(item, images[item], masks.get(item), split))
    _note_unlisted(notes, "images", image_root, set(images) - set(subset_of))
    _note_unlisted(notes, "masks", mask_root, set(masks) - set(subset_of))
    return items


def _folder_items(root: Path, subset_map: Mapping[str, str], notes: list[str]) -> list[_Item]:
    image_root, mask_root = root / "images", root / "masks"
    if not image_root.is_dir() or not mask_root.is_dir():
        raise DatasetError(
            f"{root}: not a dataset seglab knows. Expected a CVAT 'Segmentation Mask 1.1' export "
            "(labelmap.txt, ImageSets/, SegmentationClass/, JPEGImages/) or images/ and masks/ "
            "folders (optionally split into train/ val/ test/) with labelmap.txt or classes.txt"
        )
    hidden: list[Path] = []
    images = _index_files(image_root, IMAGE_EXTENSIONS, hidden)
    masks = _index_files(mask_root, (".png",), hidden)
    if hidden:
        shown = ", ".join(str(p.relative_to(root)) for p in hidden[:3])
        notes.append(
            f"{root}: {len(hidden)} hidden files (names starting with '.', e.g. macOS '._' "
            f"copies) are not samples, not used: {shown}{', ...' if len(hidden) > 3 else ''}"
        )
    top = {item.split("/", 1)[0] for item in images}
    split_folders = all("/" in item for item in images) and all(
        name in subset_map or name.lower() in _FOLDER_SPLITS for name in top
    )
    items = []
    for item, image in sorted(images.items()):
        subset = (
            split_of(item.split("/", 1)[0], subset_map, str(image_root))
            if split_folders
            else UNSPLIT
        )
        items.append(_Item(item, image, masks.get(item), subset))
    _note_unlisted(notes, "masks", mask_root, set(masks) - set(images))
    return items


_FOLDER_SPLITS = {"train", "training", "val", "valid", "validation", "test", "testing"}


def _index_files(
    folder: Path, extensions: tuple[str, ...], hidden: list[Path] | None = None
) -> dict[str, Path]:
    """Item id (relative path without extension) -> file; extensions compared in any case.

    Files under a name starting with "." (macOS `._x.jpg` resource forks, `.DS_Store`, hidden
    folders) or in `__MACOSX/` are no samples: they are left out and appended to `hidden`."""
    index: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in extensions or not path.is_file():
            continue
        parts = path.relative_to(folder).parts
        if any(part.startswith(".") or part == "__MACOSX" for part in parts):
            if hidden is not None:
                hidden.append(path)
            continue
        item = path.relative_to(folder).with_suffix("").as_posix()
        if item in index:
            raise DatasetError(
                f"{folder}: two files for item {item!r}: {index[item].name} and {path.name}; "
                "keep one"
            )
        index[item] = path
    return index


def _check_item_id(item: str, where: str) -> None:
    parts = PurePosixPath(item).parts
    if item.startswith(("/", "\\")) or ".." in parts or (parts and parts[0].endswith(":")):
        raise DatasetError(f"{where}: item id {item!r} points outside the export; fix the list")


def _note_unlisted(notes: list[str], what: str, folder: Path, unlisted: set[str]) -> None:
    if unlisted:
        shown = ", ".join(sorted(unlisted)[:5]) + (", ..." if len(unlisted) > 5 else "")
        notes.append(f"{folder}: {len(unlisted)} {what} listed in no subset, not used: {shown}")


# ---------------------------------------------------------------- splits and missing masks


def _attach_splits(
    items: list[_Item], val_fraction: float, seed: int, notes: list[str]
) -> list[Sample]:
    unsplit = [it.id for it in items if it.subset == UNSPLIT]
    has_val = any(it.subset == "val" for it in items)
    assigned = assign_unsplit(unsplit, has_val, val_fraction, seed)
    if unsplit and not has_val:
        n_val = sum(1 for s in assigned.values() if s == "val")
        notes.append(
            f"no validation subset: held out {n_val} of {len(unsplit)} unsplit images for val "
            f"(data.val_fraction={val_fraction}, data.split_seed={seed})"
        )
    return [Sample(it.id, it.image, it.mask, assigned.get(it.id, it.subset)) for it in items]


def _apply_missing_masks(
    samples: list[Sample],
    policy: str,
    classes: tuple[SegClass, ...],
    ignored: Sequence[str],
    notes: list[str],
) -> list[Sample]:
    missing = [s for s in samples if s.mask is None]
    if not missing:
        return samples
    shown = ", ".join(s.id for s in missing[:10]) + (", ..." if len(missing) > 10 else "")
    if policy == "error":
        raise DatasetError(
            f"{len(missing)} listed image(s) have no mask: {shown}. CVAT writes no mask for frames "
            "without annotations. Choose: data.missing_masks=background (train them as all "
            "background) or data.missing_masks=skip (leave them out), or annotate them"
        )
    if policy == "skip":
        notes.append(
            f"skipped {len(missing)} image(s) without a mask (data.missing_masks=skip): {shown}"
        )
        return [s for s in samples if s.mask is not None]
    if BACKGROUND not in [c.name for c in classes]:
        raise DatasetError(
            f"data.missing_masks=background, but no class is named {BACKGROUND!r} "
            f"(classes: {[c.name for c in classes]}, ignored: {list(ignored)})"
        )
    notes.append(f"{len(missing)} image(s) without a mask trained as all background: {shown}")
    return samples
