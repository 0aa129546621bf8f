"""Overlap predict.py's reading and writing with the forward pass, in threads.

On a CPU, predict.py decodes in its own process (loader processes would take the cores the
network needs), so without these the network waits while each batch is decoded and each image's
files are encoded and written. OpenCV decodes, resizes and encodes with the GIL released, so a
thread on either side of the forward pass keeps it fed (benchmarks/README.md, inference.py).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from queue import Empty, Queue
from typing import Any


def prefetched(batches: Iterable[Any], depth: int = 1) -> Iterator[Any]:
    """`batches`, produced by a background thread up to `depth` ahead: without loader
    processes (the default on the CPU), the next batch is decoded while the network runs on
    this one. OpenCV decodes and resizes with the GIL released."""
    queue: Queue[tuple[bool, Any]] = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                if stop.is_set():
                    return
                queue.put((True, batch))
            queue.put((False, None))
        except BaseException as err:  # handed to the consumer, raised there
            queue.put((False, err))

    thread = threading.Thread(target=produce, name="seglab-decode", daemon=True)
    thread.start()
    try:
        while True:
            more, item = queue.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                queue.get_nowait()
            except Empty:
                thread.join(timeout=0.05)


class OrderedWriter:
    """Runs each image's writing (files, scoring, the CVAT zip) in one background thread, in
    order, so that encoding and writing overlap the next forward pass; at most `depth` images
    wait. An error in a write is raised at the next `submit` or at `finish`."""

    def __init__(self, depth: int = 16):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seglab-write")
        self._pending: deque[Future] = deque()
        self._depth = depth

    def submit(self, work: Callable[[], None]) -> None:
        while len(self._pending) >= self._depth or (self._pending and self._pending[0].done()):
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(work))

    def finish(self) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:  # after an error the rest is not written; the error says why
            self._pending.clear()
            self._pool.shutdown(wait=True, cancel_futures=True)
