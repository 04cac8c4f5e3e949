"""Test helpers for the feed actors: a scripted stand-in for ``KalshiWebSocket``, a context, peers.

``FakeWs`` records the commands the actor sends and lets the test play the reader thread: ``connect``,
``subscribed``, ``frames``, ``event`` call the callbacks the actor gave it (which ``tell`` the actor), from
the test thread, exactly like the real reader thread would.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from collections.abc import Callable, Iterator
from typing import Any

import pykka

from actors.base import PeerTable, handles
from actors.context import SystemContext
from actors.settings import load_settings
from kalshi.ws import WsConnected, WsDisconnected, WsSubscribed
from messages.base import Message, message
from messages.control import RequestStats, Tick
from tests.actors.conftest import Probe, ProbeControl, ProbeLog
from tests.helpers import wait_for


@dataclass(frozen=True)
class StatsView:
    conn_id: int


class FakeWs:
    """Scripted KalshiWebSocket: same constructor and command API; the test drives the callbacks."""

    def __init__(self, registry: "FakeWsRegistry", url: str, credentials: Any = None, *, on_frames, on_event,
                 **options: Any) -> None:
        self.registry = registry
        self.url = url
        self.credentials = credentials
        self.options = options
        self._on_frames = on_frames
        self._on_event = on_event
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.commands: list[tuple] = []
        self.started = False
        self.stopped = threading.Event()
        self.conn_id = 0

    # --- the client API the actors use ---
    def _record(self, *cmd: Any) -> int:
        with self._lock:
            cid = next(self._ids)
            self.commands.append((cid, *cmd))
        return cid

    def subscribe(self, channels, market_tickers=None, **params) -> int:
        return self._record("subscribe", tuple(channels), None if market_tickers is None else tuple(market_tickers),
                            tuple(sorted(params.items())))

    def unsubscribe(self, sids, *, conn_id=None) -> int:
        return self._record("unsubscribe", tuple(sids), conn_id)

    def update_subscription(self, sid, action, market_tickers, *, conn_id=None) -> int:
        return self._record("update", sid, action, tuple(market_tickers), conn_id)

    def list_subscriptions(self) -> int:
        return self._record("list")

    def start(self) -> None:
        self.started = True

    def stop(self, timeout: float = 5.0) -> None:
        self.stopped.set()

    def stats(self) -> StatsView:
        return StatsView(conn_id=self.conn_id)

    # --- test drivers (play the reader thread) ---
    def connect(self) -> int:
        self.conn_id += 1
        self._on_event(WsConnected(self.conn_id, self.url))
        return self.conn_id

    def disconnect(self, reason: str = "connection_lost") -> None:
        self._on_event(WsDisconnected(self.conn_id, reason, True, 0.5))

    def subscribed(self, handle: int, channel: str, sid: int, previous_sid: int | None = None) -> None:
        self._on_event(WsSubscribed(self.conn_id, handle, handle, channel, sid, previous_sid))

    def frames(self, *frames: Any) -> None:
        self._on_frames(self.conn_id, tuple(frames))

    def event(self, event: Any) -> None:
        self._on_event(event)

    def find(self, kind: str) -> list[tuple]:
        with self._lock:
            return [c for c in self.commands if c[1] == kind]


class FakeWsRegistry:
    """The ``ws_factory`` given to the actor; remembers every client it made."""

    def __init__(self) -> None:
        self.clients: list[FakeWs] = []

    def __call__(self, url: str, credentials: Any = None, **kwargs: Any) -> FakeWs:
        ws = FakeWs(self, url, credentials, **kwargs)
        self.clients.append(ws)
        return ws

    @property
    def last(self) -> FakeWs:
        return self.clients[-1]

    def wait_clients(self, n: int, timeout: float = 5.0) -> FakeWs:
        wait_for(lambda: len(self.clients) >= n, timeout, message=f"{n} WebSocket clients")
        return self.clients[n - 1]


class ManualClock:
    """Monotonic ns for the actor's context; the test moves it and sends Ticks itself."""

    def __init__(self, start_ns: int = 1_000 * 1_000_000_000) -> None:
        self.now_ns = start_ns

    def __call__(self) -> int:
        return self.now_ns


def make_context(tmp_path: Path, *, markets: tuple[str, ...] = (), credentials: Any = None,
                 clock: Any = None, rest_factory: Any = None, ws_url: str = "ws://127.0.0.1:9/trade-api/ws/v2",
                 rest_url: str = "http://127.0.0.1:9/trade-api/v2", ws_options: dict | None = None,
                 settings_env: dict | None = None, wall_ms: Any = None) -> SystemContext:
    settings = load_settings(config_path=None, environ=dict(settings_env or {}), dotenv_path=None)
    kwargs: dict[str, Any] = {}
    if clock is not None:
        kwargs["mono_ns"] = clock
    if wall_ms is not None:
        kwargs["wall_ms"] = wall_ms
    return SystemContext(
        settings=settings,
        rest_url=rest_url,
        ws_url=ws_url,
        credentials=credentials,
        data_dir=tmp_path,
        market_tickers=tuple(markets),
        rest_factory=rest_factory,
        ws_options=MappingProxyType(dict(ws_options or {})),
        **kwargs,
    )


class Recorders:
    """Probe actors standing in for the feed's peers and its supervisor, sharing one log."""

    def __init__(self, names=("state_keeper", "broadcaster", "whale_tracker")) -> None:
        self.log = ProbeLog()
        self.refs: dict[str, pykka.ActorRef] = {}
        for name in (*names, "supervisor"):
            self.refs[name] = Probe.start(name, 1, None, PeerTable(), {}, probe_log=self.log, control=ProbeControl())

    def peers(self) -> PeerTable:
        return PeerTable({k: v for k, v in self.refs.items() if k != "supervisor"})

    @property
    def supervisor(self) -> pykka.ActorRef:
        return self.refs["supervisor"]

    def got(self, name: str, message_type: type) -> list[Any]:
        return self.log.received(name, message_type)

    def wait(self, name: str, message_type: type, n: int = 1, timeout: float = 5.0, where=None) -> list[Any]:
        def check():
            items = [m for m in self.got(name, message_type) if where is None or where(m)]
            return items if len(items) >= n else None

        return wait_for(check, timeout, message=f"{n} {message_type.__name__} at {name}")

    def stop(self) -> None:
        for ref in self.refs.values():
            try:
                ref.stop(block=True, timeout=5)
            except pykka.ActorDeadError:
                pass


class FeedHarness:
    """One feed actor of ``cls`` started against a ``FakeWsRegistry`` and a ``ManualClock``, its peers and
    supervisor being the ``Recorders``. ``context`` are ``make_context`` arguments; ``config`` the actor's."""

    def __init__(self, tmp_path: Path, rec: Recorders, cls: type, name: str, *, generation: int = 1,
                 context: dict | None = None, **config: Any) -> None:
        self.rec = rec
        self.cls = cls
        self.clock = ManualClock()
        self.registry = FakeWsRegistry()
        self.ctx = make_context(tmp_path, clock=self.clock, **(context or {}))
        self.ref = cls.start(name, generation, rec.supervisor, rec.peers(),
                             {"context": self.ctx, "ws_factory": self.registry, **config})

    @property
    def ws(self) -> FakeWs:
        return self.registry.last

    def stats(self) -> dict:
        return self.ref.ask(RequestStats(), timeout=5)

    def tick(self, advance_s: float = 0.0, wall_ms: int = 1_767_225_600_000) -> None:
        self.clock.now_ns += int(advance_s * 1_000_000_000)
        self.ref.tell(Tick(now_mono_ns=self.clock.now_ns, now_wall_ms=wall_ms))


def harnesses(make_one: Callable[..., Any], before_stop: Callable[[], Any] = lambda: None) -> Iterator[Callable[..., Any]]:
    """Body of a ``harness`` fixture: yields ``make(**kw)``; at teardown runs ``before_stop``, releases any
    ``holdable`` actor still held (a failed test must not leave it blocked) and stops every actor made,
    each with a bounded wait."""
    made: list[Any] = []

    def make(**kw: Any) -> Any:
        h = make_one(**kw)
        made.append(h)
        return h

    yield make
    before_stop()
    for h in made:
        release = getattr(getattr(h, "cls", None), "release", None)
        if isinstance(release, threading.Event):
            release.set()
        h.ref.stop(block=True, timeout=15)


@message
class Hold(Message):
    """Test command: block the actor's thread until released (to let its mailbox grow)."""


def holdable(cls: type) -> type:
    """A fresh subclass of actor ``cls`` whose ``Hold`` handler sets ``held`` and blocks until ``release``
    is set (at most 10 s). Fresh per call, so one test's released event never leaks into another."""

    class Holdable(cls):  # type: ignore[misc, valid-type]
        held = threading.Event()
        release = threading.Event()

        @handles(Hold)
        def on_hold(self, msg: Hold) -> None:
            type(self).held.set()
            type(self).release.wait(10)

    Holdable.__name__ = Holdable.__qualname__ = f"Holdable{cls.__name__}"
    return Holdable
