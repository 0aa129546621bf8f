"""Sweeps through hydra-submitit-launcher: a real 2-job sweep with the local submitit executor,
and `hydra/launcher=slurm` composed (no SLURM cluster here) and checked against Lightning's own
SLURM environment detection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from lightning_utilities.core.rank_zero import rank_zero_only as utils_rank_zero_only
from mlflow import MlflowClient

from seglab.precision import resolve_precision
from tests.helpers import compose_train
from tests.test_sweeps import summary, sweep


def test_submitit_local_sweep_runs_each_job_and_summarises(tiny_export: Path, tmp_path: Path):
    # A new SQLite store the two jobs would race to create; PrepareMLflowStore creates it first.
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow = ["logger=mlflow", f"logger.mlflow.tracking_uri={store}",
              f"logger.mlflow.artifact_location={tmp_path / 'mlruns'}"]  # fmt: skip
    sweep(tiny_export, tmp_path, "-m", "hydra/launcher=submitit_local",
          "optimizer.lr=0.001,0.003", *mlflow)  # fmt: skip
    rows = summary(tmp_path)  # SweepSummary fired in the launching process
    assert [(r["job"], r["status"], r["overrides"]) for r in rows] == [
        ("0", "ok", "optimizer.lr=0.001"),
        ("1", "ok", "optimizer.lr=0.003"),
    ]
    for job in ("0", "1"):
        metrics = json.loads((tmp_path / job / "metrics.json").read_text())
        assert metrics["val/mIoU"] >= 0 and Path(metrics["best_ckpt"]).is_file()
    # Each job ran in its own process started by submitit, which kept its logs.
    assert len(list((tmp_path / ".submitit").glob("*/*_log.out"))) == 2

    # The sweep's MLflow runs: tagged with the sweep, named after it and their job number.
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("seglab").experiment_id])
    name = f"train-{tmp_path.parent.name}-{tmp_path.name}"
    assert sorted(r.info.run_name for r in runs) == [f"{name}/0", f"{name}/1"]
    assert {r.data.tags["sweep"] for r in runs} == {name}
    assert sorted(float(r.data.params["optimizer/lr"]) for r in runs) == [1e-3, 3e-3]
    uris = [Path(r.info.artifact_uri.removeprefix("file://")) for r in runs]
    assert all(uri.is_relative_to(tmp_path / "mlruns") for uri in uris)


def test_slurm_launcher_follows_the_trainer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    cfg = compose_train(
        ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
         "trainer.accelerator=cpu", "hydra.launcher.partition=gpu", f"run_dir={tmp_path}"],
        return_hydra_config=True,
    )  # fmt: skip
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.nodes) == ("gpu", 2)
    assert launcher.tasks_per_node == launcher.gpus_per_node == 4
    assert (launcher.cpus_per_task, launcher.mem_gb, launcher.timeout_min) == (8, 64, 240)
    assert launcher.submitit_folder.startswith(cfg.hydra.sweep.dir)

    # What srun sets for the 7th of the 8 tasks such a job starts; Lightning's SLURMEnvironment
    # must find them consistent with the trainer (it raises otherwise) and take its rank.
    srun = {"SLURM_NTASKS": 8, "SLURM_NTASKS_PER_NODE": launcher.tasks_per_node,
            "SLURM_NNODES": launcher.nodes, "SLURM_PROCID": 6, "SLURM_LOCALID": 2,
            "SLURM_NODEID": 1, "SLURM_JOB_NAME": launcher.name, "SLURM_JOB_ID": 1234,
            "SLURM_NODELIST": "node[01-02]", "MASTER_PORT": 12910}  # fmt: skip
    for key, value in srun.items():
        monkeypatch.setenv(key, str(value))
    for function in (rank_zero_only, utils_rank_zero_only):  # the trainer makes this process
        monkeypatch.setattr(function, "rank", function.rank)  # rank 6 everywhere: restored after
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    trainer = instantiate(cfg.trainer, _convert_="object", precision=precision)
    environment, launcher = trainer.strategy.cluster_environment, trainer.strategy.launcher
    assert isinstance(environment, SLURMEnvironment)
    # The check Lightning's launcher runs as fit starts (ValueError on a mismatch).
    environment.validate_settings(num_devices=launcher.num_processes, num_nodes=launcher.num_nodes)
    assert (trainer.world_size, trainer.global_rank, trainer.node_rank) == (8, 6, 1)

    # A single-device trainer: one task on one node, one GPU.
    single = compose_train(["hydra/launcher=slurm"], return_hydra_config=True).hydra.launcher
    assert (single.nodes, single.tasks_per_node, single.gpus_per_node) == (1, 1, 1)
