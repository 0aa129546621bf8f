"""`predict.py mode=slide` on one huge image against the same on 1k images: peak memory and
megapixels per second (#15 item 4: peak RSS <= 2 GiB for 16384x16384, and >= 0.8x the
megapixels/s of 1024x1024 images).

Both paths are the real command, `python predict.py ckpt=... input=... mode=slide`, each in its
own process, with the default outputs (index and colour PNGs, overlay JPEG) written:

- `1k images`   `--images` crops of `--small` pixels from the huge image (the same content),
                predicted the usual way (under `stream_pixels`);
- `huge image`  the `--size` x `--size` image, predicted strip by strip with its outputs
                streamed (over `stream_pixels`).

Peak RSS is the process's maximum resident set (`os.wait4`'s ru_maxrss): Python, torch, the
model, the decoded image and everything predict.py holds. Megapixels/s is the image pixels over
the seconds predict.py reports for its prediction loop (reading, predicting, writing; not the
start-up or the model's loading). The checkpoint has random weights (speed does not depend on
them); the default model is a small U-Net (ResNet-18 encoder at depth 3, decoder channels 16, 8,
4; predict.py's default batch_size, auto: 1 on the CPU) so that the 16k image runs in minutes on
a 2-core CPU.

    python benchmarks/huge_slide.py                 # 16384x16384 against 16 images of 1024x1024
    python benchmarks/huge_slide.py --quick         # 768 against 2 x 256, about a minute

Prints a markdown table and writes `benchmarks/results/huge_slide.json`.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from seglab.models.module import SegmentationModule

from harness import save

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"Predicted (\d+) image\(s\) in ([0-9.]+) s")


def write_checkpoint(path: Path, arch: str, encoder: str, depth: int, size: int) -> Path:
    """A seglab checkpoint with random weights, as train.py would write it."""
    decoder = [max(4, 16 >> i) for i in range(depth)]  # 16, 8, 4: the forward pass stays cheap
    module = SegmentationModule(
        model={"arch": arch, "encoder_name": encoder, "encoder_weights": None,
               "encoder_depth": depth, "decoder_channels": decoder},
        loss={"name": "ce"},
        optimizer={"name": "adamw", "lr": 1e-3},
        classes=[{"name": n, "color": c} for n, c in
                 (("background", [0, 0, 0]), ("leaf", [51, 221, 255]), ("stone", [250, 50, 83]),
                  ("berry", [52, 209, 183]))],
        image_size=[size, size],
    )  # fmt: skip
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def write_images(folder: Path, size: int, small: int, count: int) -> tuple[Path, Path]:
    """A smooth `size` x `size` JPEG scene and `count` `small` crops of it in another folder."""
    rng = np.random.default_rng(0)
    seed = rng.integers(0, 256, (max(2, size // 128), max(2, size // 128), 3), np.uint8)
    scene = cv2.resize(seed, (size, size), interpolation=cv2.INTER_CUBIC)
    (folder / "huge").mkdir(parents=True)
    (folder / "small").mkdir()
    cv2.imwrite(str(folder / "huge" / "scene.jpg"), scene)
    for i in range(count):
        top, left = (int(v) for v in rng.integers(0, size - small + 1, 2))
        crop = scene[top : top + small, left : left + small]
        cv2.imwrite(str(folder / "small" / f"crop{i:03d}.jpg"), crop)
    return folder / "huge", folder / "small"


def predict_py(ckpt: Path, images: Path, out: Path, options: list[str]) -> dict[str, float]:
    """predict.py in a fresh process: its image count, prediction seconds and peak RSS (the
    child reaped with `os.wait4`, whose rusage is that process's alone)."""
    command = [sys.executable, str(ROOT / "predict.py"), f"ckpt={ckpt}", f"input={images}",
               f"output={out}", "mode=slide", "device=cpu", "progress=false",
               f"hydra.run.dir={out}/.hydra-run", "hydra.output_subdir=null", *options]  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    log = out.parent / f"{out.name}.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    found = SUMMARY.search(text)
    if process.returncode or found is None:
        raise SystemExit(f"predict.py failed ({process.returncode}):\n{text[-3000:]}")
    return {"images": int(found.group(1)), "seconds": float(found.group(2)),
            "peak_rss_mib": usage.ru_maxrss / 1024}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="768 px against 2 x 256 px (a minute on 2 busy cores)"
    )
    parser.add_argument("--size", type=int, help="the huge image's side (16384; quick 768)")
    parser.add_argument("--small", type=int, help="the small images' side (1024; quick 256)")
    parser.add_argument("--images", type=int, help="small images (16; quick 2)")
    parser.add_argument("--tile", type=int, help="training size = slide tile (512; quick 128)")
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--depth", type=int, default=3, help="encoder depth (3: a small model)")
    parser.add_argument("--batch", help="predict.py's batch_size (default: its own, auto)")
    parser.add_argument("--output", type=Path, help="JSON file (default results/<name>.json)")
    args = parser.parse_args()
    size = args.size or (768 if args.quick else 16384)
    small = args.small or (256 if args.quick else 1024)
    count = args.images or (2 if args.quick else 16)
    tile = args.tile or (128 if args.quick else 512)
    # predict.py's default threshold (2048x2048) lies between the two sizes; --quick sets one.
    limit = [f"stream_pixels={(size * size + small * small) // 2}"] if args.quick else []
    options = [*([f"batch_size={args.batch}"] if args.batch else []), *limit]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        huge, smalls = write_images(tmp / "images", size, small, count)
        ckpt = write_checkpoint(tmp / "model.ckpt", args.arch, args.encoder, args.depth, tile)
        runs = {
            f"{count} images of {small}x{small}": (predict_py(ckpt, smalls, tmp / "o1", options),
                                                   count * small * small),
            f"1 image of {size}x{size}": (predict_py(ckpt, huge, tmp / "o2", options),
                                          size * size),
        }  # fmt: skip
    rows = []
    for name, (measured, pixels) in runs.items():
        rate = pixels / 1e6 / measured["seconds"]
        rows.append({
            "path": name, "megapixels": round(pixels / 1e6, 2),
            "seconds": round(measured["seconds"], 2), "mpx_per_s": round(rate, 3),
            "peak_rss_mib": round(measured["peak_rss_mib"], 1),
            "median_img_s": round(measured["images"] / measured["seconds"], 4),
            "min_img_s": round(measured["images"] / measured["seconds"], 4),
            "max_img_s": round(measured["images"] / measured["seconds"], 4),
        })  # fmt: skip
    base, big = rows
    for row in rows:
        row["ratio"] = round(row["mpx_per_s"] / base["mpx_per_s"], 3)

    print(f"\npredict.py mode=slide, {args.arch} {args.encoder} depth {args.depth}, tile {tile}, "
          f"batch {args.batch or 'auto'}, CPU, outputs index/colour/overlay\n")  # fmt: skip
    print("| input | megapixels | seconds | megapixels/s | × 1k images | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['megapixels']} | {r['seconds']:.1f} | {r['mpx_per_s']:.3f} | "
              f"{r['ratio']:.2f} | {r['peak_rss_mib']:.0f} |")  # fmt: skip
    print(
        f"\nhuge image: peak RSS {big['peak_rss_mib'] / 1024:.2f} GiB (goal <= 2 GiB), "
        f"{big['ratio']:.2f}x the megapixels/s of the small images (goal >= 0.8)"
    )
    settings = {"arch": args.arch, "encoder": args.encoder, "depth": args.depth, "tile": tile,
                "size": size, "small": small, "images": count, "batch": args.batch,
                "quick": args.quick}  # fmt: skip
    save("huge_slide", args.output, settings, rows)


if __name__ == "__main__":
    main()
