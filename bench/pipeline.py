"""Pipeline benchmark: throughput, latency and memory of the real feed → state → whale → order path vs the raw limit.

    /work/venv/bin/python bench/pipeline.py [--quick | --soak] [--markets 50] [--blast-frames 200000]
                                            [--paced-rate 1000] [--paced-seconds 15] [--mem-rate 5000]
                                            [--mem-markets 500] [--mem-seconds 30] [--data-dir DIR]
                                            [--skip-blast] [--skip-latency] [--skip-memory] [--skip-product-run]
                                            [--skip-burst] [--burst-rate 20000] [--burst-seconds 5]
                                            [--whale-window-minutes 5] [--whale-max-age-seconds 120] [--profile]

Default run ≈ 105 s; ``--soak`` makes the memory phase 10 minutes (the steady-state figure needs > 8 minutes,
see phase 5). A shorter steady-state soak: ``--skip-blast --skip-latency --whale-window-minutes 1
--whale-max-age-seconds 30 --mem-seconds 300``.

The stream comes from bench/_harness.py's replay server (a separate process replaying Kalshi-shaped
``orderbook_delta`` + ``trade`` frames at a target rate, ``ts_ms`` = send time, per-sid seq): the local exchange's
synthetic flow cannot produce "maximum rate". Raw and pipeline read the same stream, so their ratio is fair. Orders
go to a real local exchange (kalshi.exchange.LocalExchange, another process, flow off, no rate limits).

Phases (each with a fresh actor system and a fresh stream):
1. raw blast: a bare websocket-client loop (``recv()``, skip_utf8_validation=True, no processing) reads N frames
   — the limit on this machine. For reference, ``kalshi.ws.KalshiWebSocket`` alone (decode + seq, callbacks count).
2. pipeline blast: the same N frames through the real actors (OrderbookFeed / TradesFeed with their
   KalshiWebSocket reader threads → StateKeeper / WhaleTracker → WhaleExecutor → local exchange). Rate = frames /
   (go → last frame applied by the state keeper and the whale tracker). The feeds' overflow policy is off here
   (``overflow_depth = 0``): a backlog of a bounded burst is the point of the measure, and the replay server
   cannot answer ``get_snapshot`` in blast mode. Stale marks and snapshot requests are reported (expected 0).
3. latency at a paced rate (1,000 msg/s): raw loop send → recv; pipeline send → book applied (state keeper),
   send → trades reader callback (the frame decoded on the feed's reader thread, before any actor hop: the floor
   under any in-process decision), send → trades feed handler (one hop) and whale tracker handler (two), send →
   whale queue updated, send → decision computed (the strategy returned it; three hops), send → first decision
   told (after its journal commit), and decision → order acknowledged by the exchange (OrderAccepted/Rejected/
   Unknown as told by the executor). Twice: with every whale followed (~20 orders/s: many decision → ack samples,
   and the worst case for contention) and with the product's own whale limits (3 follows a minute: few orders;
   most whales wait for a token or lose their place in the queue, so few decisions). ``--profile`` samples the
   first run's GIL holder by thread. The executor's journal writes are timed too (they sit on that path by design):
   ``batch`` is one evaluation's transaction (sightings, decisions, intents: the whole commit); the record_* calls
   inside it are appends, except record_intent, which commits the batch so far before it returns.
4. burst (L3): 20,000 msg/s for 5 s with the feeds' overflow policy on, then idle: seconds from the last frame
   sent until every mailbox is empty again, max mailbox depths, what the policy did (overflow events, stale
   marks, snapshot requests), books valid at the end.
5. memory: resident set size of this process over a steady run (5,000 msg/s over 500 markets); growth after
   warm-up by least squares, MiB/min. The whale queue keeps every trade id of its 5-minute window and the
   executor remembers evaluated whales for window + max age, so memory rises for that long and then plateaus:
   only a run longer than that + 2 min (``--soak``: 10 minutes, warm-up = window + max age + 1 min) measures the
   steady state; a shorter run reports the fill-up slope. Also (L2) threads and open fds after warm-up and at
   the end, the journal's bytes and rows next to the frames streamed, and (L5) the time from start to all 500
   snapshots applied (the feed subscribes to every market at once).

Actors are started directly (no supervisor, no main.py) with bench-only subclasses of StateKeeper, WhaleTracker and
WhaleExecutor that only timestamp (batches applied, trades counted, journal calls and strategy results); a probe
actor plays broadcaster (and supervisor) and timestamps what it is told. Send times come from the replay server
(recorded per frame in ns; the same machine's wall clock). Prints a table and one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import gc
import json
import logging
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # allow `python bench/pipeline.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pykka  # noqa: E402
import websocket  # noqa: E402

from actors.base import PeerTable, SupervisedActor, handles  # noqa: E402
from actors.context import SystemContext  # noqa: E402
from actors.orderbook_feed import OrderbookFeed  # noqa: E402
from actors.settings import load_settings  # noqa: E402
from actors.state_keeper import StateKeeper  # noqa: E402
from actors.ticker import Ticker  # noqa: E402
from actors.trades_feed import TradesFeed  # noqa: E402
from actors.venues import make_venue  # noqa: E402
from actors.whale_executor import WhaleExecutor  # noqa: E402
from actors.whale_tracker import WhaleTracker  # noqa: E402
from bench._harness import OB, TRADE, ChildProcess, ReplayServer, StreamConfig, pct, wait_until  # noqa: E402
from kalshi.auth import Credentials, generate_key_pair  # noqa: E402
from kalshi.wire.frames import OrderbookDelta, Trade  # noqa: E402
from kalshi.ws import KalshiWebSocket  # noqa: E402
from messages.base import Message  # noqa: E402
from messages.control import PeersChanged, RequestStats, TradingClientReady, TradingGateChanged  # noqa: E402
from messages.feed import FramesReceived  # noqa: E402
from messages.market import BookFramesReceived, TradesPrinted  # noqa: E402
from messages.whale import (  # noqa: E402
    FOLLOW,
    OrderAccepted,
    OrderOutcomeUnknown,
    OrderRejected,
    WhaleDecisionMade,
    WhaleQueueUpdated,
)

log = logging.getLogger("bench.pipeline")
KEY_ID = "bench0000-0000-4000-8000-00000000b5b5"
MS = 1_000_000


# ------------------------------------------------------------------------------ the order exchange


def _serve_exchange(pipe: Any, markets: int, public_pem: bytes) -> None:
    """Child process: a LocalExchange (flow off, no rate limits) for the executor's orders."""
    from kalshi.exchange import LocalExchange

    ex = LocalExchange(markets=markets, flow="off", api_keys={KEY_ID: public_pem}, rate_limits=False).start()
    try:
        pipe.send((ex.rest_url, list(ex.call(lambda e: e.market_tickers()))))
        pipe.recv()  # stop
    finally:
        ex.stop()
    pipe.send("stopped")


class ExchangeProcess:
    def __init__(self, markets: int, public_pem: bytes) -> None:
        self._child = ChildProcess(_serve_exchange, (markets, public_pem), "bench-exchange")
        self.rest_url = ""
        self.tickers: list[str] = []

    def start(self) -> "ExchangeProcess":
        self.rest_url, self.tickers = self._child.start(60)
        return self

    def stop(self) -> None:
        self._child.stop()


# ------------------------------------------------------------------------------ bench actors


class Recorder:
    """Shared between the bench's actor subclasses (writers, one thread each) and the main thread (reader)."""

    def __init__(self) -> None:
        self.ob_frames = 0  # orderbook frames applied by the state keeper
        self.ob_last_ns = 0
        self.ob_batches: list[tuple[int, int, int]] = []  # (first seq, last seq, applied ns) per delta batch
        self.ob_hops: list[int] = []  # per batch: ns from the reader's callback to applied
        self.trades = 0  # trades handled by the whale tracker
        self.trades_last_ns = 0
        self.record = True
        self.journal_ns: dict[str, list[int]] = {}  # journal call durations by method
        self.computed: list[tuple[int, tuple]] = []  # (ns, decisions) as the strategy returned them
        self.place_ns: list[int] = []  # venue.place durations (REST create order, on the venue thread)
        # (trade id, wall ns the trades reader thread handed it on decoded, wall ns the tracker's handler got it)
        self.trade_reader: list[tuple[str, int, int]] = []
        self.feed_handler: list[tuple[str, int]] = []  # (trade id, wall ns the trades feed's handler got it)


class BenchStateKeeper(StateKeeper):
    """The real StateKeeper; timestamps each order-book batch after it is applied."""

    @handles(BookFramesReceived)
    def on_book_frames(self, message: BookFramesReceived) -> None:
        super().on_book_frames(message)
        rec: Recorder = self.config["recorder"]
        now = time.time_ns()
        frames = message.frames
        rec.ob_frames += len(frames)
        rec.ob_last_ns = now
        if rec.record and frames:
            first, last = frames[0], frames[-1]
            if type(first) is OrderbookDelta or type(last) is OrderbookDelta:
                rec.ob_batches.append((first.seq, last.seq, now))
                rec.ob_hops.append(time.monotonic_ns() - message.recv_ns)  # reader callback → applied


class BenchWhaleTracker(WhaleTracker):
    """The real WhaleTracker; counts trades and timestamps the last batch."""

    @handles(TradesPrinted)
    def on_trades(self, msg: TradesPrinted) -> None:
        super().on_trades(msg)
        rec: Recorder = self.config["recorder"]
        rec.trades += len(msg.trades)
        now = time.time_ns()
        rec.trades_last_ns = now
        if rec.record:
            # recv_ns is the reader thread's monotonic clock when it handed the decoded batch on: in wall ns,
            # comparable with the replay server's send times (same machine).
            offset = now - time.monotonic_ns()
            for t in msg.trades:
                rec.trade_reader.append((t.trade_id, t.recv_ns + offset, now))


class BenchTradesFeed(TradesFeed):
    """The real TradesFeed; timestamps each trade as its handler starts (one actor hop from the reader thread)."""

    @handles(FramesReceived)
    def on_frames(self, message: FramesReceived) -> None:
        rec: Recorder = self.config["recorder"]
        if rec.record:
            now = time.time_ns()
            rec.feed_handler.extend((f.trade_id, now) for f in message.frames if type(f) is Trade)
        super().on_frames(message)


class Probe(SupervisedActor):
    """Plays broadcaster and supervisor: timestamps decisions, queue updates and order results."""

    def setup(self) -> None:
        self.first_queue_ns: dict[str, tuple[int, tuple[str, ...]]] = {}
        self.decisions: list[tuple[int, Any]] = []
        self.acks: list[tuple[int, str, str]] = []  # (ns, kind, client_order_id)
        self.trading_ready = False
        self.counts: dict[str, int] = {}

    @handles(WhaleQueueUpdated)
    def on_queue(self, msg: WhaleQueueUpdated) -> None:
        if not self.config["recorder"].record:
            return
        now = time.time_ns()
        seen = self.first_queue_ns
        for w in msg.queue:
            if w.whale_id not in seen:
                seen[w.whale_id] = (now, tuple(w.trade_ids))

    @handles(WhaleDecisionMade)
    def on_decision(self, msg: WhaleDecisionMade) -> None:
        self._count(msg.decision.action)
        if self.config["recorder"].record:
            self.decisions.append((time.time_ns(), msg.decision))

    @handles(OrderAccepted, OrderRejected, OrderOutcomeUnknown)
    def on_order(self, msg: Any) -> None:
        self._count(type(msg).__name__)
        if self.config["recorder"].record:
            self.acks.append((time.time_ns(), type(msg).__name__, msg.client_order_id))

    @handles(TradingClientReady)
    def on_trading_ready(self, msg: TradingClientReady) -> None:
        self.trading_ready = True

    @handles(Message)
    def on_other(self, msg: Message) -> None:
        self._count(type(msg).__name__)

    def _count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out.update(first_queue_ns=dict(self.first_queue_ns), decisions=list(self.decisions), acks=list(self.acks),
                   trading_ready=self.trading_ready, counts=dict(self.counts))
        return out


class BenchExecutor(WhaleExecutor):
    """The real WhaleExecutor; times its journal writes (the fsync'd commits on the decision path)."""

    def setup(self) -> None:
        super().setup()
        rec: Recorder = self.config["recorder"]
        journal = self.journal
        assert journal is not None
        for name in ("record_whale_seen", "record_decision", "record_intent", "record_outcome"):
            setattr(journal, name, _timed(getattr(journal, name), rec, rec.journal_ns.setdefault(name, [])))
        if hasattr(journal, "batch"):  # one transaction per evaluation: time the whole block, commit included
            journal.batch = _timed_block(journal.batch, rec, rec.journal_ns.setdefault("batch", []))
        on_queue = self.strategy.on_queue

        def timed_on_queue(*args: Any, **kwargs: Any) -> Any:
            result = on_queue(*args, **kwargs)
            if rec.record and result[0]:
                rec.computed.append((time.time_ns(), result[0]))  # decided, before the journal and the tells
            return result

        self.strategy.on_queue = timed_on_queue  # type: ignore[method-assign]


class _TimedVenue:
    """Wraps the executor's real venue (made by actors.venues.make_venue) to time ``place`` (the REST call)."""

    def __init__(self, venue: Any, rec: Recorder) -> None:
        self._venue = venue
        self.place = _timed(venue.place, rec, rec.place_ns)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._venue, name)


def _timed_block(make_cm: Any, rec: Recorder, sink: list[int]) -> Any:
    """A context-manager factory whose blocks are timed, enter to exit."""

    @contextlib.contextmanager
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter_ns()
        try:
            with make_cm(*args, **kwargs) as value:
                yield value
        finally:
            if rec.record:
                sink.append(time.perf_counter_ns() - t)

    return wrapper


def _timed(fn: Any, rec: Recorder, sink: list[int]) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            if rec.record:
                sink.append(time.perf_counter_ns() - t)

    return wrapper


SETTINGS_OVERRIDES: dict[str, Any] = {}  # from the command line (--whale-window-minutes ...)


# The stress run follows every whale (many decision → ack samples: ~20 orders/s, about 400x what the product's
# default limit of 3 follows a minute allows); the product run keeps the product's whale limits.
FOLLOW_ALL = {"whale_max_trades_per_minute": 100_000, "whale_token_refill_seconds": 1}


def make_settings(markets: int, data_dir: Path, follow_all: bool = True) -> Any:
    return load_settings(
        config_path=None,
        environ={},
        dotenv_path=None,
        flags={
            "environment": "local",
            "strategy": "whale_follower",
            "data_dir": str(data_dir),
            "orderbook_market_limit": markets,
            **(FOLLOW_ALL if follow_all else {}),
            "max_open_positions": 100_000,
            "max_cost_per_market_cents": 10_000_000,
            "max_cost_per_event_cents": 10_000_000,
            "cleanup_on_startup": False,
            **SETTINGS_OVERRIDES,
        },
    )


class PipelineSystem:
    """The real actors wired by hand: feeds → state keeper / whale tracker → executor → local exchange."""

    def __init__(self, ws_url: str, rest_url: str, creds: Credentials, markets: tuple[str, ...], data_dir: Path,
                 overflow_depth: int, follow_all: bool = True) -> None:
        self.recorder = Recorder()
        settings = make_settings(len(markets), data_dir, follow_all)
        self.ctx = SystemContext(settings=settings, rest_url=rest_url, ws_url=ws_url, credentials=creds,
                                 data_dir=data_dir, market_tickers=markets, environment="local", execution="exchange")
        self.refs: dict[str, pykka.ActorRef[Any]] = {}
        self.ticker: Ticker | None = None
        self.overflow_depth = overflow_depth
        self.snapshots_applied_s = 0.0

    def start(self, timeout: float = 30.0) -> None:
        base = {"context": self.ctx, "recorder": self.recorder}
        probe = Probe.start("broadcaster", 1, None, PeerTable(), base)
        self.refs["broadcaster"] = probe
        order = [
            ("state_keeper", BenchStateKeeper, base),
            ("whale_executor", BenchExecutor, base),
            ("whale_tracker", BenchWhaleTracker, base),
            ("orderbook_feed", OrderbookFeed, {**base, "overflow_depth": self.overflow_depth}),
            ("trades_feed", BenchTradesFeed, {**base, "overflow_depth": self.overflow_depth}),
        ]
        rec = self.recorder
        venue_factory = lambda ctx, books: _TimedVenue(make_venue(ctx, books), rec)  # noqa: E731
        for name, cls, cfg in order:  # downstream first, so the feeds' first batches have somewhere to go
            extra = {"venue_factory": venue_factory} if cls is BenchExecutor else {}
            self.refs[name] = cls.start(name, 1, probe, PeerTable(self.refs), cfg, **extra)
        pairs = tuple(self.refs.items())
        for ref in self.refs.values():
            ref.tell(PeersChanged(peers=pairs))
        self.ticker = Ticker([self.refs[n] for n in ("state_keeper", "whale_executor", "whale_tracker",
                                                       "orderbook_feed", "trades_feed")], 0.1).start()
        wait_until(lambda: self.stats("broadcaster")["trading_ready"], timeout, "executor not ready (reconcile)")
        self.refs["whale_executor"].tell(TradingGateChanged(open=True, reason="bench"))

    def stats(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        return self.refs[name].ask(RequestStats(), timeout=timeout)

    def stop(self) -> None:
        if self.ticker is not None:
            self.ticker.stop()
        for name in ("orderbook_feed", "trades_feed", "whale_tracker", "whale_executor", "state_keeper",
                     "broadcaster"):
            ref = self.refs.pop(name, None)
            if ref is not None:
                try:
                    ref.stop(timeout=30)
                except (pykka.ActorDeadError, pykka.Timeout):
                    log.warning("stopping %s failed", name)


# ------------------------------------------------------------------------------ measurements


def summary_ms(ns_values: list[int]) -> dict[str, Any]:
    ms = [v / MS for v in ns_values]
    return {
        "n": len(ms),
        "p50": _r(pct(ms, 50)),
        "p99": _r(pct(ms, 99)),
        "p99_9": _r(pct(ms, 99.9)),
        "max": _r(max(ms) if ms else None),
    }


def _r(v: float | None, nd: int = 3) -> float | None:
    return None if v is None else round(v, nd)


def raw_connect(url: str, timeout: float = 10.0) -> websocket.WebSocket:
    ws = websocket.create_connection(url, timeout=timeout, skip_utf8_validation=True)
    ws.send(json.dumps({"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta", "trade"]}}))
    return ws


def raw_blast(server: ReplayServer, cfg: StreamConfig, info: dict) -> dict[str, Any]:
    """A bare websocket-client loop: recv() until every frame of the stream is in."""
    ws = raw_connect(server.ws_url)
    try:
        for _ in range(2 + len(cfg.markets)):  # two replies, then a snapshot per market
            ws.recv()
        server.wait_status(lambda s: s["waiting"] >= 1, 10, "raw client not subscribed")
        n = info["ob_frames"] + info["trade_frames"]
        recv = ws.recv
        go = server.go()
        for _ in range(n):
            recv()
        end = time.time_ns()
    finally:
        ws.close()
    return {"frames": n, "seconds": _r((end - go) / 1e9), "frames_per_s": round(n / ((end - go) / 1e9))}


def reader_blast(server: ReplayServer, cfg: StreamConfig, info: dict) -> dict[str, Any]:
    """kalshi.ws.KalshiWebSocket alone: read-ahead, decode_frame, seq tracking; the callback only counts."""
    n = info["ob_frames"] + info["trade_frames"] + len(cfg.markets)
    got = [0]
    done = threading.Event()

    def on_frames(conn_id: int, frames: tuple) -> None:
        got[0] += len(frames)
        if got[0] >= n:
            done.set()

    ws = KalshiWebSocket(server.ws_url, None, on_frames=on_frames, on_event=lambda e: None, name="bench-reader")
    ws.subscribe(["orderbook_delta", "trade"])
    ws.start()
    try:
        server.wait_status(lambda s: s["waiting"] >= 1, 10, "reader not subscribed")
        wait_until(lambda: got[0] >= len(cfg.markets), 10, "reader: snapshots missing")
        go = server.go()
        if not done.wait(120):
            raise TimeoutError(f"reader: {got[0]} of {n} frames")
        end = time.time_ns()
        stats = ws.stats()
    finally:
        ws.stop()
    frames = n - len(cfg.markets)
    return {"frames": frames, "seconds": _r((end - go) / 1e9), "frames_per_s": round(frames / ((end - go) / 1e9)),
            "frames_per_batch": round(stats.frames / max(1, stats.batches), 1), "gaps": stats.gaps}


def start_system(server: ReplayServer, exchange: ExchangeProcess, creds: Credentials, cfg: StreamConfig,
                 data_dir: Path, overflow_depth: int, follow_all: bool = True) -> PipelineSystem:
    system = PipelineSystem(server.ws_url, exchange.rest_url, creds, cfg.markets, data_dir, overflow_depth,
                            follow_all)
    try:
        started = time.monotonic()
        system.start()
        server.wait_status(lambda s: s["waiting"] >= 2, 20, "feeds not subscribed")
        wait_until(lambda: system.recorder.ob_frames >= len(cfg.markets), 20, "snapshots not applied", poll=0.005)
        # L5: actors start, connect, subscribe to every market at once and apply all the snapshots.
        system.snapshots_applied_s = time.monotonic() - started
    except BaseException:
        system.stop()
        raise
    return system


class PySpy:
    """py-spy sampling this process while a phase runs, only the thread holding the GIL (``--gil``): under one GIL
    that is what delays everyone else. ``top()`` aggregates the raw stacks by function and by thread."""

    RATE = 250  # samples/s

    def __init__(self, out: Path, seconds: float) -> None:
        exe = Path(sys.executable).with_name("py-spy")
        self.out = out
        self.seconds = seconds  # at most; stop() ends it sooner
        self.started = time.monotonic()
        self.proc: subprocess.Popen | None = None
        self.error = ""
        if not exe.exists():
            self.error = "py-spy not installed (pip install py-spy into the venv)"
            return
        self.proc = subprocess.Popen(
            [str(exe), "record", "-p", str(os.getpid()), "-d", str(max(1, int(seconds))), "-r", str(self.RATE),
             "-f", "raw", "--threads", "--gil", "-o", str(out), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.seconds = min(self.seconds, time.monotonic() - self.started)
        self.proc.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=5)
        if not self.out.exists():
            self.error = (err or b"").decode(errors="replace")[-300:]

    def top(self, n: int = 15) -> dict[str, Any]:
        if self.error or not self.out.exists():
            return {"error": self.error or "no profile written"}
        own: dict[str, int] = {}
        incl: dict[str, int] = {}
        threads: dict[str, int] = {}
        total = 0
        for line in self.out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            thread, *frames = stack.split(";")  # "thread (tid): name", then the frames outermost first
            if not frames:
                continue
            c = int(count)
            total += c
            name = thread.partition(": ")[2] or thread
            threads[name] = threads.get(name, 0) + c
            own[frames[-1]] = own.get(frames[-1], 0) + c
            for f in set(frames):
                incl[f] = incl.get(f, 0) + c

        def best(d: dict[str, int]) -> list[tuple[str, float]]:
            return [(k, round(v / total, 3)) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:n]]

        return {"samples": total, "gil_busy": round(min(1.0, total / (self.RATE * max(self.seconds, 1e-9))), 3),
                "threads": best(threads), "self": best(own), "inclusive": best(incl)}


def pipeline_blast(server: ReplayServer, exchange: ExchangeProcess, creds: Credentials, cfg: StreamConfig,
                   info: dict, data_dir: Path, timeout: float, profile: Path | None = None) -> dict[str, Any]:
    system = start_system(server, exchange, creds, cfg, data_dir, overflow_depth=0)
    rec = system.recorder
    rec.record = False
    spy: PySpy | None = None
    try:
        ob_target = len(cfg.markets) + info["ob_frames"]
        trade_target = info["trade_frames"]
        if profile is not None:
            spy = PySpy(profile, timeout)
        go = server.go()
        wait_until(lambda: rec.ob_frames >= ob_target and rec.trades >= trade_target, timeout,
                   f"pipeline did not finish within {timeout}s", poll=0.01)
        end = max(rec.ob_last_ns, rec.trades_last_ns)
        if spy is not None:
            spy.stop()
        sk = system.stats("state_keeper")
        ex = system.stats("whale_executor")
        ob = system.stats("orderbook_feed")
        tf = system.stats("trades_feed")
        probe = system.stats("broadcaster")
    finally:
        if spy is not None and spy.proc is not None and spy.proc.poll() is None:
            spy.stop()
        system.stop()
    n = info["ob_frames"] + info["trade_frames"]
    secs = (end - go) / 1e9
    return {
        **({"profile": spy.top()} if spy is not None else {}),
        "frames": n,
        "seconds": _r(secs),
        "frames_per_s": round(n / secs),
        "ob_feed_max_mailbox": ob.get("max_mailbox_depth"),
        "trades_feed_max_mailbox": tf.get("max_mailbox_depth"),
        "state_keeper_max_mailbox": sk.get("max_mailbox_depth"),
        "deltas_applied": sk.get("deltas_applied"),
        "stale_marks": sk.get("stale_marks"),
        "snapshot_requests": sk.get("snapshot_requests"),
        "gaps": ob.get("gaps", 0) + tf.get("gaps", 0),
        "malformed": ob.get("malformed", 0) + tf.get("malformed", 0),
        "reconnects": ob.get("reconnects", 0) + tf.get("reconnects", 0),
        "told_to_broadcaster": probe["counts"],
        "executor_counts": ex.get("counts"),
    }


def pipeline_burst(server: ReplayServer, exchange: ExchangeProcess, creds: Credentials, cfg: StreamConfig,
                   data_dir: Path) -> dict[str, Any]:
    """L3: a paced burst (20,000 msg/s for 5 s) with the feeds' overflow policy ON, then idle: how long until every
    mailbox is empty again, what the policy did (stale marks, snapshot requests, overflow events), books valid."""
    system = start_system(server, exchange, creds, cfg, data_dir, overflow_depth=1000)
    names = ("orderbook_feed", "trades_feed", "state_keeper", "whale_tracker", "whale_executor")
    try:
        system.recorder.record = False
        server.go()
        server.wait_status(lambda s: s["done"] >= 2, cfg.duration_s * 4 + 30, "burst did not finish")
        report = server.report()
        last_sent_ns = max((max(r["ns"]) for r in report if len(r["ns"])), default=time.time_ns())
        first_sent_ns = min((min(r["ns"]) for r in report if len(r["ns"])), default=last_sent_ns)
        # Drained: every mailbox empty on two reads 100 ms apart (a feed's snapshot request may still be answered).
        deadline = time.monotonic() + 60
        quiet = 0
        while quiet < 2:
            depths = {n: system.stats(n)["mailbox_depth"] for n in names}
            quiet = quiet + 1 if not any(depths.values()) else 0
            if time.monotonic() > deadline:
                raise TimeoutError(f"burst: mailboxes not drained in 60 s: {depths}")
            if quiet == 1:
                drained_ns = time.time_ns()
            time.sleep(0.1)  # polling interval
        stats = {n: system.stats(n) for n in names}
    finally:
        system.stop()
    sent = max((r["sent"] for r in report), default=0)  # both feeds' connections get the same stream
    sk, ob, tf = stats["state_keeper"], stats["orderbook_feed"], stats["trades_feed"]
    return {
        "target_rate": cfg.rate,
        "seconds": cfg.duration_s,
        "frames_sent": sent,
        "achieved_rate": round(sent / max(1e-9, (last_sent_ns - first_sent_ns) / 1e9)),
        "drain_s": _r((drained_ns - last_sent_ns) / 1e9),
        "max_mailbox": {n: s.get("max_mailbox_depth") for n, s in stats.items()},
        "overflow_events": ob.get("overflow_events", 0) + tf.get("overflow_events", 0),
        "stale_marks": sk.get("stale_marks"),
        "snapshot_requests": sk.get("snapshot_requests"),
        "books_valid": f"{sk.get('valid_books')}/{sk.get('books')}",
        "gaps": ob.get("gaps", 0) + tf.get("gaps", 0),
        "executor_counts": stats["whale_executor"].get("counts"),
    }


def raw_paced(server: ReplayServer, cfg: StreamConfig) -> dict[str, Any]:
    ws = raw_connect(server.ws_url)
    try:
        skip = 2 + len(cfg.markets)
        for _ in range(skip):
            ws.recv()
        server.wait_status(lambda s: s["waiting"] >= 1, 10, "raw client not subscribed")
        total = int(cfg.duration_s * cfg.rate)
        times = array.array("q")
        recv, now = ws.recv, time.time_ns
        server.go()
        for _ in range(total):
            recv()
            times.append(now())
    finally:
        ws.close()
    rep = [r for r in server.report() if r["sent"]][0]
    lat_all, lat_trade = [], []
    for i in range(min(len(times), len(rep["ns"]))):
        d = times[i] - rep["ns"][i]
        lat_all.append(d)
        if rep["chan"][i] == TRADE:
            lat_trade.append(d)
    return {"all": summary_ms(lat_all), "trades": summary_ms(lat_trade)}


def _trade_seq(trade_id: str, nonce: str) -> int | None:
    if not trade_id.startswith(nonce):
        return None
    try:
        return int(trade_id.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None


def pipeline_paced(server: ReplayServer, exchange: ExchangeProcess, creds: Credentials, cfg: StreamConfig,
                   data_dir: Path, mem_sample: bool = False, follow_all: bool = True,
                   profile: Path | None = None) -> dict[str, Any]:
    system = start_system(server, exchange, creds, cfg, data_dir, overflow_depth=1000, follow_all=follow_all)
    rec = system.recorder
    rec.record = not mem_sample
    rss: list[tuple[float, float, int, int]] = []  # (s since go, RSS MiB, threads, open fds)
    out_profile: dict[str, Any] = {}
    spy: PySpy | None = None
    try:
        gc.collect()
        t0 = time.monotonic()
        spy = PySpy(profile, cfg.duration_s) if profile is not None else None
        server.go()
        end_at = t0 + cfg.duration_s + 2.0
        while time.monotonic() < end_at:
            if mem_sample:
                rss.append((time.monotonic() - t0, rss_mib(), threading.active_count(), open_fds()))
            time.sleep(1.0 if mem_sample else 0.1)  # sampling interval
        server.wait_status(lambda s: s["done"] >= 2, 30, "stream did not finish")
        if spy is not None:
            spy.stop()
            out_profile = spy.top()
        wait_until(lambda: rec.trades_last_ns and time.time_ns() - max(rec.ob_last_ns, rec.trades_last_ns) > 500 * MS,
                   30, "pipeline did not drain")
        probe = system.stats("broadcaster")
        sk = system.stats("state_keeper")
        ex = system.stats("whale_executor")
        tr = system.stats("whale_tracker")
        feeds = [system.stats("orderbook_feed"), system.stats("trades_feed")]
    finally:
        if spy is not None and spy.proc is not None and spy.proc.poll() is None:
            spy.stop()
        system.stop()
    out: dict[str, Any] = {
        **({"profile": out_profile} if spy is not None else {}),
        "stale_marks": sk.get("stale_marks"),
        "snapshot_requests": sk.get("snapshot_requests"),
        "gaps": sum(f.get("gaps", 0) for f in feeds),
        "malformed": sum(f.get("malformed", 0) for f in feeds),
        "reconnects": sum(f.get("reconnects", 0) for f in feeds),
        "overflow_events": sum(f.get("overflow_events", 0) for f in feeds),
        "max_mailbox": {n: s.get("max_mailbox_depth") for n, s in
                        (("orderbook_feed", feeds[0]), ("trades_feed", feeds[1]), ("state_keeper", sk),
                         ("whale_tracker", tr), ("whale_executor", ex))},
        "executor_counts": ex.get("counts"),
        "frames_per_s": cfg.rate,
        "follows_per_minute": system.ctx.settings.whale_max_trades_per_minute,
    }
    out["snapshots_applied_s"] = _r(system.snapshots_applied_s)
    if mem_sample:
        out["rss"] = rss
        out["journal"] = journal_size(data_dir)
        out["frames"] = int(cfg.rate * cfg.duration_s)
        return out
    reports = server.report()
    send = {OB: {}, TRADE: {}}
    for r in reports:
        for c, s, ns in zip(r["chan"], r["seq"], r["ns"]):
            send[c][s] = ns
    book = []
    for first, last, t in rec.ob_batches:
        for s in range(first, last + 1):
            sent = send[OB].get(s)
            if sent is not None:
                book.append(t - sent)
    nonce = f"{cfg.nonce & 0xFFFFFFFF:08x}"

    def trigger_ns(trade_ids: Any) -> int | None:
        seqs = [q for q in (_trade_seq(t, nonce) for t in trade_ids) if q is not None]
        return send[TRADE].get(max(seqs)) if seqs else None

    queue_lat = []
    for t, ids in probe["first_queue_ns"].values():
        sent = trigger_ns(ids)
        if sent is not None:
            queue_lat.append(t - sent)
    first_dec: dict[str, tuple[int, Any]] = {}
    final_dec: dict[str, tuple[int, Any]] = {}
    for t, d in probe["decisions"]:
        first_dec.setdefault(d.whale_id, (t, d))
        if d.final:
            final_dec.setdefault(d.whale_id, (t, d))
    dec_lat = [t - s for t, d in first_dec.values() if (s := trigger_ns(d.trade_ids)) is not None]
    computed: dict[str, int] = {}
    for t, decisions in rec.computed:
        for d in decisions:
            computed.setdefault(d.whale_id, t - (trigger_ns(d.trade_ids) or t))
    final_lat = [t - s for t, d in final_dec.values() if (s := trigger_ns(d.trade_ids)) is not None]
    acks = {coid: (t, kind) for t, kind, coid in probe["acks"]}
    ack_lat, ack_kinds = [], {}
    for t, d in final_dec.values():
        if d.action == FOLLOW and d.client_order_id in acks:
            at, kind = acks[d.client_order_id]
            ack_lat.append(at - t)
            ack_kinds[kind] = ack_kinds.get(kind, 0) + 1
    actions: dict[str, int] = {}
    for _, d in first_dec.values():
        actions[d.action] = actions.get(d.action, 0) + 1

    def trade_sent(trade_id: str) -> int | None:
        q = _trade_seq(trade_id, nonce)
        return send[TRADE].get(q) if q is not None else None

    reader_lat, tracker_lat = [], []
    for trade_id, reader_ns, tracker_ns in rec.trade_reader:
        if (sent := trade_sent(trade_id)) is not None:
            reader_lat.append(reader_ns - sent)
            tracker_lat.append(tracker_ns - sent)
    feed_lat = [t - sent for trade_id, t in rec.feed_handler if (sent := trade_sent(trade_id)) is not None]
    out.update({
        "send_to_trades_reader": summary_ms(reader_lat),
        "send_to_trades_feed": summary_ms(feed_lat),
        "send_to_tracker": summary_ms(tracker_lat),
        "journal_commit": {k: summary_ms(v) for k, v in rec.journal_ns.items() if v},
        "venue_place_rest": summary_ms(rec.place_ns),
        "send_to_book_applied": summary_ms(book),
        "reader_to_book_applied_per_batch": summary_ms(rec.ob_hops),
        "send_to_whale_queue": summary_ms(queue_lat),
        "send_to_decision_computed": summary_ms([v for v in computed.values() if v > 0]),
        "send_to_first_decision": summary_ms(dec_lat),
        "send_to_final_decision": summary_ms(final_lat),
        "decision_to_order_ack": summary_ms(ack_lat),
        "ack_kinds": ack_kinds,
        "first_decision_actions": actions,
    })
    return out


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def journal_size(data_dir: Path) -> dict[str, Any]:
    """Bytes on disk (database + WAL) and rows per table of a stopped executor's journal."""
    import sqlite3

    from actors.journal import JOURNAL_FILE, TABLES

    path = data_dir / JOURNAL_FILE
    size = sum(p.stat().st_size for p in data_dir.glob(JOURNAL_FILE + "*") if p.is_file())
    rows: dict[str, int] = {}
    if path.exists():
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            rows = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}  # noqa: S608 - fixed names
        finally:
            db.close()
    return {"bytes": size, "rows": rows}


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def slope_per_min(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 3:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return None if den == 0 else 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den


# ------------------------------------------------------------------------------ main


def markets_for(n: int, exchange_tickers: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """n markets: the exchange's (whales trade there, so orders are real) then synthetic ones."""
    real = list(exchange_tickers[:n])
    extra = [f"KXBENCH-26NOV25-M{i:04d}" for i in range(n - len(real))]
    return tuple(real + extra), tuple(real)


def run(args: argparse.Namespace) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    private_pem, public_pem = generate_key_pair()
    creds = Credentials.from_pem_text(KEY_ID, private_pem)
    server = ReplayServer().start()
    exchange = ExchangeProcess(args.exchange_markets, public_pem).start()
    root = Path(tempfile.mkdtemp(prefix="bench-pipeline-", dir=args.data_dir))
    res: dict[str, Any] = {"bench": "pipeline", "python": platform.python_version(), "cpu_count": os.cpu_count(),
                           "stream": "bench/_harness.py replay server (Kalshi-shaped frames; raw and pipeline read the "
                                     "same stream)", "data_dir": str(root),
                           "switch_interval_ms": sys.getswitchinterval() * 1000}
    nonce = int(time.time()) & 0xFFFFFF
    try:
        markets, whales = markets_for(args.markets, exchange.tickers)
        res["markets"] = len(markets)

        def phase(name: str) -> None:
            print(f"[{time.strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)

        if not args.skip_blast:
            blast = StreamConfig(markets=markets, whale_markets=whales, mode="blast", n_frames=args.blast_frames,
                                 nonce=nonce + 1)
            phase("building the blast stream")
            info = server.configure(blast)
            phase("raw blast")
            res["raw"] = raw_blast(server, blast, info)
            server.configure(blast)
            phase("KalshiWebSocket reader blast")
            res["reader"] = reader_blast(server, blast, info)
            phase("pipeline blast")
            server.configure(StreamConfig(**{**blast.__dict__, "nonce": nonce + 2}))
            res["pipeline"] = pipeline_blast(server, exchange, creds, blast, info, root / "blast", args.blast_timeout,
                                             root / "pyspy-blast.txt" if args.profile else None)
            res["pipeline_vs_raw"] = round(res["pipeline"]["frames_per_s"] / res["raw"]["frames_per_s"], 3)
        if not args.skip_latency:
            paced = StreamConfig(markets=markets, whale_markets=whales, mode="paced", rate=args.paced_rate,
                                 duration_s=args.paced_seconds, nonce=nonce + 3, whale_share=args.whale_share)
            phase(f"raw paced {args.paced_rate}/s")
            server.configure(paced)
            res["raw_latency"] = raw_paced(server, paced)
            phase(f"pipeline paced {args.paced_rate}/s, every whale followed")
            paced = StreamConfig(**{**paced.__dict__, "nonce": nonce + 4})
            server.configure(paced)
            res["latency"] = pipeline_paced(server, exchange, creds, paced, root / "paced",
                                            profile=root / "pyspy-paced.txt" if args.profile else None)
            if not args.skip_product_run:
                phase(f"pipeline paced {args.paced_rate}/s, the product's whale limits")
                paced = StreamConfig(**{**paced.__dict__, "nonce": nonce + 6})
                server.configure(paced)
                res["latency_product"] = pipeline_paced(server, exchange, creds, paced, root / "paced-product",
                                                        follow_all=False)
        if not args.skip_burst:
            burst = StreamConfig(markets=markets, whale_markets=whales, mode="paced", rate=args.burst_rate,
                                 duration_s=args.burst_seconds, nonce=nonce + 7)
            phase(f"burst {args.burst_rate}/s for {args.burst_seconds}s, then idle")
            server.configure(burst)
            res["burst"] = pipeline_burst(server, exchange, creds, burst, root / "burst")
        if not args.skip_memory:
            mem_markets, mem_whales = markets_for(args.mem_markets, exchange.tickers)
            mem = StreamConfig(markets=mem_markets, whale_markets=mem_whales, mode="paced", rate=args.mem_rate,
                               duration_s=args.mem_seconds, nonce=nonce + 5, whale_share=0.01)
            phase(f"memory {args.mem_rate}/s over {len(mem_markets)} markets for {args.mem_seconds}s")
            server.configure(mem)
            m = pipeline_paced(server, exchange, creds, mem, root / "memory", mem_sample=True)
            samples = m.pop("rss")
            pts = [(t, mib) for t, mib, _, _ in samples]
            # The whale queue keeps every trade id of its window (5 min): memory rises for one window, then
            # plateaus. Only a run longer than window + 1 min measures the steady state.
            settings = make_settings(1, root)
            fill_s = 60.0 * settings.whale_window_minutes + settings.whale_max_age_seconds
            steady_run = args.mem_seconds >= fill_s + 120
            warm = fill_s + 60 if steady_run else args.mem_seconds / 2
            steady = [p for p in pts if p[0] >= warm]
            m.update({
                "markets": len(mem_markets),
                "seconds": args.mem_seconds,
                "warmup_s": round(warm, 1),
                "steady_state": steady_run,  # False: still inside the whale window's fill-up
                "rss_start_mib": _r(pts[0][1], 1) if pts else None,
                "rss_after_warmup_mib": _r(steady[0][1], 1) if steady else None,
                "rss_end_mib": _r(pts[-1][1], 1) if pts else None,
                "growth_mib_per_min": _r(slope_per_min(steady), 3),
                # L2: thread and fd counts constant; the journal grows with decisions, not with market data.
                "threads_after_warmup_end": [next((n for t, _, n, _ in samples if t >= warm), None),
                                             samples[-1][2] if samples else None],
                "fds_after_warmup_end": [next((f for t, _, _, f in samples if t >= warm), None),
                                         samples[-1][3] if samples else None],
            })
            res["memory"] = m
    finally:
        server.stop()
        exchange.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return res


def print_table(r: dict[str, Any]) -> None:
    rows: list[tuple[str, Any]] = [("markets", r.get("markets"))]
    if "raw" in r:
        rows += [
            ("raw websocket-client loop, frames/s", r["raw"]["frames_per_s"]),
            ("KalshiWebSocket reader alone, frames/s", r["reader"]["frames_per_s"]),
            ("pipeline (feeds→state/whales→executor), frames/s", r["pipeline"]["frames_per_s"]),
            ("pipeline / raw (target >= 0.60)", r["pipeline_vs_raw"]),
        ]
    if "latency" in r:
        raw = r["raw_latency"]
        raw_p99 = raw["all"]["p99"]

        def fmt(s: dict) -> str:
            return f"p50 {s['p50']} p99 {s['p99']} p99.9 {s['p99_9']} ms (n={s['n']})"

        def ratio(s: dict) -> Any:
            return round(s["p99"] / raw_p99, 2) if s["p99"] and raw_p99 else None

        rows += [
            ("paced rate, msg/s", r["latency"]["frames_per_s"]),
            ("raw loop send→recv, all frames", fmt(raw["all"])),
            ("raw loop send→recv, trades", fmt(raw["trades"])),
        ]
        for key, title in (("latency", "every whale followed"), ("latency_product", "the product's whale limits")):
            lat = r.get(key)
            if lat is None:
                continue
            counts = lat["executor_counts"] or {}
            orders = counts.get("place_accepted", 0) + counts.get("place_rejected", 0)
            rows += [
                (f"[{title}]", f"{lat['follows_per_minute']} follows/min allowed; {orders} orders sent"),
                ("send→book applied (state keeper)", fmt(lat["send_to_book_applied"])),
                ("  of which reader callback→applied (per batch)", fmt(lat["reader_to_book_applied_per_batch"])),
                ("send→trades reader callback (decoded, no actor hop yet)", fmt(lat["send_to_trades_reader"])),
                ("send→trades feed handler (1 actor hop)", fmt(lat["send_to_trades_feed"])),
                ("send→whale tracker handler (2 hops)", fmt(lat["send_to_tracker"])),
                ("send→whale queue updated", fmt(lat["send_to_whale_queue"])),
                ("send→first decision computed (3 hops; before journal)", fmt(lat["send_to_decision_computed"])),
                ("send→first whale decision (journaled, told)", fmt(lat["send_to_first_decision"])),
                ("send→final whale decision", fmt(lat["send_to_final_decision"])),
                ("decision→order ack (exchange)", fmt(lat["decision_to_order_ack"])),
            ]
            if key == "latency":
                rows += [(f"  executor journal {k}", fmt(v)) for k, v in lat["journal_commit"].items()]
                rows.append(("  venue.place (REST create order)", fmt(lat["venue_place_rest"])))
            rows += [
                ("p99 send→decision computed / raw p99 (target <= 2)", ratio(lat["send_to_decision_computed"])),
                ("p99 send→decision journaled and told / raw p99", ratio(lat["send_to_first_decision"])),
                ("p99 send→trades reader callback / raw p99 (the floor)", ratio(lat["send_to_trades_reader"])),
                ("p99 send→trades feed handler / raw p99 (one hop)", ratio(lat["send_to_trades_feed"])),
            ]
    if "burst" in r:
        b = r["burst"]
        rows += [
            (f"burst: {b['target_rate']} msg/s for {b['seconds']} s, overflow policy on",
             f"{b['frames_sent']:,} frames sent at {b['achieved_rate']:,}/s"),
            ("  mailboxes empty again after the last frame, s", b["drain_s"]),
            ("  max mailbox depth by actor", b["max_mailbox"]),
            ("  overflow events / stale marks / snapshot requests / gaps",
             f"{b['overflow_events']} / {b['stale_marks']} / {b['snapshot_requests']} / {b['gaps']}"),
            ("  books valid at the end", b["books_valid"]),
        ]
    if "memory" in r:
        m = r["memory"]
        rows += [
            (f"  start → subscribed to {m['markets']} markets at once → all snapshots applied, s (L5)",
             m["snapshots_applied_s"]),
            (f"memory: {m['frames_per_s']} msg/s, {m['markets']} markets, {m['seconds']} s", ""),
            ("  RSS start / after warm-up / end, MiB",
             f"{m['rss_start_mib']} / {m['rss_after_warmup_mib']} / {m['rss_end_mib']}"),
            ("  growth after warm-up, MiB/min (target < 1)",
             f"{m['growth_mib_per_min']}" + ("" if m["steady_state"] else
                                              " (short run: inside the whale window's fill-up; use --soak)")),
            ("  threads / open fds, after warm-up → end",
             f"{m['threads_after_warmup_end'][0]} → {m['threads_after_warmup_end'][1]} / "
             f"{m['fds_after_warmup_end'][0]} → {m['fds_after_warmup_end'][1]}"),
            ("  journal: bytes, rows by table (frames streamed)",
             f"{m['journal']['bytes']:,} B, {m['journal']['rows']} ({m['frames']:,} frames)"),
        ]
    width = max(len(k) for k, _ in rows)
    print("pipeline benchmark (stream: bench/_harness.py replay server; orders: local exchange)")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    for key, what in (("pipeline", "pipeline blast"), ("latency", "paced, every whale followed")):
        prof = r.get(key, {}).get("profile")
        if not prof:
            continue
        if "error" in prof:
            print(f"profile ({what}): {prof['error']}")
            continue
        print(f"py-spy, {what}: {prof['samples']} samples of the GIL holder; GIL busy {prof['gil_busy']:.1%}")
        for title in ("threads", "self", "inclusive"):
            print(f"  top {title}:")
            for name, share in prof[title]:
                print(f"    {share:6.1%}  {name}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--markets", type=int, default=50, help="markets in the throughput and latency phases")
    p.add_argument("--exchange-markets", type=int, default=50, help="markets of the order exchange (whale markets)")
    p.add_argument("--blast-frames", type=int, default=200_000)
    p.add_argument("--blast-timeout", type=float, default=120.0)
    p.add_argument("--paced-rate", type=int, default=1000)
    p.add_argument("--paced-seconds", type=float, default=15.0)
    p.add_argument("--whale-share", type=float, default=0.2, help="share of trades that are whales (latency phase)")
    p.add_argument("--mem-rate", type=int, default=5000)
    p.add_argument("--mem-markets", type=int, default=500)
    p.add_argument("--mem-seconds", type=float, default=30.0)
    p.add_argument("--soak", action="store_true", help="memory phase of 10 minutes")
    p.add_argument("--quick", action="store_true", help="a smoke run of ~20 s (small phases; figures are rough)")
    p.add_argument("--data-dir", default=None, help="where journals go (default: the system temp dir)")
    p.add_argument("--switch-interval-ms", type=float, default=None,
                   help="sys.setswitchinterval for this process (Python's default is 5 ms)")
    p.add_argument("--profile", action="store_true",
                   help="sample the pipeline blast and the paced run with py-spy (the GIL holder) and print the top "
                        "threads and functions")
    p.add_argument("--keep", action="store_true", help="keep the journals (and the py-spy stacks) in the data dir")
    p.add_argument("--skip-blast", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-burst", action="store_true")
    p.add_argument("--burst-rate", type=int, default=20_000, help="L3 burst rate, msg/s")
    p.add_argument("--burst-seconds", type=float, default=5.0)
    p.add_argument("--skip-product-run", action="store_true",
                   help="skip the second latency run (the product's own whale limits: few orders)")
    p.add_argument("--whale-window-minutes", type=int, default=None, help="the whale queue's window (default 5)")
    p.add_argument("--whale-max-age-seconds", type=int, default=None, help="whale max age (default 120)")
    args = p.parse_args(argv)
    if args.whale_window_minutes is not None:
        SETTINGS_OVERRIDES["whale_window_minutes"] = args.whale_window_minutes
    if args.whale_max_age_seconds is not None:
        SETTINGS_OVERRIDES["whale_max_age_seconds"] = args.whale_max_age_seconds
    if args.quick:
        args.blast_frames, args.paced_seconds, args.mem_seconds, args.mem_markets = 30_000, 3.0, 6.0, 100
        args.burst_seconds = 1.0
    if args.soak:
        args.mem_seconds = 600.0
    if args.switch_interval_ms is not None:
        sys.setswitchinterval(args.switch_interval_ms / 1000)
    r = run(args)
    print_table(r)
    print(json.dumps(r, separators=(",", ":"), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
