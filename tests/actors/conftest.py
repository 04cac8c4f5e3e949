"""Probe and recording actors for threaded actor tests, and a hand-driven clock.

A ``Probe`` records everything that happens to it (starts, cleanups, messages, peers) in a shared
``ProbeLog`` the test can read from its own thread. Its behaviour is steered by a shared
``ProbeControl``: fail ``setup()`` N times, crash on ``Crash``, block on ``Block`` until the test
releases it. Time is driven by telling ``Tick`` by hand (``Clock``): nothing here sleeps.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pykka
import pytest

from actors.base import PeerTable, SupervisedActor, handles
from messages.base import Message, message
from messages.control import RequestStats, Tick

NS = 1_000_000_000


@message
class Crash(Message):
    """Test command: raise in the handler."""

    text: str = "boom"


@message
class Block(Message):
    """Test command: block the handler until the control's ``release`` event is set."""


@message
class Echo(Message):
    """Test command: return ``value`` (ask) — a barrier that the actor processed earlier messages."""

    value: int = 0


class ProbeLog:
    """Thread-safe event list: (kind, name, generation, detail)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[tuple[str, str, int, Any]] = []

    def add(self, kind: str, name: str, generation: int, detail: Any = None) -> None:
        with self._lock:
            self._events.append((kind, name, generation, detail))

    def events(self, kind: str | None = None, name: str | None = None) -> list[tuple[str, str, int, Any]]:
        with self._lock:
            return [e for e in self._events if (kind is None or e[0] == kind) and (name is None or e[1] == name)]

    def received(self, name: str, message_type: type) -> list[Any]:
        return [e[3] for e in self.events("message", name) if type(e[3]) is message_type]


@dataclass
class ProbeControl:
    fail_setup_times: int = 0
    fail_cleanup: bool = False
    crash_every_message: bool = False  # crash on every Tick too (crash loop)
    release: threading.Event = field(default_factory=threading.Event)
    blocked: threading.Event = field(default_factory=threading.Event)


class Probe(SupervisedActor):
    def __init__(
        self,
        name: str,
        generation: int,
        supervisor: pykka.ActorRef[Any] | None,
        peers: PeerTable,
        config: Any,
        *,
        probe_log: ProbeLog,
        control: ProbeControl,
    ) -> None:
        super().__init__(name, generation, supervisor, peers, config)
        self.probe_log = probe_log
        self.control = control

    def setup(self) -> None:
        if self.control.fail_setup_times > 0:
            self.control.fail_setup_times -= 1
            self.probe_log.add("setup_failed", self.name, self.generation)
            raise RuntimeError(f"{self.name} cannot start")
        self.probe_log.add("started", self.name, self.generation)

    def cleanup(self) -> None:
        self.probe_log.add("cleanup", self.name, self.generation)
        if self.control.fail_cleanup:
            raise OSError("cleanup failed")

    @handles(Message)
    def on_any(self, msg: Message) -> Any:
        self.probe_log.add("message", self.name, self.generation, msg)
        if isinstance(msg, Crash) or (self.control.crash_every_message and not isinstance(msg, Echo)):
            raise RuntimeError(getattr(msg, "text", "crash loop"))
        if isinstance(msg, Block):
            self.control.blocked.set()
            self.control.release.wait(30)  # bounded: the test always releases in teardown
        if isinstance(msg, Echo):
            return msg.value
        return None

    @handles(Tick)
    def on_tick(self, msg: Tick) -> None:
        super().on_tick(msg)
        self.probe_log.add("tick", self.name, self.generation, msg.now_mono_ns)
        if self.control.crash_every_message:
            raise RuntimeError("crash loop")

    def on_peers_changed(self, msg: Any) -> None:
        super().on_peers_changed(msg)
        self.probe_log.add("peers", self.name, self.generation, dict(msg.peers))

    def on_request_stats(self, msg: RequestStats) -> dict[str, Any]:
        stats = self.stats()
        stats["peers"] = dict(self.peers.items())
        return stats


class Probes:
    """Factories for supervised probes sharing one log; ``control(name)`` steers one of them."""

    def __init__(self) -> None:
        self.log = ProbeLog()
        self.controls: dict[str, ProbeControl] = {}

    def control(self, name: str) -> ProbeControl:
        return self.controls.setdefault(name, ProbeControl())

    def factory(self, name: str):
        control = self.control(name)

        def start(child: str, generation: int, supervisor: pykka.ActorRef[Any], peers: PeerTable):
            return Probe.start(child, generation, supervisor, peers, {}, probe_log=self.log, control=control)

        return start

    def factories(self, names) -> dict[str, Any]:
        return {name: self.factory(name) for name in names}

    def release_all(self) -> None:
        for control in self.controls.values():
            control.release.set()


@pytest.fixture
def probes():
    p = Probes()
    yield p
    p.release_all()  # unblock any handler a test left blocked, before the leak check runs


class Clock:
    """A hand-driven monotonic clock (ns); ``tick(ref)`` tells the current time as a Tick."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_ns = int(start_s * NS)

    def __call__(self) -> int:
        return self.now_ns

    def wall_ns(self) -> int:
        return 1_767_225_600 * NS + self.now_ns  # 2026-01-01T00:00:00Z + monotonic

    def advance(self, seconds: float) -> int:
        self.now_ns += int(seconds * NS)
        return self.now_ns

    def tick(self, ref: pykka.ActorRef[Any], advance_s: float = 0.0) -> None:
        self.advance(advance_s)
        ref.tell(Tick(now_mono_ns=self.now_ns, now_wall_ms=self.wall_ns() // 1_000_000))


@pytest.fixture
def clock() -> Clock:
    return Clock()


class Plain(SupervisedActor):
    """A supervised actor with no behaviour of its own (for class-path child specs)."""
