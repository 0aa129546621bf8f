"""`seglab inspect`: what training would make of a dataset, before anything is trained."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from seglab.data.class_weights import weights_from_counts
from seglab.data.dataset import build_decoder
from seglab.data.layouts import SegmentationExport, read_export
from seglab.data.scan import ScanReport, scan_export

READ_KEYS = (
    "images_dir", "labelmap", "classes", "class_order", "ignore_classes", "subset_map",
    "missing_masks", "val_fraction", "split_seed",
)  # fmt: skip
DECODE_KEYS = ("ignore_index", "unknown_colors")


def inspect_dataset(path: str | Path, options: dict[str, Any]) -> dict[str, Any]:
    """Read and scan exactly as training does; `options` are data.* config keys."""
    unknown = set(options) - set(READ_KEYS) - set(DECODE_KEYS)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; use {[*READ_KEYS, *DECODE_KEYS]}")
    read_options = {k: v for k, v in options.items() if k in READ_KEYS}
    export = read_export(path, **read_options, require_images=False)
    decoder = build_decoder(export, **{k: v for k, v in options.items() if k in DECODE_KEYS})
    return summarize(export, scan_export(export, decoder))


def summarize(export: SegmentationExport, report: ScanReport) -> dict[str, Any]:
    """The JSON-ready summary: layout, classes, per-split images and pixels, problems."""
    names = export.class_names
    splits = {}
    for split in export.splits:  # every sample of a split was scanned
        channels = Counter(c for _, c in report.channels.get(split, []))
        splits[split] = {
            "images": report.images[split],
            "pixels": dict(zip(names, map(int, report.pixels[split]), strict=True)),
            "missing_classes": report.missing_classes(split),
            # channel count -> images (`model.in_channels=auto` reads the train split's)
            "channels": {str(c): n for c, n in sorted(channels.items())},
            # labelled pixels within 2 px of another class (`model.decoder_output_stride=auto`)
            "outline_share": report.outline_share(split),
        }
    train = report.pixels.get("train")
    weights = weights_from_counts(train) if train is not None and train.any() else []
    return {
        "root": str(export.root),
        "layout": export.layout,
        "classes": [
            {"index": i, "name": c.name, "color": list(c.color)}
            for i, c in enumerate(export.classes)
        ],
        "ignored_classes": list(export.ignored),
        "has_images": all(s.image != s.mask for s in export.samples),
        "splits": splits,
        "suggested_class_weights": dict(zip(names, weights, strict=True)) if weights else {},
        "notes": list(export.notes),
        "unknown_values": [
            {"value": list(value), "pixels": px, "files": files}
            for value, (px, files) in sorted(report.unknown.items())
        ],
        "problems": list(report.problems),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable form of `summarize`'s output."""
    lines = [f"Dataset: {summary['root']}", f"Layout:  {summary['layout']}", "", "Classes:"]
    names = [c["name"] for c in summary["classes"]]
    width = max(map(len, [*names, "class"]))
    for c in summary["classes"]:
        lines.append(f"  {c['index']:>3}  {c['name']:<{width}}  {tuple(c['color'])}")
    if summary["ignored_classes"]:
        lines.append(f"  ignored (-> ignore_index): {', '.join(summary['ignored_classes'])}")
    splits = summary["splits"]
    lines += ["", "Pixel share per class (%):"]
    lines.append("  " + f"{'class':<{width}}" + "".join(f"{s:>10}" for s in splits) + "  weight")
    weights = summary["suggested_class_weights"]
    for name in names:
        shares = []
        for info in splits.values():
            total = sum(info["pixels"].values())
            shares.append(f"{100 * info['pixels'][name] / total:>10.2f}" if total else f"{'-':>10}")
        weight = f"{weights[name]:>8.3f}" if name in weights else ""
        lines.append(f"  {name:<{width}}" + "".join(shares) + weight)
    lines.append(
        "  " + f"{'images':<{width}}" + "".join(f"{i['images']:>10}" for i in splits.values())
    )
    channels = [",".join(i.get("channels", {})) or "-" for i in splits.values()]
    lines.append("  " + f"{'channels':<{width}}" + "".join(f"{c:>10}" for c in channels))
    outlines = [i.get("outline_share") for i in splits.values()]
    lines.append(
        "  " + f"{'outline %':<{width}}"
        + "".join(f"{100 * v:>10.2f}" if v is not None else f"{'-':>10}" for v in outlines)
    )  # fmt: skip
    for split, info in splits.items():
        if info["missing_classes"]:
            lines.append(f"  {split} has no pixels of: {', '.join(info['missing_classes'])}")
    lines.append("  (weight: median-frequency class weights from the train split; outline %:")
    lines.append("  labelled pixels within 2 px of another class, at the masks' own resolution)")
    for title, key in (("Notes", "notes"), ("Problems (training would stop)", "problems")):
        if summary[key]:
            lines += ["", f"{title}:", *(f"  - {item}" for item in summary[key])]
    if summary["unknown_values"] and not summary["problems"]:
        lines += ["", "Unknown mask values (ignored, data.unknown_colors=ignore):"]
        lines += [
            f"  - {u['value']}: {u['pixels']} px in {u['files']} mask(s)"
            for u in summary["unknown_values"]
        ]
    if summary["problems"]:
        verdict = "NOT OK."
    elif not summary["has_images"]:
        verdict = "Masks OK; training also needs the images (see the note above)."
    else:
        verdict = "OK: training can use this dataset."
    lines += ["", verdict]
    return "\n".join(lines)


def to_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, ensure_ascii=False)
