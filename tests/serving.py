"""A real `seglab serve` process on a free loopback port, and a small HTTP client for it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np

SEGLAB = str(Path(sys.executable).with_name("seglab"))  # the console script pip installed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(options: list[str], env: dict[str, str] | None = None) -> Iterator[str]:
    """`seglab serve <options> port=<free>`; yields its URL once /health answers."""
    port = free_port()
    log_path = Path(tempfile.gettempdir()) / f"seglab-serve-{port}.log"
    with open(log_path, "w+") as log:
        process = subprocess.Popen(
            [SEGLAB, "serve", *options, f"port={port}"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )  # fmt: skip
        yield from _until_stopped(process, log, f"http://127.0.0.1:{port}")


def _until_stopped(process: subprocess.Popen, log: Any, url: str) -> Iterator[str]:
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"seglab serve exited ({process.returncode}):\n{log.read()}")
            try:
                if get_json(f"{url}/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("seglab serve did not answer /health in 180 s")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def request(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None, method: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body); an HTTP error status is returned."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method or None)
    try:
        with urllib.request.urlopen(req, timeout=120) as response:
            return response.status, _lower(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, _lower(err.headers), err.read()


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def get_json(url: str) -> tuple[int, dict]:
    status, _, body = request(url)
    return status, json.loads(body)


def post_image(url: str, data: bytes, **params: str) -> tuple[int, dict[str, str], bytes]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return request(f"{url}/predict?{query}", data, {"Content-Type": "application/octet-stream"})


def decode_png(body: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
