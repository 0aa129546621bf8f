"""predict.py throughput against the bare network forward, and the ONNX backend against torch.

The question it answers: what does predict.py's whole path (decode in loader workers, resize,
normalise, forward, resize back, argmax, write index/colour/overlay files) cost on top of the
forward pass itself, and is onnxruntime faster than torch here? Paths, interleaved:

- `bare forward (torch)`   the network on pre-loaded, normalised (channels-last) batches; no I/O,
                           no resizing (the baseline);
- `predict.py resize`      `python predict.py ckpt=... input=... mode=resize`, run in-process;
- `predict.py whole`, `predict.py slide`   the other image-size modes on the same images;
- `bare forward (onnx)`    the exported model through onnxruntime on the same batches;
- `predict.py onnx MODE`   `predict.py backend=onnx model=... mode=MODE`, each mode.

Each row is also given against the bare forward of its own backend (torch or onnx).

The checkpoint is a randomly initialised seglab model (speed does not depend on the weights);
the images are demo scenes of `--size` pixels, which is also the model's training size.

    python benchmarks/inference.py                      # U-Net ResNet-34, 512 px, batch auto
    python benchmarks/inference.py --quick              # < 1 min on 2 cores
    python benchmarks/inference.py --arch deeplabv3plus --encoder resnet50 --batch 16 --amp

Prints a markdown table and writes `benchmarks/results/inference.json`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from seglab.demo import write_demo_export
from seglab.models.module import SegmentationModule
from seglab.prediction import load_checkpoint
from seglab.prediction.load import autocast_dtype, resolve_device
from seglab.prediction.onnx import open_onnx, write_onnx
from seglab.prediction.predictor import resolve_batch_size
from seglab.prediction.run import run

from harness import interleave, markdown, save, summarize

CONF = Path(__file__).resolve().parents[1] / "conf" / "predict"
BASELINE = "bare forward (torch)"


def write_checkpoint(path: Path, arch: str, encoder: str, size: int) -> Path:
    """A seglab checkpoint with random weights, as train.py would write it."""
    module = SegmentationModule(
        model={"arch": arch, "encoder_name": encoder, "encoder_weights": None},
        loss={"name": "ce"},
        optimizer={"name": "adamw", "lr": 1e-3},
        classes=[{"name": n, "color": c} for n, c in
                 (("background", [0, 0, 0]), ("leaf", [51, 221, 255]), ("stone", [250, 50, 83]),
                  ("berry", [52, 209, 183]))],
        image_size=[size, size],
    )  # fmt: skip
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def bare_forward(
    network: Callable[[torch.Tensor], torch.Tensor],
    batches: list[torch.Tensor],
    device: torch.device,
    dtype: torch.dtype | None,
) -> Callable[[], float]:
    def measure() -> float:
        _sync(device)
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast(device.type, dtype, enabled=dtype is not None):
            for batch in batches:
                network(batch)
        _sync(device)
        return sum(len(b) for b in batches) / (time.perf_counter() - start)

    return measure


def predict_py(overrides: list[str]) -> Callable[[], float]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("predict", overrides=[*overrides, "progress=false"])

    def measure() -> float:
        return run(cfg)["images_per_second"]

    return measure


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller images (< 1 min)")
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--size", type=int, help="image and training size (512; quick 128)")
    parser.add_argument("--images", type=int, help="images per measurement (16)")
    parser.add_argument(
        "--batch", type=int, help="per forward pass (default: predict.py's auto, CPU 1, GPU 8)"
    )
    parser.add_argument("--repeats", type=int, help="interleaved repetitions (5; quick 3)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true", help="bf16/fp16 autocast (torch paths)")
    parser.add_argument("--no-onnx", action="store_true", help="leave out the ONNX paths")
    parser.add_argument("--output", type=Path, help="JSON file (default results/<name>.json)")
    args = parser.parse_args()
    size = args.size or (128 if args.quick else 512)
    count = args.images or 16
    repeats = args.repeats or (3 if args.quick else 5)
    device = resolve_device(args.device)
    dtype = autocast_dtype(args.amp, device)
    args.batch = resolve_batch_size(args.batch or "auto", device)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export = write_demo_export(tmp / "images", size=size, splits={"train": count})
        images = export / "JPEGImages"
        ckpt = write_checkpoint(tmp / "model.ckpt", args.arch, args.encoder, size)
        network, _ = load_checkpoint(ckpt, device)
        # Channels-last, as predict.py's normalised batches are (a view of the decoded HWC
        # images): on the CPU that layout alone makes the forward pass ~1.4x faster.
        batches = [
            torch.randn(min(args.batch, count - i), 3, size, size, device=device).contiguous(
                memory_format=torch.channels_last
            )
            for i in range(0, count, args.batch)
        ]
        common = [f"input={images}", f"output={tmp / 'out'}", f"device={device.type}",
                  f"batch_size={args.batch}", f"amp={str(args.amp).lower()}"]  # fmt: skip
        paths = {
            BASELINE: bare_forward(network, batches, device, dtype),
            "predict.py resize": predict_py([f"ckpt={ckpt}", "mode=resize", *common]),
            "predict.py whole": predict_py([f"ckpt={ckpt}", "mode=whole", *common]),
            "predict.py slide": predict_py([f"ckpt={ckpt}", "mode=slide", *common]),
        }
        if not args.no_onnx:
            onnx_path = write_onnx(ckpt, tmp / "model.onnx").path
            onnx_network, _, _ = open_onnx(onnx_path, device)
            paths["bare forward (onnx)"] = bare_forward(onnx_network, batches, device, None)
            onnx_common = [c for c in common if not c.startswith("amp=")]
            for mode in ("resize", "whole", "slide"):
                paths[f"predict.py onnx {mode}"] = predict_py(
                    ["backend=onnx", f"model={onnx_path}", f"mode={mode}", *onnx_common]
                )
        runs = interleave(paths, repeats)
    rows = summarize(runs, BASELINE)
    # Each path against the bare forward of its own backend: what predict.py adds to it.
    bare = {row["path"]: row["median_img_s"] for row in rows if row["path"].startswith("bare")}
    for row in rows:
        own = "bare forward (onnx)" if "onnx" in row["path"] else BASELINE
        row["own_backend_ratio"] = round(row["median_img_s"] / bare[own], 3)

    print(f"\nInference, {args.arch} {args.encoder}, {count} images of {size}x{size} (= the "
          f"training size), batch {args.batch}, {device.type}"
          f"{' amp ' + str(dtype).removeprefix('torch.') if dtype else ''}, {repeats} "
          "interleaved repetitions\n")  # fmt: skip
    print(markdown(rows, BASELINE))
    print("\n| path | × the bare forward of its own backend |\n|---|---|")
    for row in rows:
        print(f"| {row['path']} | {row['own_backend_ratio']:.2f} |")
    settings = {"arch": args.arch, "encoder": args.encoder, "size": size, "images": count,
                "batch": args.batch, "device": device.type, "amp": args.amp,
                "repeats": repeats}  # fmt: skip
    save("inference", args.output, settings, rows)


if __name__ == "__main__":
    main()
