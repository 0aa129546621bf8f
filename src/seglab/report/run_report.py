"""`<run_dir>/report.html`: one run explained in a browser, offline.

Built from the run directory's files only (`run.json`, `metrics.json`, `history.json`,
`confusion_*.png`, `gallery/`), so `seglab report RUN_DIR` rebuilds it anywhere. Sections:
the run's essentials, the data (pixel share per class and split), training curves, per-class
IoU / Dice / accuracy of the evaluated checkpoint on val and test, the confusion matrices, the
worst and best validation images, and the resolved config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from seglab.atomic import atomic_write_text
from seglab.errors import MissingFileError
from seglab.report.charts import Series, bar_chart, line_chart
from seglab.report.facts import read_run_facts
from seglab.report.gallery import GALLERY_DIR, read_gallery
from seglab.report.history import read_history
from seglab.report.html import Raw, escape, image_tag, number, page, swatch, table

REPORT_FILE = "report.html"
STAGES = ("val", "test")


def write_run_report(run_dir: str | Path) -> Path:
    """Render the run directory's report.html (replacing an older one only when complete)."""
    run_dir = Path(run_dir)
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        raise MissingFileError(
            f"{run_dir}: no metrics.json, so not a finished seglab run directory (train.py "
            "writes it when a run ends); give the folder train.py printed as 'Run directory'"
        )
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    facts = read_run_facts(run_dir)
    classes = facts.get("classes") or _classes_from_metrics(metrics)
    sections = [
        _header(run_dir, facts, metrics),
        _essentials(facts, metrics),
        _data(facts, classes),
        _curves(read_history(run_dir)),
        *(_per_class(stage, metrics, classes, facts) for stage in STAGES),
        _confusion(run_dir),
        _gallery(run_dir),
        _config(facts),
    ]
    title = f"seglab run {run_dir.name}"
    return atomic_write_text(
        run_dir / REPORT_FILE, page(title, "\n".join(s for s in sections if s))
    )


def _header(run_dir: Path, facts: dict[str, Any], metrics: dict[str, Any]) -> str:
    results = " · ".join(
        f"{stage} mIoU <b>{number(metrics.get(f'{stage}/mIoU'))}</b>"
        for stage in STAGES
        if f"{stage}/mIoU" in metrics
    )
    finished = f" · finished {escape(facts['finished'])}" if facts.get("finished") else ""
    return (
        f"<h1>seglab run <code>{escape(run_dir.name)}</code></h1>"
        f'<p class="muted">{escape(run_dir.resolve())}{finished}</p><p>{results}</p>'
    )


def _essentials(facts: dict[str, Any], metrics: dict[str, Any]) -> str:
    data, model = facts.get("data", {}), facts.get("model", {})
    schedule, train = facts.get("schedule", {}), facts.get("train", {})
    loss, optimizer = facts.get("loss", {}), facts.get("optimizer", {})
    scheduler = facts.get("scheduler") or {}
    encoder = f"{model.get('encoder_name', '')} ({model.get('encoder_weights') or 'from scratch'})"
    rows = [
        ("command", f"python train.py {facts['command']}" if facts.get("command") else None),
        ("data", data.get("path")),
        ("classes", len(facts.get("classes", [])) or None),
        ("model", f"{model.get('arch', '?')}, encoder {encoder}" if model else None),
        ("loss", _terms(loss)),
        ("optimizer", _named(optimizer, "name", ("lr", "weight_decay"))),
        ("schedule", _named(scheduler, "name", ("warmup_steps", "min_lr_ratio")) or "constant"),
        ("image size / crop", _size(data)),
        ("batch size", data.get("batch_size")),
        ("budget", schedule.get("budget") or schedule.get("max_time")),
        ("max epochs", schedule.get("max_epochs")),
        ("epochs trained", None if train.get("epochs") is None else int(train["epochs"])),
        ("training images/s", train.get("images_per_s")),
        ("seed", facts.get("seed")),
        ("precision", schedule.get("precision")),
        ("best checkpoint", metrics.get("best_ckpt")),
        ("wall time", _duration(facts.get("wall_seconds"))),
    ]
    kept = [(k, v) for k, v in rows if v not in (None, "", [])]
    return "<h2>Run</h2>" + table(["", ""], kept, css_id="facts", css_class="facts")


def _data(facts: dict[str, Any], classes: list[dict[str, Any]]) -> str:
    data = facts.get("data", {})
    pixels, images = data.get("pixels", {}), data.get("images", {})
    if not pixels:
        return ""
    splits = [s for s in ("train", "val", "test", "unsplit") if s in pixels]
    shares = {s: _shares(pixels[s]) for s in splits}
    rows = [
        [Raw(swatch(c["color"]) + escape(c["name"])), *(_percent(shares[s][i]) for s in splits)]
        for i, c in enumerate(classes)
    ]
    counts = ", ".join(f"{s} {images.get(s, 0)}" for s in splits)
    ignored = data.get("ignored") or []
    note = f" Ignored labels: {escape(', '.join(ignored))}." if ignored else ""
    return (
        f"<h2>Data</h2><p>Images per split: {escape(counts)}.{note} Share of each split's "
        "labelled pixels per class (ignored pixels not counted):</p>"
        + table(
            ["class", *(f"{s} %" for s in splits)],
            rows,
            [False, *[True] * len(splits)],
            css_id="data-classes",
        )
    )


def _curves(history: dict[str, list[Any]]) -> str:
    steps, epochs = history["steps"], history["epochs"]
    if not steps and not epochs:
        return '<h2>Training curves</h2><p class="muted">No curves: nothing was trained.</p>'
    epoch_steps = [e["step"] for e in epochs]
    losses = line_chart(
        [
            Series("train (batch)", [s[0] for s in steps], [s[2] for s in steps]),
            Series("train (epoch)", epoch_steps, [e["train_loss"] for e in epochs]),
            Series("val", epoch_steps, [e["val_loss"] for e in epochs]),
        ],
        "optimizer step", "loss", title="loss",
    )  # fmt: skip
    miou = line_chart(
        [Series("val mIoU", epoch_steps, [e["val_mIoU"] for e in epochs])],
        "optimizer step", "val mIoU", title="val mIoU",
    )  # fmt: skip
    lr = line_chart(
        [Series("learning rate", [s[0] for s in steps], [s[3] for s in steps])],
        "optimizer step", "learning rate", log_y=True, title="learning rate",
    )  # fmt: skip
    return f'<h2>Training curves</h2><div class="row" id="curves">{losses}{miou}{lr}</div>'


def _per_class(
    stage: str, metrics: dict[str, Any], classes: list[dict[str, Any]], facts: dict[str, Any]
) -> str:
    if f"{stage}/mIoU" not in metrics:
        return ""
    names = [c["name"] for c in classes]
    train_share = _shares(facts.get("data", {}).get("pixels", {}).get("train", []))
    rows, bars = [], []
    for i, c in enumerate(classes):
        iou = metrics.get(f"{stage}/iou/{c['name']}")
        rgb = ",".join(str(int(v)) for v in c["color"][:3])
        bars.append((c["name"], iou, f"rgb({rgb})"))
        share = _percent(train_share[i]) if i < len(train_share) else ""
        rows.append(
            [Raw(swatch(c["color"]) + escape(c["name"])), number(iou),
             number(metrics.get(f"{stage}/dice/{c['name']}")),
             number(metrics.get(f"{stage}/acc/{c['name']}")), share]
        )  # fmt: skip
    bars.sort(key=lambda b: -1.0 if b[1] is None else -b[1])
    summary = " · ".join(
        f"{label} {number(metrics.get(f'{stage}/{key}'))}"
        for label, key in (("mIoU", "mIoU"), ("mDice", "mDice"), ("mAcc", "mAcc"),
                           ("pixel accuracy", "pixel_acc"), ("fwIoU", "fwIoU"))
    )  # fmt: skip
    headers = ["class", "IoU", "Dice", "Acc", "train px %"]
    classes_table = table(headers, rows, [False, True, True, True, True], f"classes-{stage}")
    chart = bar_chart(bars, f"{stage} IoU per class", title=f"{stage} IoU, best first")
    return (
        f"<h2>Per class: {stage}</h2><p>{summary} ({len(names)} classes; n/a: absent from "
        f'both truth and prediction, left out of the means)</p><div class="row">{chart}'
        f"{classes_table}</div>"
    )


def _confusion(run_dir: Path) -> str:
    figures = [
        f"<figure>{image_tag(run_dir / f'confusion_{s}.png', f'{s} confusion matrix')}"
        f"<figcaption>{s}: each true class's row shares (recall on the diagonal)</figcaption>"
        "</figure>"
        for s in STAGES
        if (run_dir / f"confusion_{s}.png").is_file()
    ]
    if not figures:
        return ""
    return f'<h2>Confusion matrices</h2><div class="row">{"".join(figures)}</div>'


def _gallery(run_dir: Path) -> str:
    entries = read_gallery(run_dir)
    if not entries:
        return ""
    parts = [
        "<h2>Validation images</h2><p>image | truth | prediction | errors (wrong pixels red, "
        "ignored grey); mIoU over the classes in the image's truth or prediction. Every image's "
        "score is in <code>val_images.csv</code>.</p>"
    ]
    for kind in ("worst", "best"):
        chosen = [e for e in entries if e["kind"] == kind]
        if chosen:
            parts.append(
                f'<h3>{kind.capitalize()}</h3><div class="row gallery" id="gallery-{kind}">'
            )
            for e in chosen:
                tag = image_tag(run_dir / GALLERY_DIR / e["file"], e["image"])
                caption = f"{escape(e['image'])}: mIoU {number(e['mIoU'], 3)}"
                parts.append(f"<figure>{tag}<figcaption>{caption}</figcaption></figure>")
            parts.append("</div>")
    return "".join(parts)


def _config(facts: dict[str, Any]) -> str:
    config = facts.get("config")
    if not config:
        return ""
    text = yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=100)
    return (
        "<h2>Config</h2><details><summary>the resolved config</summary>"
        f"<pre>{escape(text)}</pre></details>"
    )


def _classes_from_metrics(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    names = [k.split("/", 2)[2] for k in metrics if k.startswith("val/iou/")]
    return [{"name": n, "color": [128, 128, 128]} for n in names]


def _shares(counts: list[int]) -> list[float]:
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


def _percent(share: float) -> str:
    if share == 0:
        return "0"
    return f"{100 * share:.3f}" if share < 0.001 else f"{100 * share:.2f}"


def _terms(loss: dict[str, Any]) -> str | None:
    """`weighted_sum` as its terms (1×ce + 1×dice), each marked when it weighs classes."""
    if not loss:
        return None
    terms = loss.get("losses") or {loss.get("name", "?"): loss}
    weights = loss.get("weights") or {}
    return " + ".join(
        f"{weights.get(key, 1):g}×{term.get('name', key)}"
        + (" (class-weighted)" if term.get("class_weights") else "")
        for key, term in terms.items()
    )


def _named(options: dict[str, Any], key: str, details: tuple[str, ...]) -> str | None:
    if not options:
        return None
    extra = ", ".join(f"{d} {options[d]}" for d in details if options.get(d) is not None)
    return f"{options.get(key, '?')}" + (f" ({extra})" if extra else "")


def _size(data: dict[str, Any]) -> str | None:
    size, crop = data.get("image_size"), data.get("crop_size")
    if not size:
        return None
    text = f"{size[0]}×{size[1]}"
    if data.get("sampling") == "tile":  # facts written before it was recorded: resize
        return text + " windows at native resolution, evaluated by sliding windows"
    return text + (f", crops {crop[0]}×{crop[1]}" if crop and crop != size else "")


def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
