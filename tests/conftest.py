"""Shared fixtures: the real Kalshi captures, loopback-only networking, and leak checks.

Every test must leave no actor and no thread behind: the autouse fixture stops whatever Pykka
actors are still registered and fails the test if a non-daemon or test-started thread outlives it.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pykka
import pytest

REPO = Path(__file__).resolve().parent.parent
WIRE_DIR = REPO.parent / "shared" / "kalshi-wire"


@pytest.fixture(scope="session")
def wire_dir() -> Path:
    """The folder of real Kalshi captures; tests using it skip when it is absent."""
    if not WIRE_DIR.is_dir():
        pytest.skip("../shared/kalshi-wire is not present")
    return WIRE_DIR


@pytest.fixture(autouse=True, scope="session")
def _no_proxies():
    """Tests talk to 127.0.0.1 only: make sure no proxy setting reroutes loopback traffic."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.lower().endswith("_proxy")}
    os.environ["NO_PROXY"] = "127.0.0.1,localhost,::1"
    yield
    os.environ.pop("NO_PROXY", None)
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _no_leaks():
    before = {t.ident for t in threading.enumerate()}
    yield
    leftover_actors = pykka.ActorRegistry.get_all()
    pykka.ActorRegistry.stop_all(block=True, timeout=10)

    def extra_threads():
        return [
            t
            for t in threading.enumerate()
            if t.ident not in before and t.is_alive() and not t.name.startswith(("asyncio_", "ThreadPoolExecutor"))
        ]

    deadline = time.monotonic() + 10
    while extra_threads() and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    leaked = extra_threads()
    assert not leftover_actors, f"actors left running: {leftover_actors}"
    assert not leaked, f"threads leaked: {[t.name for t in leaked]}"
