"""Small pieces several actors share: bounded id memory, validated settings, and the worker thread that
owns an actor's blocking calls (handlers never block; a REST or venue call runs here and comes back as a
message)."""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from .base import error_text

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000

K = TypeVar("K", bound=Hashable)


def config_seconds(config: Mapping[str, Any], key: str, default: float, *, allow_zero: bool = False) -> float:
    """A duration setting in seconds: a real number > 0 (or >= 0 with ``allow_zero``), else ValueError."""
    value = config.get(key, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # not NaN
    if not ok or not (value >= 0 if allow_zero else value > 0) or value == float("inf"):
        raise ValueError(f"{key} must be a {'non-negative' if allow_zero else 'positive'} number of seconds, "
                         f"got {value!r}")
    return float(value)


def config_seconds_ns(config: Mapping[str, Any], key: str, default: float, *, allow_zero: bool = False) -> int:
    """``config_seconds`` in integer nanoseconds (actors compare against ``Tick.now_mono_ns``)."""
    return int(config_seconds(config, key, default, allow_zero=allow_zero) * NS_PER_S)


def config_int(config: Mapping[str, Any], key: str, default: int, minimum: int = 1) -> int:
    """An integer setting >= ``minimum``, else ValueError."""
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


class BoundedIdSet(Generic[K]):
    """The last ``capacity`` ids seen (insertion order; the oldest is forgotten first)."""

    __slots__ = ("capacity", "_set", "_order")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._set: set[K] = set()
        self._order: collections.deque[K] = collections.deque()

    def add(self, key: K) -> bool:
        """Remember ``key``; False if it was already known (a duplicate)."""
        if key in self._set:
            return False
        self._set.add(key)
        self._order.append(key)
        if len(self._order) > self.capacity:
            self._set.discard(self._order.popleft())
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._set

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[K]:
        """Oldest first."""
        return iter(self._order)


_STOP = object()


class WorkerThread:
    """One thread, one resource, one job at a time: where an actor's blocking calls run.

    ``submit(job, done)`` queues ``job(resource)``; on the thread its result (or the escaped error text) is
    turned into a message by ``done(result, error)`` and handed to ``deliver`` (normally the owning actor's
    ``tell``). The resource (a REST client, an execution venue) is built on this thread (a requests session
    must stay on one thread) when the first job runs; if that fails the job is answered with
    ``"<label> unavailable: <error>"`` and the next job tries again. The resource is closed when the
    thread ends. Nothing raised by a job or by ``deliver`` kills the thread.
    """

    def __init__(
        self,
        make_resource: Callable[[], Any],
        deliver: Callable[[Any], None],
        name: str,
        label: str = "resource",
    ) -> None:
        self._make_resource = make_resource
        self._deliver = deliver
        self._label = label
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Callable[[Any], Any], done: Callable[[Any, str], Any]) -> None:
        self._queue.put((job, done))

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Ask the thread to finish its current job and exit; False if it did not within ``timeout_s``."""
        self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        resource = None
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    return
                job, done = item
                result, error = None, ""
                try:
                    if resource is None:
                        try:
                            resource = self._make_resource()
                        except Exception as exc:  # noqa: BLE001 - answered, and retried with the next job
                            error = f"{self._label} unavailable: {error_text(exc)}"
                            log.error("%s: %s", self._thread.name, error)
                    if resource is not None:
                        result = job(resource)
                except Exception as exc:  # noqa: BLE001 - any failure is an answer, never a dead thread
                    error = error_text(exc)
                try:
                    self._deliver(done(result, error))
                except Exception:  # noqa: BLE001 - the actor is gone (stopping): nothing to tell
                    log.debug("%s: could not deliver a result", self._thread.name)
        finally:
            if resource is not None:
                try:
                    resource.close()
                except Exception as exc:  # noqa: BLE001 - closing is best effort at the end of the thread
                    log.warning("%s: closing the %s failed: %s", self._thread.name, self._label, error_text(exc))
