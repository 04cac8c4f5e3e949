"""Helpers for tests: waiting on conditions with a deadline instead of sleeping."""

from __future__ import annotations

import threading
import time


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.005, message: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes; return the value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        threading.Event().wait(interval)
