"""Requests that arrive together share one forward pass.

Each request's image is decoded and prepared in the web server's thread pool, then queued here.
A consumer per model and option set takes the first waiting image, waits at most `max_wait_ms`
for more (up to `max_batch`), and runs the Predictor on all of them in the one inference thread,
so forward passes never compete for the cores (or the GPU) while the next requests are being
decoded. The queue is bounded: past `max_queue` waiting images a request is refused at once
(HTTP 503) instead of waiting without limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from seglab.errors import ConfigError


class Busy(Exception):
    """The queue is full; the client should retry later."""


@dataclass(frozen=True)
class BatchOptions:
    max_batch: int = 8  # images per forward pass
    max_wait_ms: float = 5.0  # how long the first image of a batch waits for company
    max_queue: int = 64  # images waiting, all models together, before requests are refused

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ConfigError(f"max_batch={self.max_batch}: give at least 1")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms={self.max_wait_ms}: give 0 or more milliseconds")
        if self.max_queue < 1:
            raise ConfigError(f"max_queue={self.max_queue}: give at least 1")


Work = Callable[[list[Any]], list[Any]]  # a batch of items -> one result per item


class Batcher:
    """`await batcher.submit(key, work, item)` -> `work`'s result for `item`, computed together
    with the other items of the same `key` that arrived within the wait."""

    def __init__(self, options: BatchOptions):
        self.options = options
        self._queues: dict[Hashable, asyncio.Queue] = {}
        self._consumers: list[asyncio.Task] = []
        self._waiting = 0
        self._inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seglab-infer")
        self.batches: list[int] = []  # the size of every batch run (the tests and /health read it)

    async def submit(self, key: Hashable, work: Work, item: Any) -> Any:
        if self._waiting >= self.options.max_queue:
            raise Busy(f"{self._waiting} images are waiting (max_queue={self.options.max_queue})")
        future = asyncio.get_running_loop().create_future()
        self._queue(key, work).put_nowait((item, future))
        self._waiting += 1
        return await future

    def _queue(self, key: Hashable, work: Work) -> asyncio.Queue:
        if key not in self._queues:
            self._queues[key] = asyncio.Queue()
            self._consumers.append(asyncio.create_task(self._consume(self._queues[key], work)))
        return self._queues[key]

    async def _consume(self, queue: asyncio.Queue, work: Work) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.options.max_wait_ms / 1000
            while len(batch) < self.options.max_batch:
                if queue.empty():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(queue.get(), remaining))
                    except asyncio.TimeoutError:
                        break
                else:
                    batch.append(queue.get_nowait())
            self._waiting -= len(batch)
            items = [item for item, _ in batch]
            try:
                results = await loop.run_in_executor(self._inference, work, items)
            except Exception as err:  # one bad batch fails its requests, not the server
                results = [err] * len(batch)
            self.batches.append(len(batch))
            for (_, future), result in zip(batch, results, strict=True):
                if future.cancelled():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def close(self) -> None:
        for task in self._consumers:
            task.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)
        self._inference.shutdown(wait=True)
