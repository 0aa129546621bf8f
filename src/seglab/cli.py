"""The `seglab` console script: utilities that sit beside train.py and predict.py."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from omegaconf import OmegaConf

from seglab.console import exit_on_user_error
from seglab.data.errors import DatasetError
from seglab.demo import DEMO_SPLITS, write_demo_export
from seglab.prediction.onnx import OPSET


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seglab", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="write the demo CVAT 'Segmentation Mask 1.1' export")
    demo.add_argument("path", help="folder to create (must not exist)")
    demo.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    for split, count in DEMO_SPLITS.items():
        demo.add_argument(
            f"--{split}", type=int, default=count, help=f"{split} images (default {count})"
        )

    inspect = commands.add_parser(
        "inspect", help="read a dataset as training would and report classes, splits and problems"
    )
    inspect.add_argument("path", help="dataset folder or .zip")
    inspect.add_argument(
        "options", nargs="*", metavar="KEY=VALUE",
        help="data options as in training, e.g. ignore_classes=[void] missing_masks=background",
    )  # fmt: skip
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")

    onnx = commands.add_parser(
        "export", help="write a checkpoint as an ONNX model, checked against PyTorch"
    )
    onnx.add_argument(
        "options", nargs="+", metavar="KEY=VALUE",
        help=f"ckpt=PATH output=model.onnx [opset={OPSET}] [tolerance=1e-3]",
    )  # fmt: skip

    serve = commands.add_parser(
        "serve", help="serve models over HTTP: POST /predict, GET /models, the page at /"
    )
    serve.add_argument(
        "options", nargs="*", metavar="KEY=VALUE",
        help="ckpt=PATH (a checkpoint or a folder of them) or model=MODEL.onnx, "
        "[host=127.0.0.1] [port=8000] [mode=auto] [flip=false] [max_batch=8] "
        "[max_wait_ms=5] [max_upload_mb=32] [device=auto]",
    )  # fmt: skip

    rank = commands.add_parser(
        "rank", help="order unlabelled frames by how unsure the model is: which to label next"
    )
    rank.add_argument(
        "options", nargs="*", metavar="KEY=VALUE",
        help="ckpt=PATH input=FRAMES [output=ranking.csv] [score=disagreement|margin|entropy] "
        "[top=N] [copy_to=DIR] [labels=EXPORT] and predict.py's keys (mode=, tta=, ...)",
    )  # fmt: skip

    report = commands.add_parser(
        "report", help="(re)draw report.html of a run directory, or sweep_report.html of a sweep"
    )
    report.add_argument("path", help="a run directory (train.py's) or a multirun's sweep directory")

    cache = commands.add_parser(
        "cache", help="list the unpacked .zip datasets in $SEGLAB_CACHE with sizes, or clear them"
    )
    cache.add_argument(
        "action", nargs="?", choices=("list", "clear"), default="list",
        help="list (default) or clear: remove every unpacked archive; each .zip is unpacked "
        "again when next used",
    )  # fmt: skip
    args = parser.parse_args(argv)

    if args.command == "demo":
        splits = {split: getattr(args, split) for split in DEMO_SPLITS}
        path = write_demo_export(args.path, size=args.size, seed=args.seed, splits=splits)
        print(f"Wrote demo CVAT export ({sum(splits.values())} images) to {path}")
        return 0
    if args.command == "export":
        return _onnx(args.options)
    if args.command == "cache":
        return _cache(args.action)
    if args.command == "rank":
        return _rank(args.options)
    if args.command == "report":
        return _report(args.path)
    if args.command == "serve":
        from seglab.serving.server import serve

        return serve(args.options)
    return _inspect(args.path, args.options, args.json)


def _onnx(options: list[str]) -> int:
    """`seglab export ckpt=... output=model.onnx`: the command keeps its name; it writes ONNX."""
    from seglab.prediction.onnx import write_onnx

    given = OmegaConf.to_container(OmegaConf.from_dotlist(options))
    unknown = sorted(set(given) - {"ckpt", "output", "opset", "tolerance"})
    if unknown or "ckpt" not in given or "output" not in given:
        print(
            f"error: seglab export ckpt=PATH output=model.onnx [opset={OPSET}] [tolerance=1e-3]"
            + (f"; unknown key(s): {', '.join(unknown)}" if unknown else ""),
            file=sys.stderr,
        )
        return 2
    report = write_onnx(
        given["ckpt"],
        given["output"],
        opset=int(given.get("opset", OPSET)),
        tolerance=float(given.get("tolerance", 1e-3)),
    )
    for note in report.notes:
        print(f"[seglab] note: {note}")
    print(f"Wrote {report.path} (opset {report.opset}; dynamic batch"
          f"{', height and width' if report.dynamic_size else ''}). ONNX vs PyTorch:")  # fmt: skip
    print(report.table())
    return 0


def _rank(options: list[str]) -> int:
    """`seglab rank`: composed like predict.py (conf/predict/rank.yaml extends predict.yaml)."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import MissingMandatoryValue

    from seglab.errors import ConfigError
    from seglab.prediction.ranking import run_rank

    conf = Path(__file__).resolve().parents[2] / "conf" / "predict"
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose("rank", overrides=list(options))
        cfg.input  # noqa: B018 (the one key without a default)
    except MissingMandatoryValue:
        raise ConfigError(
            "seglab rank needs input=FRAMES (an image, folder, glob or list)"
        ) from None
    except HydraException as err:
        raise ConfigError(f"seglab rank: {str(err).splitlines()[0]}") from None
    run_rank(cfg)
    return 0


def _report(path: str) -> int:
    """`seglab report DIR`: a run directory gets report.html; a folder of job directories (a
    multirun) gets sweep_report.html, and each finished job its report.html where it lacks one."""
    from pathlib import Path

    from seglab.errors import MissingFileError
    from seglab.report import write_run_report, write_sweep_report
    from seglab.report.sweep_report import collect_jobs

    folder = Path(path)
    if not folder.is_dir():
        raise MissingFileError(f"{folder}: no such directory; give a run or sweep directory")
    if (folder / "metrics.json").is_file():
        print(f"Wrote {write_run_report(folder)}")
        return 0
    jobs = collect_jobs(folder)
    if not jobs:
        raise MissingFileError(
            f"{folder}: neither a run directory (no metrics.json) nor a sweep directory (no "
            "<job>/.hydra/overrides.yaml); give the folder train.py printed"
        )
    for job in jobs:
        if job["status"] == "ok" and not (job["dir"] / "report.html").is_file():
            write_run_report(job["dir"])
    print(f"Wrote {write_sweep_report(folder)}")
    return 0


def _inspect(path: str, options: list[str], as_json: bool) -> int:
    from seglab.data.inspect import format_summary, inspect_dataset, to_json

    overrides = OmegaConf.to_container(OmegaConf.from_dotlist(options))
    try:
        summary = inspect_dataset(path, overrides)  # type: ignore[arg-type]
    except DatasetError as err:  # the dataset cannot even be read: nothing to summarise
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(to_json(summary) if as_json else format_summary(summary))
    return 1 if summary["problems"] else 0


def _cache(action: str) -> int:
    """`seglab cache [list|clear]`: the extraction cache grows by one folder per archive version
    and is never pruned behind a run's back, so the user sees and frees it here."""
    from seglab.data.cache import archives_dir, clear_cache, format_size, list_cache

    if action == "clear":
        count, size = clear_cache()
        print(f"Removed {count} folder(s), {format_size(size)}, from {archives_dir()}")
        return 0
    entries = list_cache()
    print(f"{archives_dir()}: {len(entries)} unpacked archive(s), "
          f"{format_size(sum(e.size for e in entries))}")  # fmt: skip
    for entry in entries:
        origin = "unfinished extraction" if entry.partial else entry.archive or "source unknown"
        print(f"  {format_size(entry.size):>10}  {entry.path.name}  ({origin})")
    if entries:
        print("Free the space with: seglab cache clear")
    return 0


def entry() -> int:
    """The `seglab` console script: `main`, with a user's error printed as one line (exit 2)
    instead of a traceback (`HYDRA_FULL_ERROR=1` shows it)."""
    with exit_on_user_error():
        return main()


if __name__ == "__main__":
    raise SystemExit(entry())
