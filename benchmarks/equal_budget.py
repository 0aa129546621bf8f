"""seglab's defaults against the training loop a user would write, at the same wall-clock budget.

    python benchmarks/equal_budget.py --data ../shared/data/ccp --minutes 20
    python benchmarks/equal_budget.py --data ../shared/data/bbbc039 --minutes 20
    python benchmarks/equal_budget.py --data ../shared/data/ccp --minutes 7 --seglab-only model=unet
    python benchmarks/equal_budget.py --data ../shared/data/ccp --minutes 7 --plain-only
    python benchmarks/equal_budget.py --data ../shared/data/ccp --minutes 20 --seed 1

(a) `python train.py data.path=DATA model.encoder_weights=null budget=<minutes>m`: seglab's
defaults, nothing tuned for the dataset (no download here, so both arms start from scratch);
(b) the plain loop below: U-Net ResNet-18, cross-entropy, AdamW 1e-3, batch 8, random crops
and horizontal flips, no validation, trained for the same minutes on the same machine, one arm
after the other. Both are scored by the same code on the test split at each image's own
resolution: per-class IoU from one confusion matrix, mIoU over the classes present in the truth
or the prediction (as train.py and MMSegmentation do). Prints the table and writes
benchmarks/results/equal_budget_<dataset>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from harness import RESULTS, machine_info

ROOT = Path(__file__).resolve().parents[1]
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


# --- the export, read as a user would: labelmap colours -> class indices ---------------------
def read_export(root: Path, subset: str) -> tuple[list[tuple[Path, Path]], list[str], np.ndarray]:
    lines = (root / "labelmap.txt").read_text().splitlines()
    labels = [line.split(":") for line in lines if line and not line.startswith("#")]
    names = [label[0] for label in labels]
    colors = np.array([[int(v) for v in label[1].split(",")] for label in labels], np.int64)
    ids = (root / "ImageSets/Segmentation" / f"{subset}.txt").read_text().split()
    images = {p.stem: p for p in (root / "JPEGImages").iterdir()}
    return [(images[i], root / "SegmentationClass" / f"{i}.png") for i in ids], names, colors


def read_pair(image: Path, mask: Path, colors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rgb = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
    m = cv2.cvtColor(cv2.imread(str(mask)), cv2.COLOR_BGR2RGB).astype(np.int64)
    key, table = (m[..., 0] << 16) | (m[..., 1] << 8) | m[..., 2], np.full(1 << 24, 255, np.uint8)
    table[(colors[:, 0] << 16) | (colors[:, 1] << 8) | colors[:, 2]] = np.arange(len(colors))
    return rgb, table[key]


# --- (b) the plain loop: what a user writes with smp in an afternoon --------------------------
def plain_loop(root: Path, subset: str, minutes: float, crop: tuple[int, int], seed: int = 0):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pairs, names, colors = read_export(root, subset)
    data = [read_pair(i, m, colors) for i, m in pairs]
    model = smp.Unet("resnet18", encoder_weights=None, classes=len(names))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ch, cw = crop
    start, seen = time.perf_counter(), 0
    model.train()
    while time.perf_counter() - start < minutes * 60:
        images, masks = [], []
        for k in rng.choice(len(data), 8, replace=len(data) < 8):
            image, mask = data[k]
            top = rng.integers(0, image.shape[0] - ch + 1)
            left = rng.integers(0, image.shape[1] - cw + 1)
            image, mask = (
                image[top : top + ch, left : left + cw],
                mask[top : top + ch, left : left + cw],
            )
            if rng.random() < 0.5:
                image, mask = image[:, ::-1], mask[:, ::-1]
            images.append((image - MEAN) / STD)
            masks.append(mask)
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
        y = torch.from_numpy(np.stack(masks)).long()
        loss = F.cross_entropy(model(x), y, ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(images)
    seconds = time.perf_counter() - start
    model.eval()

    @torch.inference_mode()
    def predict(image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        x = torch.from_numpy((image - MEAN) / STD).permute(2, 0, 1)[None].float()
        x = F.pad(x, (0, -w % 32, 0, -h % 32))
        return model(x)[0, :, :h, :w].argmax(0).numpy()

    return predict, seen / seconds


# --- the same scoring for both arms --------------------------------------------------------
def score(predict, root: Path, subset: str) -> dict:
    pairs, names, colors = read_export(root, subset)
    k = len(names)
    confusion = np.zeros((k, k), np.int64)
    for image_path, mask_path in pairs:
        image, truth = read_pair(image_path, mask_path, colors)
        pred = predict(image)
        assert pred.shape == truth.shape, (image_path, pred.shape, truth.shape)
        valid = truth != 255
        confusion += np.bincount(
            truth[valid].astype(np.int64) * k + pred[valid], minlength=k * k
        ).reshape(k, k)
    tp = np.diag(confusion).astype(float)
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    return {
        "mIoU": float(np.nanmean(iou)),
        "iou": {
            n: (None if np.isnan(v) else round(float(v), 4))
            for n, v in zip(names, iou, strict=True)
        },
        "classes_scored": int((union > 0).sum()),
        "classes_under_0.01": int(((union > 0) & (iou < 0.01)).sum()),
    }


# --- (a) seglab through the command a user types -----------------------------------------
def seglab_arm(root: Path, minutes: float, extra: list[str], run_dir: Path):
    from seglab.prediction import load_predictor

    command = [sys.executable, str(ROOT / "train.py"), f"data.path={root}",
               "model.encoder_weights=null", f"budget={minutes}m", "logger=csv",
               "~callbacks.progress_bar", f"hydra.run.dir={run_dir}", *extra]  # fmt: skip
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    predictor = load_predictor(metrics["best_ckpt"], device="cpu")
    rate = metrics.get("train/images_per_s")
    return predictor.predict, rate, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a CVAT export folder")
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per arm")
    parser.add_argument("--train-subset", default="Train")
    parser.add_argument("--test-subset", default="Test")
    parser.add_argument("--crop", type=int, nargs=2, default=None,
                        help="plain loop crop [h w]; default: the largest multiple of 32 that "
                        "fits every training image, at most 512")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("outputs/equal_budget"),
                        help="where the seglab run directories go")  # fmt: skip
    parser.add_argument("--output", type=Path, default=None,
                        help="the JSON (default: results/equal_budget_<dataset>.json; "
                        "--seglab-only and --plain-only write one only when given)")  # fmt: skip
    parser.add_argument("--seglab-only", action="store_true",
                        help="exploration: train and score seglab's arm alone")  # fmt: skip
    parser.add_argument("--plain-only", action="store_true",
                        help="exploration: train and score the plain loop alone")  # fmt: skip
    parser.add_argument("--seed", type=int, default=None,
                        help="repeat a pair with another seed: train.py's seed=N and the loop's; "
                        "default: train.py's configured seed, the loop's 0")  # fmt: skip
    parser.add_argument("seglab_args", nargs="*", help="extra train.py overrides (exploration)")
    args = parser.parse_args()
    root = args.data.resolve()
    if args.seed is not None:
        args.seglab_args = [f"seed={args.seed}", *args.seglab_args]
    loop_seed = 0 if args.seed is None else args.seed
    torch.set_num_threads(torch.get_num_threads())

    crop = args.crop
    if crop is None:
        pairs, _, _ = read_export(root, args.train_subset)
        shapes = [cv2.imread(str(i), cv2.IMREAD_REDUCED_GRAYSCALE_2).shape for i, _ in pairs]
        crop = [min(512, (2 * min(s[d] for s in shapes)) // 32 * 32) for d in (0, 1)]

    if args.plain_only:
        plain_predict, plain_rate = plain_loop(
            root, args.train_subset, args.minutes, tuple(crop), loop_seed
        )
        plain_score = score(plain_predict, root, args.test_subset)
        print(f"\n{root.name}: plain loop test mIoU {plain_score['mIoU']:.4f} ({plain_rate:.2f} "
              f"images/s, crops {crop[0]}x{crop[1]}, {args.minutes} min)")  # fmt: skip
        plain = {**plain_score, "images_per_s": plain_rate, "crop": list(crop)}
        write_result(args.output, {**header(root, args), "plain": plain})
        return
    run_dir = (args.out / f"{root.name}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    seglab_predict, seglab_rate, seglab_metrics = seglab_arm(
        root, args.minutes, args.seglab_args, run_dir / "seglab"
    )
    seglab_score = score(seglab_predict, root, args.test_subset)
    seglab = {**seglab_score, "images_per_s": seglab_rate, "overrides": args.seglab_args,
              "train_py_test_mIoU": seglab_metrics.get("test/mIoU"),
              "best_ckpt": seglab_metrics.get("best_ckpt")}  # fmt: skip
    if args.seglab_only:
        print(f"\n{root.name} {args.seglab_args}: seglab test mIoU {seglab_score['mIoU']:.4f} "
              f"({seglab_rate} images/s)")  # fmt: skip
        write_result(args.output, {**header(root, args), "seglab": seglab})
        return
    print(f"plain loop: {args.minutes} min, crops {crop[0]}x{crop[1]}", flush=True)
    plain_predict, plain_rate = plain_loop(
        root, args.train_subset, args.minutes, tuple(crop), loop_seed
    )
    plain_score = score(plain_predict, root, args.test_subset)

    ratio = seglab_score["mIoU"] / max(plain_score["mIoU"], 1e-9)
    names = list(seglab_score["iou"])
    print(f"\n{root.name}: test split at native resolution, {args.minutes} min per arm\n")
    print(f"{'':24}{'seglab':>10}{'plain':>10}")
    print(f"{'test mIoU':24}{seglab_score['mIoU']:>10.4f}{plain_score['mIoU']:>10.4f}")
    rates = [f"{r:>10.2f}" if r else f"{'n/a':>10}" for r in (seglab_rate, plain_rate)]
    print(f"{'train images/s':24}{''.join(rates)}")
    for name in names:
        a, b = seglab_score["iou"][name], plain_score["iou"][name]
        if a is not None or b is not None:
            a, b = ("n/a" if v is None else v for v in (a, b))
            print(f"  {name[:22]:22}{a:>10}{b:>10}")
    print(f"\nratio seglab / plain (test mIoU): {ratio:.2f}x")
    print(f"train.py's own test/mIoU: {seglab_metrics.get('test/mIoU')}")

    plain = {**plain_score, "images_per_s": plain_rate, "crop": list(crop)}
    result = {**header(root, args), "seglab": seglab, "plain": plain, "ratio": ratio}
    write_result(args.output or RESULTS / f"equal_budget_{root.name}.json", result)


def header(root: Path, args: argparse.Namespace) -> dict:
    return {"dataset": root.name, "minutes": args.minutes, "seed": args.seed,
            "machine": machine_info()}  # fmt: skip


def write_result(out: Path | None, result: dict) -> None:
    """Writes the JSON when there is a destination: a one-arm exploration run only with --output."""
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
