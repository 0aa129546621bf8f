"""Training images/s of seglab against the plain PyTorch loop a user would write instead.

The question it answers: does seglab (the LightningModule, DataModule and Trainer built from the
composed Hydra config, with its default callbacks, logger and metrics) train slower than a
hand-written loop? Both train the same smp model with the same loss, optimizer, per-step
schedule, batch size, precision and memory layout, on the same dataset and transforms through
a DataLoader with the same settings; validation is off in both. Each measurement is a fresh
run; its first steps (worker start-up, allocator warm-up) are not timed, and its rate comes from
its median step (batch start to next batch start, waiting for data included). The two paths
alternate A, B, A, B ...

    python benchmarks/train_overhead.py                 # U-Net ResNet-34, 256 px, batch 8
    python benchmarks/train_overhead.py --quick         # < 1 min on 2 cores
    python benchmarks/train_overhead.py --size 512 --batch 16 --precision bf16-mixed \\
        --override model=deeplabv3plus model.encoder_name=resnet50

Prints a markdown table and writes `benchmarks/results/train_overhead.json`.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import segmentation_models_pytorch as smp
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from seglab.demo import write_demo_export
from seglab.training import build

from harness import interleave, markdown, save, summarize

CONF = Path(__file__).resolve().parents[1] / "conf"
BASELINE = "plain PyTorch"


class StepTimer(L.Callback):
    """Timestamps at the start of every step from step `skip` on, and at the end of the last."""

    def __init__(self, skip: int):
        self.skip = skip
        self.times: list[float] = []
        self.last_end = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step >= self.skip:
            self.times.append(_now())

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        self.last_end = _now()

    def on_train_end(self, trainer: L.Trainer, *args: object) -> None:
        self.times.append(self.last_end)


def images_per_second(times: list[float], batch: int) -> float:
    """From the median step: a step is everything from one batch's start to the next's (data
    wait included); the median keeps one stalled step on a shared machine from deciding."""
    return batch / statistics.median(b - a for a, b in itertools.pairwise(times))


def seglab_path(cfg: DictConfig, warmup: int, batch: int):
    def measure() -> float:
        timer = StepTimer(skip=warmup)
        experiment = build(cfg, extra_callbacks=[timer])
        experiment.trainer.fit(experiment.module, datamodule=experiment.datamodule)
        return images_per_second(timer.times, batch)

    return measure


def plain_path(cfg: DictConfig, warmup: int, steps: int, batch: int):
    """What a user writes by hand: the smp model, cross-entropy, AdamW and a cosine schedule
    stepped per iteration, on the same dataset and loader settings as seglab's."""
    experiment = build(cfg)  # only to get the same dataset, transforms and loader settings
    datamodule = experiment.datamodule
    seglab_loader = datamodule.train_dataloader()
    dataset = seglab_loader.dataset
    model_cfg = cfg.model
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = str(cfg.trainer.precision)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    channels_last = bool(model_cfg.channels_last)
    total = warmup + steps
    # The dataset yields uint8 images: normalise on the device, as seglab does.
    mean = torch.tensor(datamodule.mean, device=device).view(1, -1, 1, 1) * 255
    std = torch.tensor(datamodule.std, device=device).view(1, -1, 1, 1) * 255

    def measure() -> float:
        torch.manual_seed(0)
        model = smp.create_model(
            model_cfg.arch,
            encoder_name=model_cfg.encoder_name,
            encoder_weights=None,
            classes=len(datamodule.classes),
        ).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        loss_fn = torch.nn.CrossEntropyLoss(ignore_index=datamodule.ignore_index)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        scaler = torch.amp.GradScaler(enabled=dtype == torch.float16)
        loader = DataLoader(
            dataset,
            batch_size=seglab_loader.batch_size,
            shuffle=True,
            drop_last=seglab_loader.drop_last,
            num_workers=seglab_loader.num_workers,
            persistent_workers=seglab_loader.persistent_workers,
            pin_memory=seglab_loader.pin_memory,
        )
        model.train()
        step, times = 0, []
        while step < total:
            for sample in loader:
                if step >= warmup:
                    times.append(_now())
                images = sample["image"].to(device, non_blocking=True)
                images = (images.float() - mean) / std
                masks = sample["mask"].to(device, non_blocking=True).long()
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    logits = model(images)
                loss = loss_fn(logits.float(), masks)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                if step == total:
                    break
        times.append(_now())
        return images_per_second(times, batch)

    return measure


def _now() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller images, fewer steps")
    parser.add_argument("--size", type=int, help="image side in pixels (256; quick 96)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, help="timed steps per run (12; quick 6)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--repeats", type=int, help="interleaved repetitions (4; quick 2)")
    parser.add_argument("--precision", default="32-true", help="32-true | bf16-mixed | 16-mixed")
    parser.add_argument("--override", nargs="*", default=[], help="more train.py overrides")
    parser.add_argument("--output", type=Path, help="JSON file (default results/<name>.json)")
    args = parser.parse_args()
    size = args.size or (96 if args.quick else 256)
    steps = args.steps or (6 if args.quick else 12)
    repeats = args.repeats or (2 if args.quick else 4)
    images = (args.warmup + steps) * args.batch

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export = write_demo_export(tmp / "data", size=size, splits={"train": images, "val": 2})
        overrides = [
            f"data.path={export}",
            f"data.image_size=[{size},{size}]",
            f"data.batch_size={args.batch}",
            "model.encoder_weights=null",
            f"trainer.precision={args.precision}",
            f"+trainer.max_steps={args.warmup + steps}",
            "+trainer.limit_val_batches=0",
            "+trainer.num_sanity_val_steps=0",
            "test=false",
            "~callbacks.early_stopping",  # it needs val/mIoU; it does nothing per step
            f"run_dir={tmp / 'run'}",
            *args.override,
        ]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
        runs = interleave(
            {
                BASELINE: plain_path(cfg, args.warmup, steps, args.batch),
                "seglab": seglab_path(cfg, args.warmup, args.batch),
            },
            repeats,
        )
    rows = summarize(runs, BASELINE)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"\nTraining, {cfg.model.arch} {cfg.model.encoder_name}, {size}x{size}, batch "
          f"{args.batch}, {args.precision}, {device}, {steps} timed steps after {args.warmup}, "
          f"{repeats} interleaved repetitions\n")  # fmt: skip
    print(markdown(rows, BASELINE))
    settings = {"arch": cfg.model.arch, "encoder": cfg.model.encoder_name, "size": size,
                "batch": args.batch, "precision": args.precision, "steps": steps,
                "warmup": args.warmup, "repeats": repeats, "overrides": args.override}  # fmt: skip
    save("train_overhead", args.output, settings, rows)


if __name__ == "__main__":
    main()
