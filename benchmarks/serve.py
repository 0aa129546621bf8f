"""`seglab serve` under load: concurrent clients on loopback against the bare forward pass.

The question it answers: with N clients posting images as fast as the server answers, how
close does the server come to the network's own throughput at the same batch size, and at what
latency? Paths, interleaved:

- `bare forward (torch)`  the network on pre-made, normalised batches of `--batch` images of
                          the training size; no HTTP, decoding or encoding (the baseline);
- `serve, 1 client`       one client posting JPEG files one after the other (no batching);
- `serve MODE, N clients` N clients at once (`/predict?mode=MODE`, each of resize, whole and
                          slide): the server batches them (max_batch=`--batch`);
- `litserve resize, N clients` (`--litserve`): the same checkpoint behind LitServe, Lightning's
                          serving library (`litserve_app.py`; needs `pip install litserve`);
- `bare forward (onnx)`, `serve onnx MODE, N clients`   the same model exported to ONNX and
                          served by the same server (`ckpt=` a folder holding both files).

Each row is also given against the bare forward of its own backend (torch or onnx).

Each client keeps one HTTP connection open and sends the JPEG file of a demo image of `--size`
pixels (the model's training size) for `--seconds`; the answer is the class-index PNG. The
server is a real `seglab serve` process; its peak resident memory (VmHWM) is read at the end.

    python benchmarks/serve.py                 # U-Net ResNet-34, 512 px, 8 clients, batch 8
    python benchmarks/serve.py --quick         # ~1 min on 2 cores
    python benchmarks/serve.py --no-onnx --modes resize   # the checkpoint in resize mode only

Prints a markdown table and writes `benchmarks/results/serve.json`.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from seglab.demo import write_demo_export
from seglab.prediction import load_checkpoint
from seglab.prediction.onnx import open_onnx, write_onnx

from harness import interleave, markdown, save, summarize
from inference import bare_forward, write_checkpoint

BASELINE = "bare forward (torch)"
ONNX_BASELINE = "bare forward (onnx)"
SEGLAB = str(Path(sys.executable).with_name("seglab"))


def start_server(models: Path, port: int, batch: int) -> subprocess.Popen:
    """`seglab serve ckpt=FOLDER`: every model file in `models` served by one process."""
    command = [SEGLAB, "serve", f"ckpt={models}", f"port={port}", "device=cpu",
               f"max_batch={batch}", f"batch_size={batch}", "max_wait_ms=10"]  # fmt: skip
    return wait_until_up(command, port)


def start_litserve(ckpt: Path, port: int, batch: int) -> subprocess.Popen:
    """The same checkpoint behind LitServe (`litserve_app.py`), for `--litserve`."""
    app = Path(__file__).with_name("litserve_app.py")
    return wait_until_up([sys.executable, str(app), str(ckpt), str(port), str(batch)], port)


def wait_until_up(command: list[str], port: int) -> subprocess.Popen:
    """Start `command` and return once it answers `GET /health` with 200."""
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"{command[:2]} exited: {server.stderr.read()}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.3)
    server.terminate()
    raise TimeoutError(f"{command[:2]} did not start in 300 s")


def served_names(port: int) -> dict[str, str]:
    """File name -> the name `/predict?model=` takes (the stem, or the file name where two
    files share a stem), from the server's `GET /models`."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/models")
    listed = json.loads(connection.getresponse().read())["models"]
    return {model["file"]: model["name"] for model in listed}


def clients(
    port: int,
    count: int,
    bodies: list[bytes],
    seconds: float,
    latencies: list[float],
    target: str,
    content_type: str = "image/jpeg",
) -> Callable[[], float]:
    """A measurement: `count` threads posting `bodies` to `target` (e.g. `/predict?mode=whole`)
    for `seconds`; returns images/s and appends each request's latency (s) to `latencies`."""

    def client(done: list[int], stop: float) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        i = 0
        while time.perf_counter() < stop:
            body = bodies[i % len(bodies)]
            start = time.perf_counter()
            connection.request("POST", target, body, {"Content-Type": content_type})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"POST /predict answered {response.status}")
            latencies.append(time.perf_counter() - start)
            done.append(1)
            i += 1
        connection.close()

    def guarded(done: list[int], stop: float, errors: list[BaseException]) -> None:
        try:
            client(done, stop)
        except BaseException as err:  # raised by measure(): a failed request is no figure
            errors.append(err)

    def measure() -> float:
        done: list[int] = []
        errors: list[BaseException] = []
        start = time.perf_counter()
        threads = [
            threading.Thread(target=guarded, args=(done, start + seconds, errors))
            for _ in range(count)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise RuntimeError(f"a client failed: {errors[0]}") from errors[0]
        return len(done) / (time.perf_counter() - start)

    return measure


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 px, short runs (< 1 min)")
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--size", type=int, help="image and training size (512; quick 64)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="max_batch and the baseline's batch")
    parser.add_argument("--seconds", type=float, help="per measurement (30; quick 3)")
    parser.add_argument("--repeats", type=int, help="interleaved repetitions (3; quick 1)")
    parser.add_argument("--port", type=int, help="loopback port (default: a free one)")
    parser.add_argument("--modes", nargs="+", default=["resize", "whole", "slide"])
    parser.add_argument("--no-onnx", action="store_true", help="leave out the ONNX paths")
    parser.add_argument(
        "--litserve", action="store_true", help="add LitServe (litserve_app.py), resize mode"
    )
    parser.add_argument("--output", type=Path, help="JSON file (default results/serve.json)")
    args = parser.parse_args()
    size = args.size or (64 if args.quick else 512)
    seconds = args.seconds or (3.0 if args.quick else 30.0)
    repeats = args.repeats or (1 if args.quick else 3)
    device = torch.device("cpu")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export = write_demo_export(tmp / "images", size=size, splits={"train": 16})
        images = [p.read_bytes() for p in sorted((export / "JPEGImages").glob("*.jpg"))]
        models = tmp / "models"
        models.mkdir()
        ckpt = write_checkpoint(models / "model.ckpt", args.arch, args.encoder, size)
        network, _ = load_checkpoint(ckpt, device)
        batches = [
            torch.randn(args.batch, 3, size, size).contiguous(memory_format=torch.channels_last)
            for _ in range(2)
        ]
        if not args.no_onnx:
            write_onnx(ckpt, models / "model.onnx")
        port = args.port or free_port()
        server = start_server(models, port, args.batch)
        others: list[subprocess.Popen] = []  # LitServe's server, with --litserve
        try:
            names = served_names(port)  # the server's name for each file
            paths = {BASELINE: bare_forward(network, batches, device, None)}
            latencies: dict[str, list[float]] = {}  # per path (s)

            def served(path: str, count: int, file: str, mode: str) -> None:
                latencies[path] = []
                target = f"/predict?model={names[file]}&mode={mode}"
                paths[path] = clients(port, count, images, seconds, latencies[path], target)

            served("serve, 1 client", 1, "model.ckpt", "resize")
            for mode in args.modes:
                served(f"serve {mode}, {args.clients} clients", args.clients, "model.ckpt", mode)
            if args.litserve:
                lit_port = free_port()
                others.append(start_litserve(ckpt, lit_port, args.batch))
                as_json = [json.dumps({"image": base64.b64encode(i).decode()}).encode()
                           for i in images]  # fmt: skip
                path = f"litserve resize, {args.clients} clients"
                latencies[path] = []
                paths[path] = clients(lit_port, args.clients, as_json, seconds, latencies[path],
                                      "/predict", "application/json")  # fmt: skip
            if not args.no_onnx:
                onnx_network, _, _ = open_onnx(models / "model.onnx", device)
                paths[ONNX_BASELINE] = bare_forward(onnx_network, batches, device, None)
                for mode in args.modes:
                    path = f"serve onnx {mode}, {args.clients} clients"
                    served(path, args.clients, "model.onnx", mode)
            runs = interleave(paths, repeats)
            peak = peak_rss_mib(server.pid)
        finally:
            for process in [server, *others]:
                process.terminate()
                process.wait(30)
    rows = summarize(runs, BASELINE)
    bare = {row["path"]: row["median_img_s"] for row in rows if row["path"].startswith("bare")}
    for row in rows:
        measured = latencies.get(row["path"])
        row["own_backend_ratio"] = round(
            row["median_img_s"] / bare[ONNX_BASELINE if "onnx" in row["path"] else BASELINE], 3
        )
        row["p50_ms"] = round(1000 * statistics.median(measured), 1) if measured else "–"
        row["p99_ms"] = round(1000 * percentile(measured, 0.99), 1) if measured else "–"
        seglab_serve = measured and not row["path"].startswith("litserve")  # the RSS measured
        row["server_peak_rss_mib"] = round(peak) if seglab_serve else "–"

    print(f"\nseglab serve, {args.arch} {args.encoder}, JPEG images of {size}x{size} (= the "
          f"training size), max_batch {args.batch}, {seconds:g} s per measurement, {repeats} "
          "interleaved repetitions, CPU\n")  # fmt: skip
    print(markdown(rows, BASELINE))
    print("\n| path | × the bare forward of its own backend | p50 latency (ms) | p99 latency "
          "(ms) | server peak RSS (MiB) |\n|---|---|---|---|---|")  # fmt: skip
    for row in rows:
        print(f"| {row['path']} | {row['own_backend_ratio']:.2f} | {row['p50_ms']} | "
              f"{row['p99_ms']} | {row['server_peak_rss_mib']} |")  # fmt: skip
    settings = {"arch": args.arch, "encoder": args.encoder, "size": size, "clients": args.clients,
                "batch": args.batch, "seconds": seconds, "repeats": repeats, "modes": args.modes,
                "onnx": not args.no_onnx, "litserve": args.litserve}  # fmt: skip
    save("serve", args.output, settings, rows)


if __name__ == "__main__":
    main()
