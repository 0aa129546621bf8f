"""Training data path throughput: per loader worker against decoding alone, and the default
loader against what the model consumes.

Two questions, two tables:

1. Per worker process (everything in one process, interleaved), does seglab's training sample
   cost much more than decoding its files? `decode only` reads the JPEG and the mask PNG with
   OpenCV (the floor any loader pays); `+ colour lookup` is `SegmentationDataset.load` (exact
   colour -> class index, unknown-colour check); `train sample` adds the default augmentation,
   normalisation and tensor conversion; `train batches` iterates a DataLoader with no workers,
   so collation is in.
2. Does the default loader (`data.num_workers=auto`, the real `train_dataloader()`) feed the
   default model faster than it trains? `model training step` is forward + backward + AdamW on
   pre-loaded batches of the same size.

    python benchmarks/data_pipeline.py              # 512x512 demo scenes, batch 8
    python benchmarks/data_pipeline.py --quick      # < 1 min on 2 cores

Prints markdown tables and writes `benchmarks/results/data_pipeline.json`.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

from seglab.demo import write_demo_export
from seglab.training import build

from harness import interleave, markdown, save, summarize

CONF = Path(__file__).resolve().parents[1] / "conf"
FLOOR = "decode only"
MODEL = "model training step"


def rate(fn: Callable[[int], object], count: int) -> Callable[[], float]:
    def measure() -> float:
        start = time.perf_counter()
        for i in range(count):
            fn(i)
        return count / (time.perf_counter() - start)

    return measure


def batches_rate(loader: DataLoader, batches: int) -> Callable[[], float]:
    """Images/s over `batches` batches, after the first one (worker start-up) has arrived."""

    def measure() -> float:
        iterator = iter(loader)
        next(iterator)
        start = time.perf_counter()
        images = sum(len(b["image"]) for b in itertools.islice(iterator, batches))
        return images / (time.perf_counter() - start)

    return measure


def training_rate(module: torch.nn.Module, batch: dict, steps: int) -> Callable[[], float]:
    """Forward, loss, backward and optimizer step of the real module on one pre-loaded batch."""
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    module.train()

    def measure() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            loss = module.criterion(module(batch["image"]), batch["mask"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return steps * len(batch["image"]) / (time.perf_counter() - start)

    return measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller images, fewer repetitions")
    parser.add_argument("--size", type=int, help="image side in pixels (512; quick 256)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--images", type=int, help="images per measurement (64; quick 24)")
    parser.add_argument("--repeats", type=int, help="interleaved repetitions (5; quick 3)")
    parser.add_argument("--override", nargs="*", default=[], help="more train.py overrides")
    parser.add_argument("--output", type=Path, help="JSON file (default results/<name>.json)")
    args = parser.parse_args()
    size = args.size or (256 if args.quick else 512)
    count = args.images or (24 if args.quick else 64)
    repeats = args.repeats or (3 if args.quick else 5)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export = write_demo_export(tmp / "data", size=size, splits={"train": count, "val": 2})
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(
                "train",
                overrides=[f"data.path={export}", f"data.image_size=[{size},{size}]",
                           f"data.batch_size={args.batch}", "model.encoder_weights=null",
                           "logger=none", f"run_dir={tmp / 'run'}", *args.override],
            )  # fmt: skip
        experiment = build(cfg)
        datamodule = experiment.datamodule
        train = datamodule.dataset("train", train=True)
        samples = train.samples
        workers = DataLoader(train, batch_size=args.batch, shuffle=True, num_workers=0)
        per_worker = interleave(
            {
                FLOOR: rate(
                    lambda i: (
                        cv2.imread(str(samples[i].image), cv2.IMREAD_COLOR),
                        cv2.imread(str(samples[i].mask), cv2.IMREAD_UNCHANGED),
                    ),
                    count,
                ),
                "+ colour lookup": rate(train.load, count),
                "train sample": rate(train.__getitem__, count),
                "train batches": batches_rate(workers, count // args.batch - 1),
            },
            repeats,
        )

        loader = datamodule.train_dataloader()
        module = experiment.module.to(device)
        batch = next(iter(DataLoader(train, batch_size=args.batch)))
        batch = module.on_after_batch_transfer({k: v.to(device) for k, v in batch.items()}, 0)
        steps = 1 if args.quick else 2
        feeding = interleave(
            {
                MODEL: training_rate(module, batch, steps),
                f"default loader ({loader.num_workers} workers)": batches_rate(
                    loader, count // args.batch - 1
                ),
            },
            repeats,
        )

    worker_rows = summarize(per_worker, FLOOR, table="per worker")
    feed_rows = summarize(feeding, MODEL, table="loader vs model")
    print(f"\nTraining data path, {count} demo scenes of {size}x{size}, default augmentation, "
          f"batch {args.batch}, {repeats} interleaved repetitions\n")  # fmt: skip
    print("Per worker process (one process):\n")
    print(markdown(worker_rows, FLOOR))
    print(f"\nDefault loader against the default model ({cfg.model.arch} "
          f"{cfg.model.encoder_name}, fp32, {device.type}):\n")  # fmt: skip
    print(markdown(feed_rows, MODEL))
    settings = {"size": size, "images": count, "batch": args.batch, "repeats": repeats,
                "arch": cfg.model.arch, "encoder": cfg.model.encoder_name,
                "workers": loader.num_workers, "overrides": args.override}  # fmt: skip
    save("data_pipeline", args.output, settings, worker_rows + feed_rows)


if __name__ == "__main__":
    main()
