"""`seglab serve ckpt=PATH [host=127.0.0.1] [port=8000] [KEY=VALUE ...]`: load, then serve."""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from typing import Any

from omegaconf import OmegaConf

from seglab.console import say
from seglab.errors import ConfigError, MissingExtraError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeConfig:
    """Every key `seglab serve` takes, with its default."""

    ckpt: str | None = None  # a checkpoint, or a folder: every .ckpt and .onnx file in it
    model: str | None = None  # an .onnx file from `seglab export`
    host: str = "127.0.0.1"  # loopback only, unless told otherwise
    port: int = 8000
    device: str = "auto"
    amp: bool = False
    mode: str = "auto"  # the default of requests that give no mode= (auto: Predictor's)
    flip: bool = False  # the default of requests that give no flip=
    scales: tuple[float, ...] = (1.0,)
    overlap: float = 0.25
    batch_size: int | str = "auto"  # images (or tiles) per forward pass; auto: CPU 1, GPU 8
    max_batch: int = 8  # requests gathered into one batch
    max_wait_ms: float = 5.0  # how long a request waits for others to join its batch
    max_queue: int = 64  # waiting requests before the server answers 503
    max_upload_mb: float = 32.0

    @classmethod
    def from_dotlist(cls, options: list[str]) -> ServeConfig:
        given: dict[str, Any] = OmegaConf.to_container(OmegaConf.from_dotlist(options))  # type: ignore[assignment]
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ConfigError(
                f"seglab serve: unknown key(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        if "scales" in given:
            given["scales"] = tuple(float(s) for s in given["scales"])
        try:
            config = cls(**given)
            _check_types(config)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"seglab serve: {err}") from None
        return config


def _check_types(config: ServeConfig) -> None:
    for name in ("port", "batch_size", "max_batch", "max_queue"):
        value = getattr(config, name)
        if name == "batch_size" and value == "auto":
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name}={value!r}: give a whole number")
    for name in ("amp", "flip"):
        if not isinstance(getattr(config, name), bool):
            raise ValueError(f"{name}={getattr(config, name)!r}: give true or false")
    if config.max_upload_mb <= 0:
        raise ValueError(f"max_upload_mb={config.max_upload_mb}: give a positive size")


def build_app(config: ServeConfig) -> Any:
    """The FastAPI application for `config`, with every model loaded."""
    try:
        import fastapi  # noqa: F401
    except ImportError as err:
        raise MissingExtraError(
            'seglab serve needs FastAPI and uvicorn: pip install "seglab[serve]"'
        ) from err
    from seglab.serving.app import Limits, create_app
    from seglab.serving.batcher import BatchOptions
    from seglab.serving.models import load_models

    models = load_models(
        config.ckpt, config.model, config.device, config.amp,
        mode=config.mode, flip=config.flip, scales=config.scales,
        overlap=config.overlap, batch_size=config.batch_size,
    )  # fmt: skip
    batching = BatchOptions(config.max_batch, config.max_wait_ms, config.max_queue)
    limits = Limits(max_upload_bytes=int(config.max_upload_mb * 2**20))
    for name, served in models.items():
        info = served.predictor.info
        height, width = info.image_size
        say(f"model {name}: {served.path} ({served.backend}, {info.arch}, "
            f"{len(info.classes)} classes, input {height}x{width})")  # fmt: skip
    return create_app(models, batching, limits)


def serve(options: list[str]) -> int:
    config = ServeConfig.from_dotlist(options)
    app = build_app(config)
    import uvicorn

    if config.host not in LOOPBACK:
        say(f"host={config.host}: reachable from other machines; the API has no authentication")
    url = f"http://{'[' + config.host + ']' if ':' in config.host else config.host}:{config.port}"
    say(f"serving at {url}/ (the page), POST {url}/predict, GET {url}/models; Ctrl+C stops")
    sys.stdout.flush()
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
    return 0
