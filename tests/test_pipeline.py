"""predict.py's decode and write threads keep order and never swallow an error."""

from __future__ import annotations

import threading

import pytest

from seglab.prediction.pipeline import OrderedWriter, prefetched


def test_prefetched_yields_everything_in_order_from_another_thread():
    threads = []

    def batches():
        for i in range(50):
            threads.append(threading.current_thread().name)
            yield i

    assert list(prefetched(batches(), depth=2)) == list(range(50))
    assert set(threads) == {"seglab-decode"}


def test_prefetched_raises_the_producers_error_and_stops_early_without_hanging():
    def failing():
        yield 1
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in prefetched(failing()):
            got.append(item)
    assert got == [1]
    endless = prefetched(iter(range(10**9)), depth=1)
    assert next(endless) == 0
    endless.close()  # the consumer stops: the producer thread must end, not block forever


def test_ordered_writer_keeps_order_and_raises_a_failed_write():
    done = []
    writer = OrderedWriter(depth=3)
    for i in range(20):
        writer.submit(lambda i=i: done.append(i))
    writer.finish()
    assert done == list(range(20))

    def fail():
        raise OSError("no space left on device")

    writer = OrderedWriter()
    with pytest.raises(OSError, match="no space left"):  # at the next submit, or at finish
        writer.submit(fail)
        writer.submit(lambda: done.append("after"))
        writer.finish()
    writer.finish()  # idempotent after the error
