"""Classes of a dataset: CVAT's labelmap.txt, classes.txt or `data.classes`, and what is trained.

Every layout names its labels here, and the writer and prediction share `SegClass`, so one
parser decides what a label name and a colour are. Mask values refer to the labels in the file's
order; `training_classes` then picks, orders and ignores labels for the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from seglab.data.errors import DatasetError

LABELMAP_HEADER = "# label:color_rgb:parts:actions"
BACKGROUND = "background"
CVAT_COLOR_LIMIT = 256  # CVAT paints masks through uint8 label ids: colours collide past this


@dataclass(frozen=True)
class SegClass:
    name: str
    color: tuple[int, int, int]


def read_text(path: Path, what: str) -> str:
    """A small text file of the dataset; a wrong encoding is a DatasetError naming the file
    (CVAT writes UTF-8; a file saved by hand in Latin-1 or UTF-16 would otherwise surface as a
    bare UnicodeDecodeError without the file's name)."""
    try:
        # utf-8-sig drops a BOM, which Windows editors add.
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        line = err.object[: err.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}: {what} is not UTF-8 text (byte {err.object[err.start]:#04x} on line "
            f"{line}); save it as UTF-8 (CVAT's exports are UTF-8)"
        ) from err


def parse_labelmap(path: Path) -> tuple[SegClass, ...]:
    """Parse CVAT's `name:r,g,b:parts:actions` lines; class order is the file's line order."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: labelmap.txt not found")
    classes: list[SegClass] = []
    seen_names: dict[str, int] = {}
    seen_colors: dict[tuple[int, int, int], int] = {}
    # splitlines() handles CRLF.
    for lineno, raw in enumerate(read_text(path, "the labelmap").splitlines(), start=1):
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


def read_labels(
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
    lines = read_text(path, "the class list").splitlines()
    names = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if not names:
        raise DatasetError(f"{path}: no class names (one per line, in class-id order)")
    return names, path


def training_classes(
    labels: tuple[SegClass, ...],
    class_order: Sequence[str] | None,
    ignore_classes: Sequence[str],
    source: Path,
) -> tuple[SegClass, ...]:
    """The labels the model predicts, in class-index order: `class_order` if given, else the
    labelmap's order, without `ignore_classes` (their pixels become ignore_index)."""
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
