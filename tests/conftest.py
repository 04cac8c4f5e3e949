"""Shared fixtures: the real Kalshi captures, loopback-only networking (enforced), and leak checks.

Every test must leave no actor and no thread behind: the autouse fixture stops whatever Pykka
actors are still registered and fails the test if a non-daemon or test-started thread outlives it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
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


# S7: tests reach 127.0.0.1 / ::1 only. A connect anywhere else is refused here and fails the test that made it
# (even if the code under test swallowed the error as a network failure).
_blocked_connects: list[str] = []


def _is_loopback(address: object) -> bool:
    if isinstance(address, (str, bytes)):  # an AF_UNIX path
        return True
    host = address[0] if isinstance(address, tuple) and address else None
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # a name other than localhost would need a DNS lookup: not in tests


@pytest.fixture(autouse=True, scope="session")
def _loopback_only():
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(address: object) -> None:
        if not _is_loopback(address):
            _blocked_connects.append(repr(address))
            raise PermissionError(f"tests may connect to loopback only, not {address!r}")

    def connect(self: socket.socket, address: object) -> None:
        check(address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        check(address)
        return real_connect_ex(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    yield
    socket.socket.connect, socket.socket.connect_ex = real_connect, real_connect_ex  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _no_outside_network():
    _blocked_connects.clear()
    yield
    blocked, _blocked_connects[:] = list(_blocked_connects), []
    assert not blocked, f"test tried to connect outside loopback: {blocked}"


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
