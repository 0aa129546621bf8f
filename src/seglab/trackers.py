"""What seglab adds to Lightning's TensorBoard and MLflow loggers (`logger=tensorboard`,
`logger=mlflow`, combinable with csv and wandb).

Everything tracker-specific lives here, so `training.run` only hands over the files a run is
judged and reused by (`log_run_files`), `sweep.run_job` only names the sweep
(`tag_mlflow_sweep`), and conf/train.yaml registers `PrepareMLflowStore` for multiruns. mlflow
and tensorboard are imported only when those loggers are used: `seglab[mlflow]` and
`seglab[tensorboard]` are optional.
"""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import MLFlowLogger as _LightningMLFlowLogger
from lightning.pytorch.loggers import TensorBoardLogger as _LightningTensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, open_dict


def _new_params(seen: dict[str, str], params: dict[str, Any] | Namespace) -> dict[str, Any]:
    """The flattened `params` (`model/arch`) not logged before; they join `seen`.

    `build` logs the resolved config first; Lightning then logs the module's hyper-parameters at
    every fit, validate and test, where a recipe (`loss.class_weights: enet`) has become the
    numbers. MLflow refuses to change a parameter, so a key seen with another value is logged
    as `resolved/<key>`, and keys seen with the same value are not sent again.
    """
    new = {}
    for key, value in _flatten_dict(_convert_params(params)).items():
        text = str(value)[:250]  # what Lightning's MLflow logger sends
        name = f"resolved/{key}" if key in seen and seen[key] != text else key
        if seen.get(name) != text:
            seen[name] = text
            new[name] = value
    return new


class MLFlowLogger(_LightningMLFlowLogger):
    """Lightning's MLflow logger, logging each parameter once (see `_new_params`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seen_params: dict[str, str] = {}

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        new = _new_params(self._seen_params, params)
        if new:
            super().log_hyperparams(new)


class TensorBoardLogger(_LightningTensorBoardLogger):
    """Lightning's TensorBoard logger, with the resolved config in TensorBoard's HParams tab next
    to the metrics runs are compared by (`hparam_metrics`, by default `optimized_metric`).

    Lightning writes the HParams summary only together with metric values, and without them a
    placeholder `hp_metric = -1` that never changes. The HParams tab needs only the metrics'
    names: it shows the last value of the scalar with that name logged in the same run, so the
    summary is written with the names and no placeholder value is logged. TensorBoard reads
    only the first HParams summary of a run, so it is written once, from the first call: the
    resolved config `build` logs. Lightning's later calls (the module's hyper-parameters, at
    every fit, validate and test) only reach hparams.yaml.
    """

    def __init__(self, *args: Any, hparam_metrics: Sequence[str] = (), **kwargs: Any) -> None:
        kwargs["default_hp_metric"] = False
        super().__init__(*args, **kwargs)
        self._hparam_metrics = list(hparam_metrics)
        self._hparams_written = False

    @rank_zero_only
    def log_hyperparams(
        self,
        params: dict[str, Any] | Namespace,
        metrics: dict[str, Any] | None = None,
        step: int | None = None,
    ) -> None:
        super().log_hyperparams(params, metrics, step)  # keeps them for hparams.yaml
        if metrics is not None or not self._hparam_metrics or self._hparams_written:
            return
        from torch.utils.tensorboard.summary import hparams

        # Flattened as Lightning flattens them for every logger: `model/arch`.
        flat = self._sanitize_params(_flatten_dict(_convert_params(params)))
        summaries = hparams(flat, dict.fromkeys(self._hparam_metrics, 0.0))
        writer = self.experiment._get_file_writer()
        for summary in summaries:  # experiment, session start, session end
            writer.add_summary(summary, step)
        self._hparams_written = True


def log_run_files(loggers: Iterable[Logger], files: Iterable[str | Path | None]) -> None:
    """Upload `files` as artifacts of each MLflow run among `loggers` (other loggers: nothing).

    Called once a run has its best checkpoint, metrics.json and report: the files a team opens
    from the MLflow UI, or downloads to predict with, without access to the training machine's
    disk. Checkpoints go under `checkpoints/`, everything else at the top. Paths that are empty
    or name no file (no test split: no confusion_test.png) are skipped.
    """
    mlflow_loggers = [logger for logger in loggers if isinstance(logger, _LightningMLFlowLogger)]
    if not mlflow_loggers:
        return
    existing = [Path(f) for f in files if f and Path(f).is_file()]
    for logger in mlflow_loggers:
        for path in existing:
            folder = "checkpoints" if path.suffix == ".ckpt" else None
            logger.experiment.log_artifact(logger.run_id, str(path), artifact_path=folder)


def tag_mlflow_sweep(cfg: DictConfig, sweep_name: str, job_num: int) -> None:
    """Tag an MLflow run with its sweep (`tags.sweep = "<sweep>"` filters a sweep's runs in the
    UI) and, unless `logger.mlflow.run_name` is set, name it `<sweep>/<job number>`.

    The runs stay in the configured experiment: one experiment per sweep would scatter the
    runs a team compares across sweeps.
    """
    mlflow_cfg = (cfg.get("logger") or {}).get("mlflow")
    if mlflow_cfg is None:
        return
    with open_dict(cfg):
        mlflow_cfg.tags = {**(mlflow_cfg.get("tags") or {}), "sweep": sweep_name}
        if not mlflow_cfg.get("run_name"):
            mlflow_cfg.run_name = f"{sweep_name}/{job_num}"


class PrepareMLflowStore(Callback):
    """Creates the MLflow store's tables and experiment before a multirun's jobs start.

    Jobs that start at once (submitit, locally or on SLURM) would otherwise each find an empty
    SQLite file or no experiment, and race to create them: one wins, the others fail. Done once
    here, in the process that launches the sweep, every job finds both. Registered under
    `hydra.callbacks` in conf/train.yaml; without `logger=mlflow` it does nothing.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        mlflow_cfg = (config.get("logger") or {}).get("mlflow")
        if mlflow_cfg is None:
            return
        from mlflow import MlflowClient

        client = MlflowClient(mlflow_cfg.tracking_uri)
        if client.get_experiment_by_name(mlflow_cfg.experiment_name) is None:
            client.create_experiment(
                mlflow_cfg.experiment_name, artifact_location=mlflow_cfg.get("artifact_location")
            )
