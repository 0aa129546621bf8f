"""`logger=[tensorboard,mlflow]`: one real tiny run logs to both, read back with TensorBoard's
event reader and MLflow's client; and the MLflow store is checked before any data is read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from seglab.errors import ConfigError
from seglab.training import run
from tests.helpers import TINY, compose_train

DEFAULT_STORE = "sqlite:///mlflow.db"  # conf/logger/mlflow.yaml's default, MLflow's own


@pytest.fixture(scope="module")
def tracked(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One epoch with both loggers and their default settings, started in an empty folder, as
    `python train.py logger=[tensorboard,mlflow]` would be there."""
    workdir = tmp_path_factory.mktemp("tracked")
    run_dir = workdir / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)  # the default store and artifacts are relative to it
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        cfg = compose_train(
            [*TINY, f"data.path={tiny_export}", f"run_dir={run_dir}", "trainer.max_epochs=1",
             "logger=[tensorboard,mlflow]", "loss.class_weights=enet"]  # a recipe -> numbers
        )  # fmt: skip
        assert cfg.logger.mlflow.tracking_uri == DEFAULT_STORE
        run(cfg)
    return {
        "cfg": cfg,
        "run_dir": run_dir,
        "metrics": json.loads((run_dir / "metrics.json").read_text()),
        "store": f"sqlite:///{workdir / 'mlflow.db'}",
        "workdir": workdir,
    }


def class_iou_keys(metrics: dict) -> set[str]:
    keys = {k for k in metrics if k.startswith("val/iou/")}
    assert len(keys) >= 2  # the tiny export's classes, one key each
    return keys


def test_tensorboard_has_the_curves_and_the_config(tracked: dict):
    events = EventAccumulator(str(tracked["run_dir"] / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    expected = {"train/loss_step", "train/loss_epoch", "val/mIoU", "val/loss", "test/mIoU"}
    assert expected | class_iou_keys(tracked["metrics"]) <= scalars
    assert "hp_metric" not in scalars  # no placeholder curve
    # The last val/mIoU is the best checkpoint's final validation, as in metrics.json.
    assert events.Scalars("val/mIoU")[-1].value == pytest.approx(tracked["metrics"]["val/mIoU"])

    plugin = {
        tag: HParamsPluginData.FromString(content)
        for tag, content in events.PluginTagToContent("hparams").items()
    }
    start = next(p.session_start_info for p in plugin.values() if p.HasField("session_start_info"))
    experiment = next(p.experiment for p in plugin.values() if p.HasField("experiment"))
    cfg = tracked["cfg"]
    assert start.hparams["model/arch"].string_value == cfg.model.arch
    assert start.hparams["optimizer/lr"].number_value == pytest.approx(cfg.optimizer.lr)
    assert start.hparams["data/batch_size"].number_value == cfg.data.batch_size
    # TensorBoard shows the first summary: the config, not the module's later hyper-parameters.
    assert "seglab_version" not in start.hparams
    assert [m.name.tag for m in experiment.metric_infos] == ["val/mIoU"]  # optimized_metric


def test_mlflow_has_the_curves_config_and_files(tracked: dict):
    client = MlflowClient(tracked["store"])
    experiment = client.get_experiment_by_name("seglab")
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    assert mlflow_run.info.status == "FINISHED"
    metrics, cfg = tracked["metrics"], tracked["cfg"]
    logged = mlflow_run.data.metrics
    assert {"train/loss_epoch", "val/mIoU", "val/loss", "test/mIoU"} | class_iou_keys(
        metrics
    ) <= set(logged)
    assert logged["val/mIoU"] == pytest.approx(metrics["val/mIoU"])
    assert mlflow_run.data.params["model/arch"] == cfg.model.arch
    params = mlflow_run.data.params
    assert float(params["optimizer/lr"]) == cfg.optimizer.lr
    # The recipe as configured; the module's numbers beside it (MLflow refuses a changed value).
    assert params["loss/class_weights"] == cfg.loss.class_weights == "enet"
    assert json.loads(params["resolved/loss/class_weights"])[0] > 0

    # Artifacts: in ./mlruns beside the store, the best checkpoint under checkpoints/.
    artifact_dir = Path(mlflow_run.info.artifact_uri.removeprefix("file://"))
    assert artifact_dir.is_relative_to(tracked["workdir"] / "mlruns")
    best = Path(metrics["best_ckpt"])
    listed = {a.path: a.file_size for a in client.list_artifacts(mlflow_run.info.run_id)}
    listed.update(
        {a.path: a.file_size for a in client.list_artifacts(mlflow_run.info.run_id, "checkpoints")}
    )
    assert listed[f"checkpoints/{best.name}"] == best.stat().st_size
    assert "confusion_val.png" in listed and "confusion_test.png" in listed
    download = tracked["workdir"] / "download"
    download.mkdir()
    local = client.download_artifacts(mlflow_run.info.run_id, "metrics.json", str(download))
    assert json.loads(Path(local).read_text()) == metrics
    assert (tracked["run_dir"] / "report.html").is_file() and "report.html" in listed


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("mlflow.db", "expected a URI"),
        ("sqlite:///no/such/folder/mlflow.db", "no such folder"),
    ],
)
def test_mlflow_store_is_checked_before_data_is_read(tmp_path: Path, uri: str, problem: str):
    cfg = compose_train(
        [*TINY, f"data.path={tmp_path / 'absent'}", f"run_dir={tmp_path / 'run'}",
         "logger=mlflow", f"logger.mlflow.tracking_uri={uri}"]
    )  # fmt: skip
    with pytest.raises(ConfigError, match=rf"logger\.mlflow\.tracking_uri: {problem}"):
        run(cfg)
