"""Does `seglab rank` put the frames the model gets wrong first?

    python benchmarks/ranking.py --ckpt RUN/checkpoints/best.ckpt --data ../shared/data/ccp

Ranks one labelled subset of an export (default: its validation subset) with `seglab rank`'s
own code, labels given, and reports for each score (margin, entropy, flip disagreement) the
Spearman correlation with the frames' mIoU. A useful score ranks badly predicted frames first:
the correlation is negative, the more so the better. Also: the mean mIoU of the top quarter of
the ranking against the bottom quarter. Writes results/ranking_<dataset>.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

from seglab.prediction.ranking import SCORES, correlations, run_rank

from harness import RESULTS, machine_info

ROOT = Path(__file__).resolve().parents[1]


def subset_images(export: Path, subset: str) -> list[Path]:
    ids = (export / "ImageSets" / "Segmentation" / f"{subset}.txt").read_text().split()
    images = {p.stem: p for p in (export / "JPEGImages").iterdir()}
    return [images[i] for i in ids]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, required=True, help="a seglab checkpoint")
    parser.add_argument("--data", type=Path, required=True, help="a CVAT export with masks")
    parser.add_argument("--subset", default="Validation", help="the labelled subset to rank")
    parser.add_argument("--output", type=Path, default=None, help="the JSON to write")
    args = parser.parse_args()
    export = args.data.resolve()

    with tempfile.TemporaryDirectory() as tmp:
        frames = Path(tmp) / "frames.txt"
        frames.write_text("".join(f"{p}\n" for p in subset_images(export, args.subset)))
        with initialize_config_dir(config_dir=str(ROOT / "conf" / "predict"), version_base="1.3"):
            cfg = compose(
                "rank",
                overrides=[f"ckpt={args.ckpt.resolve()}", f"input={frames}", f"labels={export}",
                           f"output={Path(tmp) / 'ranking.csv'}", "progress=false", "show=0"],
            )  # fmt: skip
        rows = run_rank(cfg)

    rho = correlations(rows)
    quarter = max(1, len(rows) // 4)
    result = {
        "benchmark": "ranking",
        "dataset": export.name,
        "subset": args.subset,
        "frames": len(rows),
        "machine": machine_info(),
        "spearman": rho,
        "top_quarter_miou": {},
        "bottom_quarter_miou": {},
    }
    print(f"\n{export.name} {args.subset}: {len(rows)} frames\n")
    print("| score | Spearman vs mIoU | mean mIoU, first quarter | mean mIoU, last quarter |")
    print("|---|---|---|---|")
    for score in SCORES:
        if score not in rho:
            continue
        ordered = sorted(rows, key=lambda r: -getattr(r, score))
        first = float(np.mean([r.miou for r in ordered[:quarter]]))
        last = float(np.mean([r.miou for r in ordered[-quarter:]]))
        result["top_quarter_miou"][score], result["bottom_quarter_miou"][score] = first, last
        print(f"| {score} | {rho[score]:+.3f} | {first:.3f} | {last:.3f} |")
    out = args.output or RESULTS / f"ranking_{export.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
