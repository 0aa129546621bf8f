"""Helpers shared by the tests: the repository root and the real config, composed."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from seglab.config import with_default_experiment

ROOT = Path(__file__).resolve().parents[1]
# Small enough for a CPU test, large enough for a U-Net's five downsamplings.
TINY = [
    "model.encoder_weights=null",  # nothing can be downloaded in the tests
    "data.image_size=[64,64]",
    "data.batch_size=2",
    "data.num_workers=0",
    "model.encoder_name=resnet18",
    "trainer.accelerator=cpu",
    "trainer.log_every_n_steps=1",
]


def compose_train(overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    """The real conf/train.yaml, composed as `python train.py <overrides>` would: with the demo
    preset when the overrides name no data, as train.py does."""
    overrides = with_default_experiment(overrides)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=return_hydra_config)


def compose_predict(overrides: list[str]) -> DictConfig:
    """The real conf/predict/predict.yaml, composed as `python predict.py <overrides>` would."""
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "predict"), version_base="1.3"):
        return compose("predict", overrides=overrides)


def read_wandb_records(path: Path) -> list:
    """Decode an offline run's ``.wandb`` file into wandb's own ``Record`` messages.

    The file is a LevelDB-style log: a 7-byte header, then 32 KiB blocks of chunks, each
    with a 7-byte header (crc32, length, type). A record can be split across blocks, so a
    byte search of the raw file misses keys that straddle a block boundary. wandb 0.31 has
    no Python reader any more, so the chunks are joined here and each record is parsed with
    wandb's protobuf class.
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb transaction log"
    block, position, pending, records = 32768, 7, b"", []
    while position + 7 <= len(data):
        left_in_block = block - (position % block)
        if left_in_block < 7:  # the block's tail is padding
            position += left_in_block
            continue
        length = int.from_bytes(data[position + 4 : position + 6], "little")
        kind = data[position + 6]
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL/FIRST start a record
        if kind in (1, 4):  # FULL or LAST ends it
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records
