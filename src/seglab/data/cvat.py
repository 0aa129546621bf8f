"""Read a segmentation dataset, as CVAT users have it, into classes and samples.

Three layouts are detected from `data.path` (a folder, or a `.zip` of one):
- `cvat`: a "Segmentation Mask 1.1" export (labelmap.txt, ImageSets/Segmentation/<subset>.txt,
  SegmentationClass/, JPEGImages/ unless exported without images);
- `split`: images/<split>/ + masks/<split>/ colour masks + labelmap.txt (what platforms ask for);
- `index`: images/ + masks/ whose pixel values are class ids, named by data.classes or classes.txt.

Parsing is strict on purpose: a silently mislabelled pixel or a dropped sample ruins a model
without anyone noticing, so every inconsistency raises a `DatasetError` that names the file and
says how to fix it; what is deliberately left out is reported in `notes`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from seglab.data.archive import find_dataset_root
from seglab.data.errors import DatasetError
from seglab.data.splits import SPLITS, UNSPLIT, assign_unsplit, split_of

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
LABELMAP_HEADER = "# label:color_rgb:parts:actions"
BACKGROUND = "background"
CVAT_COLOR_LIMIT = 256  # CVAT paints masks through uint8 label ids: colours collide past this


@dataclass(frozen=True)
class SegClass:
    name: str
    color: tuple[int, int, int]


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
) -> SegmentationExport:
    """Detect the layout under `path` and pair every image with its mask and split."""
    if missing_masks not in ("error", "background", "skip"):
        raise DatasetError(f"data.missing_masks={missing_masks!r}: use error, background or skip")
    root = find_dataset_root(Path(path).expanduser().resolve())
    labels, label_source = _read_labels(root, labelmap, classes)
    notes: list[str] = []
    if len(labels) > CVAT_COLOR_LIMIT:
        notes.append(
            f"{label_source}: {len(labels)} labels; CVAT's own exports reuse mask colours past "
            f"{CVAT_COLOR_LIMIT} labels, so check that every label's colour is unique in the masks"
        )
    train_classes = _training_classes(labels, class_order, ignore_classes, label_source)

    subset_map = dict(subset_map or {})
    if _is_cvat(root):
        layout = "cvat"
        items = _cvat_items(root, Path(images_dir) if images_dir else None, subset_map, notes)
    else:
        layout = "split" if label_source.name == "labelmap.txt" else "index"
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
    )


# ---------------------------------------------------------------- labels


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
                f"'name:r,g,b:parts:actions', found {len(fields)} in {raw!r} "
                "(a label name may not contain ':')"
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


def labelmap_text(classes: Iterable[SegClass]) -> str:
    """A labelmap in the syntax CVAT's exporter uses."""
    lines = [LABELMAP_HEADER] + [f"{c.name}:{','.join(map(str, c.color))}::" for c in classes]
    return "\n".join(lines) + "\n"


def write_labelmap(path: Path, classes: Iterable[SegClass]) -> None:
    Path(path).write_text(labelmap_text(classes), encoding="utf-8")


def index_colors(n: int) -> list[tuple[int, int, int]]:
    """The Pascal VOC colour map (0 black, 1 (128,0,0), ...): CVAT's instance colours, and display
    colours for classes that have none (index masks)."""
    colors = []
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        colors.append((r, g, b))
    return colors


def _read_labels(
    root: Path, labelmap: str | Path | None, classes: Sequence[str] | None
) -> tuple[tuple[SegClass, ...], Path]:
    """The labels and the file (or config key) they came from."""
    labelmap_path = Path(labelmap) if labelmap else root / "labelmap.txt"
    if classes and labelmap_path.is_file():
        raise DatasetError(
            f"both data.classes and {labelmap_path} name the classes; keep one "
            "(data.classes is for index masks without a labelmap)"
        )
    if labelmap_path.is_file():
        return parse_labelmap(labelmap_path), labelmap_path
    if labelmap:
        raise DatasetError(f"data.labelmap={labelmap}: file not found")
    names, source = (list(classes), Path("data.classes")) if classes else _read_classes_txt(root)
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise DatasetError(f"{source}: duplicate class names {duplicates}")
    colors = index_colors(len(names))
    return tuple(SegClass(n, c) for n, c in zip(names, colors, strict=True)), source


def _read_classes_txt(root: Path) -> tuple[list[str], Path]:
    path = root / "classes.txt"
    if not path.is_file():
        raise DatasetError(
            f"{root}: no labelmap.txt and no classes.txt. Export from CVAT as 'Segmentation Mask "
            "1.1' (it writes labelmap.txt), point data.labelmap at the file, or, for masks of "
            "class ids, name the classes with data.classes=[background,...] or a classes.txt"
        )
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    names = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if not names:
        raise DatasetError(f"{path}: no class names (one per line, in class-id order)")
    return names, path


def _training_classes(
    labels: tuple[SegClass, ...],
    class_order: Sequence[str] | None,
    ignore_classes: Sequence[str],
    source: Path,
) -> tuple[SegClass, ...]:
    by_name = {c.name: c for c in labels}
    unknown = [n for n in ignore_classes if n not in by_name]
    if unknown:
        raise DatasetError(
            f"data.ignore_classes names {unknown}, not in {source} ({list(by_name)})"
        )
    kept = [c.name for c in labels if c.name not in ignore_classes]
    if class_order:
        missing = [n for n in kept if n not in class_order]
        extra = [n for n in class_order if n not in kept]
        if missing or extra or len(set(class_order)) != len(class_order):
            raise DatasetError(
                f"data.class_order must list each class of {source} once (ignored ones left out): "
                f"missing {missing}, not in the labelmap or ignored {extra}"
            )
        kept = list(class_order)
    if not kept:
        raise DatasetError(f"{source}: every class is in data.ignore_classes; nothing to learn")
    return tuple(by_name[n] for n in kept)


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
    root: Path, images_dir: Path | None, subset_map: Mapping[str, str], notes: list[str]
) -> list[_Item]:
    sets_dir = root / "ImageSets" / "Segmentation"
    subset_files = sorted(sets_dir.glob("*.txt")) if sets_dir.is_dir() else []
    if not subset_files:
        raise DatasetError(
            f"{sets_dir}: no subset lists (<subset>.txt) found; is {root} a complete CVAT "
            "'Segmentation Mask 1.1' export?"
        )
    image_root = images_dir or root / "JPEGImages"
    if not image_root.is_dir():
        raise DatasetError(
            f"{image_root}: image folder not found. The export was probably made without images: "
            "re-export with 'Save images', or set data.images_dir to the folder of original images"
        )
    images = _index_files(image_root, IMAGE_EXTENSIONS)
    mask_root = root / "SegmentationClass"
    masks = _index_files(mask_root, (".png",)) if mask_root.is_dir() else {}

    items: list[_Item] = []
    subset_of: dict[str, str] = {}
    for subset_file in subset_files:
        split = split_of(subset_file.stem, subset_map, str(subset_file))
        lines = subset_file.read_text(encoding="utf-8-sig").splitlines()
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
    images = _index_files(image_root, IMAGE_EXTENSIONS)
    masks = _index_files(mask_root, (".png",))
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


def _index_files(folder: Path, extensions: tuple[str, ...]) -> dict[str, Path]:
    """Item id (relative path without extension) -> file; extensions compared in any case."""
    index: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in extensions or not path.is_file():
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
