"""`seglab rank`: which unlabelled frames to annotate next, most useful first.

Every frame goes through the Predictor (the same preprocessing, modes and backends as
predict.py) and gets three scores, each in [0, 1], higher = the model is less sure:

- `margin`: the mean over pixels of `1 - (p1 - p2)`, with p1 and p2 the two
  highest class probabilities of the pixel. Low where the model is sure, high along confused
  boundaries and over classes it mixes up;
- `entropy`: the mean over pixels of the normalised entropy `H(p) / ln(C)`;
- `disagreement` (the default order): the share of pixels whose predicted class changes when the
  frame is mirrored left-right (a second forward pass; `flip_views=false` skips it). On two real
  exports it tracked the frames' IoU twice as well as margin and entropy (Spearman -0.25 and
  -0.48 against -0.10 to -0.28; benchmarks/README.md); ties, e.g. frames with no change at all,
  are broken by margin.

With `labels=` (masks of some of the frames), each labelled frame's mIoU is computed too and the
Spearman correlation between each score and the mIoU is printed: a useful score ranks badly
predicted frames first, i.e. correlates negatively with their IoU.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from seglab.atomic import atomic_write_text
from seglab.console import say
from seglab.errors import ConfigError
from seglab.metrics import image_miou
from seglab.prediction.predictor import Predictor, to_labels
from seglab.prediction.scoring import LabelFiles

SCORES = ("margin", "entropy", "disagreement")


@dataclass
class FrameScores:
    """One frame's row of the ranking."""

    image: str  # the path as found
    margin: float
    entropy: float
    disagreement: float | None  # None with flip_views=false
    miou: float | None = None  # with labels= and a mask for this frame


def uncertainty(logits: torch.Tensor) -> tuple[float, float]:
    """(margin, entropy) of one image's (C, H, W) logits, each the mean over its pixels."""
    probabilities = torch.softmax(logits.float(), dim=0)
    top = probabilities.topk(2, dim=0).values if len(probabilities) > 1 else None
    margin = 0.0 if top is None else float((1 - (top[0] - top[1])).mean())
    entropy = -(probabilities * torch.log(probabilities.clamp_min(1e-12))).sum(dim=0)
    normaliser = math.log(len(probabilities)) if len(probabilities) > 1 else 1.0
    return margin, float(entropy.mean()) / normaliser


def flip_disagreement(
    predictor: Predictor, images: Sequence[np.ndarray], labels: Sequence[np.ndarray]
) -> list[float]:
    """The share of pixels whose class changes when each image is mirrored left-right."""
    mirrored = [np.ascontiguousarray(image[:, ::-1]) for image in images]
    flipped = predictor.labels(mirrored)
    return [float((f[:, ::-1] != lb).mean()) for f, lb in zip(flipped, labels, strict=True)]


def score_frames(
    predictor: Predictor,
    frames: Iterator[tuple[Path, np.ndarray, torch.Tensor]],
    flip_views: bool = True,
    labels: LabelFiles | None = None,
    relative: Callable[[Path], Path] = lambda p: Path(p.name),
) -> list[FrameScores]:
    """Scores for each (path, image, logits) that `predict_images` yields."""
    rows: list[FrameScores] = []
    pending: list[tuple[FrameScores, np.ndarray, np.ndarray]] = []

    def flush() -> None:
        if flip_views and pending:
            shares = flip_disagreement(predictor, [p[1] for p in pending], [p[2] for p in pending])
            for (row, _, _), share in zip(pending, shares, strict=True):
                row.disagreement = share
        pending.clear()

    for path, image, logits in frames:
        predicted = to_labels(logits, predictor.num_classes)
        margin, entropy = uncertainty(logits)
        row = FrameScores(str(path), margin, entropy, None)
        if labels is not None and (mask_path := labels.mask_path(relative(path))) is not None:
            target = labels.read(mask_path, path, predicted.shape)
            row.miou = image_miou(
                target, predicted, predictor.num_classes, predictor.info.ignore_index
            )
        rows.append(row)
        pending.append((row, image, predicted))
        if len(pending) >= predictor.batch_size:
            flush()
    flush()
    return rows


def order(rows: list[FrameScores], score: str) -> list[FrameScores]:
    """Most uncertain first; ties broken by margin (a disagreement of 0 is common), then by the
    input order."""
    if score not in SCORES:
        raise ConfigError(f"score={score!r}: choose one of {list(SCORES)}")
    if score == "disagreement" and rows and rows[0].disagreement is None:
        raise ConfigError(
            "score=disagreement (the default) needs flip_views=true; "
            "with flip_views=false order by score=margin or score=entropy"
        )
    return sorted(rows, key=lambda row: (-getattr(row, score), -row.margin))


def correlations(rows: list[FrameScores]) -> dict[str, float]:
    """Spearman correlation of each score with the labelled frames' mIoU."""
    labelled = [r for r in rows if r.miou is not None and not math.isnan(r.miou)]
    result = {}
    for score in SCORES:
        values = [getattr(r, score) for r in labelled]
        if len(labelled) >= 3 and None not in values:
            rho = float(spearmanr(values, [r.miou for r in labelled]).statistic)
            if not math.isnan(rho):  # NaN when either side is constant
                result[score] = rho
    return result


def write_ranking(rows: list[FrameScores], path: Path) -> None:
    """The CSV, rank first, written atomically."""
    buffer = io.StringIO()
    columns = ["rank", *asdict(rows[0]).keys()] if rows else ["rank", "image"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for rank, row in enumerate(rows, start=1):
        values = {k: _cell(v) for k, v in asdict(row).items()}
        writer.writerow({"rank": rank, **values})
    atomic_write_text(path, buffer.getvalue())


def write_selection(rows: list[FrameScores], list_path: Path, copy_to: Path | None) -> None:
    """The chosen frames as a list file (one path a line, for a new CVAT task); optionally
    copied into `copy_to`, keeping their names (a clash is refused, never overwritten)."""
    atomic_write_text(list_path, "".join(f"{row.image}\n" for row in rows))
    if copy_to is None:
        return
    names = [Path(row.image).name for row in rows]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ConfigError(
            f"copy_to={copy_to}: several chosen frames are named {clashes[0]} (in different "
            "folders); copy them by hand or use the list file"
        )
    copy_to.mkdir(parents=True, exist_ok=True)
    for row, name in zip(rows, names, strict=True):
        shutil.copy2(row.image, copy_to / name)
    say(f"copied {len(rows)} frame(s) to {copy_to}")


def _cell(value: object) -> object:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6f}"
    return "" if value is None else value


def run_rank(cfg) -> list[FrameScores]:
    """`seglab rank`: predict every frame, score, order, write the CSV (and the top list)."""
    from hydra.utils import to_absolute_path

    from seglab.prediction.inputs import find_inputs
    from seglab.prediction.run import Report, build_predictor, predict_images

    if cfg.score not in SCORES:
        raise ConfigError(f"score={cfg.score!r}: choose one of {list(SCORES)}")
    if cfg.top is not None and (not isinstance(cfg.top, int) or cfg.top < 1):
        raise ConfigError(f"top={cfg.top!r}: give a positive whole number of frames")
    if cfg.copy_to and cfg.top is None:
        raise ConfigError("copy_to= copies the top=N frames: give top=N too")
    output = Path(to_absolute_path(str(cfg.output)))
    if output.is_dir():
        raise ConfigError(f"output={output} is a folder; give the CSV file to write")
    predictor = build_predictor(cfg)
    inputs = find_inputs(to_absolute_path(str(cfg.input)))
    labels = LabelFiles(to_absolute_path(str(cfg.labels)), predictor.info) if cfg.labels else None
    report = Report()
    frames = predict_images(predictor, inputs.images, cfg.num_workers, report, bool(cfg.progress))
    rows = order(
        score_frames(predictor, frames, bool(cfg.flip_views), labels, inputs.relative), cfg.score
    )
    if report.unreadable:
        say(f"left out {len(report.unreadable)} unreadable file(s): "
            + ", ".join(str(p) for p, _ in report.unreadable[:10]))  # fmt: skip
    output.parent.mkdir(parents=True, exist_ok=True)
    write_ranking(rows, output)
    print(f"Ranked {len(rows)} frame(s) by {cfg.score} (higher = less sure); wrote {output}")
    for rank, row in enumerate(rows[: int(cfg.show)], start=1):
        print(f"{rank:>5}  {cfg.score} {getattr(row, cfg.score):.4f}  {row.image}")
    if cfg.top is not None:
        chosen = rows[: int(cfg.top)]
        list_path = output.with_name(f"{output.stem}_top{cfg.top}.txt")
        copy_to = Path(to_absolute_path(str(cfg.copy_to))) if cfg.copy_to else None
        write_selection(chosen, list_path, copy_to)
        print(f"Top {len(chosen)}: {list_path}")
    for score, rho in correlations(rows).items():
        print(f"Spearman({score}, labelled frames' mIoU) = {rho:+.3f}")
    return rows
