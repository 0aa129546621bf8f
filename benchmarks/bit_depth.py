"""16-bit images read at full depth against their 8-bit conversion, trained alike.

    python benchmarks/bit_depth.py --data16 ../shared/data/bbbc039_16bit \\
        --data8 ../shared/data/bbbc039 --epochs 4
    python benchmarks/bit_depth.py ... --arm auto --arm 8bit --arm "{range:[0,4095]}"

Each arm is `python train.py data.path=... model.encoder_weights=null seed=<--seed>` with the same
training budget (`--epochs`, or `--minutes` as budget=<m>m; epochs by default, because on
shared cores a wall-clock budget gives each arm a different number of steps), scored by
train.py's own test split at each image's own resolution. Arms:

- `8bit`: the 8-bit export's copies of the same images (by id), in a temporary export of
  symlinks with the 16-bit export's split lists and masks;
- any `data.intensity` value (`auto`, `shift`, `percentile`, `{range:[0,4095]}`): the 16-bit
  export read with that rule (`shift` = the top 8 bits, how seglab read 16-bit images before).

Prints the table and writes benchmarks/results/bit_depth.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from harness import RESULTS, machine_info

ROOT = Path(__file__).resolve().parents[1]


def eight_bit_subset(data16: Path, data8: Path, folder: Path) -> Path:
    """An export of `data8`'s images for the ids of `data16`, with `data16`'s splits and masks
    (symlinks): the same images, split alike, only the image files differ."""
    by_id = {p.stem: p for p in (data8 / "JPEGImages").iterdir()}
    (folder / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (folder / "JPEGImages").mkdir(exist_ok=True)
    (folder / "labelmap.txt").symlink_to(data16 / "labelmap.txt")
    (folder / "SegmentationClass").symlink_to(data16 / "SegmentationClass")
    for split_list in (data16 / "ImageSets" / "Segmentation").glob("*.txt"):
        (folder / "ImageSets" / "Segmentation" / split_list.name).write_text(split_list.read_text())
        for item in split_list.read_text().split():
            if item not in by_id:
                raise SystemExit(f"{item} (in {split_list}) has no image in {data8 / 'JPEGImages'}")
            (folder / "JPEGImages" / by_id[item].name).symlink_to(by_id[item])
    return folder


def train(data: Path, run_dir: Path, budget: list[str], extra: list[str]) -> dict:
    command = [sys.executable, str(ROOT / "train.py"), f"data.path={data}",
               "model.encoder_weights=null", *budget, "logger=csv",
               "~callbacks.progress_bar", f"hydra.run.dir={run_dir}", *extra]  # fmt: skip
    print("$", " ".join(command[1:]), flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["wall_s"] = round(time.perf_counter() - started, 1)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data16", type=Path, required=True, help="the 16-bit CVAT export")
    parser.add_argument("--data8", type=Path, required=True, help="its 8-bit conversion")
    parser.add_argument("--epochs", type=int, default=4, help="training budget per arm")
    parser.add_argument("--minutes", type=float, default=None,
                        help="a wall-clock budget per arm instead of --epochs")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="train.py's seed, every arm")
    parser.add_argument("--arm", action="append", dest="arms",
                        help="8bit or a data.intensity value; repeat it (default: auto, 8bit, "
                        "shift)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("outputs/bit_depth"),
                        help="where the run directories go")  # fmt: skip
    parser.add_argument("--output", type=Path, default=None,
                        help="the JSON (default: results/bit_depth.json)")  # fmt: skip
    parser.add_argument("train_args", nargs="*", help="extra train.py overrides, every arm")
    args = parser.parse_args()
    args.arms = args.arms or ["auto", "8bit", "shift"]
    data16, data8 = args.data16.resolve(), args.data8.resolve()
    out = (args.out / time.strftime("%Y%m%d-%H%M%S")).resolve()
    budget = [f"budget={args.minutes}m"] if args.minutes else [f"trainer.max_epochs={args.epochs}"]

    rows = []
    for arm in args.arms:
        run_dir = out / "".join(c if c.isalnum() else "_" for c in arm)
        if arm == "8bit":
            data, extra = eight_bit_subset(data16, data8, out / "export8"), []
        else:
            data, extra = data16, [f"data.intensity={arm}"]
        metrics = train(data, run_dir, budget, [f"seed={args.seed}", *extra, *args.train_args])
        rows.append({
            "arm": arm if arm == "8bit" else f"16-bit, data.intensity={arm}",
            "test_mIoU": metrics.get("test/mIoU"),
            "test_iou": {k.split("/")[-1]: v for k, v in metrics.items()
                         if k.startswith("test/iou/")},
            "images_per_s": metrics.get("train/images_per_s"),
            "epochs": metrics.get("train/epochs"), "wall_s": metrics["wall_s"],
        })  # fmt: skip

    budget_text = f"{args.minutes} min" if args.minutes else f"{args.epochs} epochs"
    print(f"\n{data16.name} vs {data8.name}: same ids and split, seed {args.seed}, {budget_text} "
          "per arm\n")  # fmt: skip
    print("| arm | test mIoU | nucleus IoU | train images/s | epochs | wall s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        nucleus = r["test_iou"].get("nucleus")
        print(f"| {r['arm']} | {r['test_mIoU']:.4f} | "
              f"{'n/a' if nucleus is None else f'{nucleus:.4f}'} | {r['images_per_s']:.3f} | "
              f"{r['epochs']} | {r['wall_s']} |")  # fmt: skip
    output = args.output or RESULTS / "bit_depth.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "bit_depth", "data16": str(data16), "data8": str(data8),
              "budget": budget, "seed": args.seed, "train_args": args.train_args,
              "machine": machine_info(), "rows": rows}  # fmt: skip
    output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
