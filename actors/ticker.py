"""The ticker: a thread (not an actor) that tells ``Tick`` to a list of actors every interval.

Actors never read the clock for behaviour; they act on Ticks, so tests drive time by telling
Ticks by hand. Normally only the health supervisor is ticked; it forwards Ticks to its children.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pykka

from messages.control import Tick

log = logging.getLogger(__name__)


class Ticker:
    def __init__(
        self,
        refs: Iterable[pykka.ActorRef[Any]],
        interval_s: float = 0.1,
        *,
        mono_clock_ns: Callable[[], int] = time.monotonic_ns,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        name: str = "ticker",
    ) -> None:
        if not interval_s > 0:
            raise ValueError("interval_s must be > 0")
        self._refs = tuple(refs)
        self._interval = interval_s
        self._mono = mono_clock_ns
        self._wall = wall_clock_ns
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._name = name
        self.ticks = 0
        self.dropped = 0  # ticks not delivered because the target was dead

    def start(self) -> Ticker:
        if self._thread is not None:
            raise RuntimeError("ticker already started")
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop and join; idempotent."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.error("ticker thread did not stop within %.1fs", timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def tick_once(self) -> None:
        tick = Tick(now_mono_ns=self._mono(), now_wall_ms=self._wall() // 1_000_000)
        for ref in self._refs:
            try:
                ref.tell(tick)
            except pykka.ActorDeadError:
                self.dropped += 1
        self.ticks += 1

    def _run(self) -> None:
        # Schedule against the monotonic clock so a slow tell does not make ticks drift.
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.tick_once()
            next_at += self._interval
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind (machine busy): skip missed ticks rather than burst
                next_at = time.monotonic()
                delay = 0
            self._stop.wait(delay)
