"""actors._util: bounded id memory, validated settings, and the worker thread that owns blocking calls."""

from __future__ import annotations

import queue
import threading

import pytest

from actors._util import BoundedIdSet, WorkerThread, config_int, config_seconds, config_seconds_ns

pytestmark = pytest.mark.timeout(30)
T = 5.0


def test_bounded_id_set_forgets_the_oldest_and_reports_duplicates():
    ids: BoundedIdSet[str] = BoundedIdSet(3)
    assert [ids.add(k) for k in ("a", "b", "a", "c", "d")] == [True, True, False, True, True]
    assert list(ids) == ["b", "c", "d"] and len(ids) == 3
    assert "a" not in ids and ids.add("a")  # forgotten, so new again
    assert list(ids) == ["c", "d", "a"]
    tuples: BoundedIdSet[tuple[str, int]] = BoundedIdSet(1)
    assert tuples.add(("w", 1)) and not tuples.add(("w", 1))
    with pytest.raises(ValueError):
        BoundedIdSet(0)


@pytest.mark.parametrize("value", [0, -1, "5", True, None, float("nan"), float("inf")])
def test_config_seconds_refuses_what_is_not_a_positive_duration(value):
    with pytest.raises(ValueError, match="status_interval_s"):
        config_seconds({"status_interval_s": value}, "status_interval_s", 1.0)


def test_config_values_defaults_and_conversions():
    assert config_seconds({}, "x_s", 2.5) == 2.5
    assert config_seconds_ns({"x_s": 0.25}, "x_s", 1) == 250_000_000
    assert config_seconds_ns({"x_s": 0}, "x_s", 1, allow_zero=True) == 0
    assert config_int({"n": 7}, "n", 1) == 7 and config_int({}, "n", 0, minimum=0) == 0
    for bad in (0, 1.5, True, "3"):
        with pytest.raises(ValueError, match="n must be an integer >= 1"):
            config_int({"n": bad}, "n", 1)


class Resource:
    def __init__(self, fail_close: bool = False) -> None:
        self.closed = 0
        self.fail_close = fail_close

    def close(self) -> None:
        self.closed += 1
        if self.fail_close:
            raise OSError("close failed")


def _worker(make, name="util-worker"):
    out: queue.SimpleQueue = queue.SimpleQueue()
    worker = WorkerThread(make, out.put, name, label="thing")
    worker.start()
    return worker, out


def test_jobs_run_in_order_on_the_thread_and_errors_are_answers():
    threads = []
    resource = Resource()
    worker, out = _worker(lambda: resource)
    try:
        worker.submit(lambda r: threads.append(threading.current_thread().name) or "one", lambda res, err: (res, err))
        worker.submit(lambda r: 1 / 0, lambda res, err: (res, err))
        worker.submit(lambda r: r, lambda res, err: (res, err))
        assert out.get(timeout=T) == ("one", "")
        assert out.get(timeout=T) == (None, "ZeroDivisionError: division by zero")
        assert out.get(timeout=T) == (resource, "")  # one resource for every job
        assert threads == ["util-worker"]
    finally:
        assert worker.stop(T)
    assert resource.closed == 1


def test_a_resource_that_cannot_be_built_is_reported_and_retried():
    made = []

    def make():
        made.append(1)
        if len(made) == 1:
            raise ConnectionError("no route")
        return Resource()

    worker, out = _worker(make)
    try:
        worker.submit(lambda r: "never", lambda res, err: (res, err))
        worker.submit(lambda r: "second", lambda res, err: (res, err))
        assert out.get(timeout=T) == (None, "thing unavailable: ConnectionError: no route")
        assert out.get(timeout=T) == ("second", "")
        assert len(made) == 2
    finally:
        assert worker.stop(T)


def test_a_failing_delivery_or_close_does_not_kill_the_thread():
    resource = Resource(fail_close=True)
    answers: queue.SimpleQueue = queue.SimpleQueue()
    calls = []

    def deliver(msg):
        calls.append(msg)
        if len(calls) == 1:
            raise RuntimeError("actor gone")
        answers.put(msg)

    worker = WorkerThread(lambda: resource, deliver, "util-worker")
    worker.start()
    worker.submit(lambda r: "lost", lambda res, err: res)
    worker.submit(lambda r: "kept", lambda res, err: res)
    assert answers.get(timeout=T) == "kept"
    assert worker.stop(T)  # the close error is logged, the thread still ends
    assert resource.closed == 1 and calls == ["lost", "kept"]


def test_stop_reports_a_thread_stuck_in_a_job():
    release = threading.Event()
    worker, out = _worker(lambda: Resource())
    worker.submit(lambda r: release.wait(T), lambda res, err: res)
    try:
        assert worker.stop(0.05) is False
    finally:
        release.set()
    assert out.get(timeout=T) is True
    assert worker.stop(T) is True
