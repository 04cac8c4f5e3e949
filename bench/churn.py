"""L6 reconnect churn: the real feeds against a local exchange that drops their WebSockets every few seconds.

    /work/venv/bin/python bench/churn.py [--minutes 1] [--drop-every 2] [--markets 20] [--flow calm]
                                         [--settle-timeout 60] [--verbose]

``--minutes 5`` is reliability.md's L6 run. A run lasts the churn, then up to one capped backoff (≤ 30 s) for
the feeds to come back, so the default run takes ~70-100 s.

The local exchange (kalshi.exchange.LocalExchange, synthetic flow on) runs in a child process, so its CPU and
threads stay out of this process's counts. This process runs the real OrderbookFeed and TradesFeed (each with
its kalshi.ws.KalshiWebSocket reader thread, default client options as in production) and the real StateKeeper,
wired by hand as in bench/pipeline.py; a probe actor plays supervisor and broadcaster and timestamps FeedReady /
FeedDown / SequenceGap. The feeds' client factory (config ``ws_factory``) is KalshiWebSocket itself with the
event callback wrapped to timestamp every WsConnected / WsDisconnected (and its announced ``retry_in_s``).

Every ``--drop-every`` seconds the exchange aborts every WebSocket connection (``faults.drop_ws()``: the TCP
connection is cut without a close frame, as a network failure). Measured:
- reconnects per feed; drop → reconnected and drop → ready (books have their snapshots) p50/max; the backoff
  the client announced for each reconnect, checked against its schedule (equal jitter in [base/2, base],
  base = min(backoff_max, backoff_initial · 2^(k-1)), k = connections in a row that lived < healthy_after_s);
  connection attempts that failed and the longest run of them;
- after every FeedReady: the exchange's own subscription table for our API key (read on its event loop via
  ``LocalExchange.call``; there is no status or /_control endpoint listing subscriptions): exactly one
  connection carrying that feed's channel, holding exactly one subscription (orderbook_delta: our markets);
  and after the run, with both feeds ready: 2 connections, 2 subscriptions;
- threads (names) and open fds of this process at start, after the first minute of churn, at the end (feeds
  ready again) and after everything stopped (vs before anything started); RSS at start / end; the exchange's
  asyncio task count at start / end (this process runs no asyncio loop);
- books valid at the end, stale marks, snapshots applied, seq gaps, and that both feeds end ready.
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # allow `python bench/churn.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pykka  # noqa: E402

from actors.base import PeerTable, SupervisedActor, handles  # noqa: E402
from actors.context import SystemContext  # noqa: E402
from actors.orderbook_feed import OrderbookFeed  # noqa: E402
from actors.settings import load_settings  # noqa: E402
from actors.state_keeper import StateKeeper  # noqa: E402
from actors.ticker import Ticker  # noqa: E402
from actors.trades_feed import TradesFeed  # noqa: E402
from bench._harness import ChildProcess, pct, wait_until  # noqa: E402
from kalshi.auth import Credentials, generate_key_pair  # noqa: E402
from kalshi.exchange.server import user_id_for_key  # noqa: E402
from kalshi.ws import KalshiWebSocket, WsConnected, WsDisconnected  # noqa: E402
from messages.base import Message  # noqa: E402
from messages.control import FeedDown, FeedReady, PeersChanged, RequestStats  # noqa: E402
from messages.feed import SequenceGap  # noqa: E402

log = logging.getLogger("bench.churn")
KEY_ID = "bench0000-0000-4000-8000-00000000c6c6"
FEEDS = {"orderbook_feed": "orderbook_delta", "trades_feed": "trade"}  # feed → its one channel


# ------------------------------------------------------------------------------ the exchange (child process)


def _serve_exchange(pipe: Any, markets: int, flow: str, public_pem: bytes, user: str) -> None:
    """Child process: a LocalExchange with its synthetic flow on, answering the parent's commands."""
    import asyncio

    from kalshi.exchange import LocalExchange

    ex = LocalExchange(markets=markets, flow=flow, api_keys={KEY_ID: public_pem}).start()

    def subscriptions(_engine: Any) -> dict[str, Any]:
        # Runs on the exchange's loop thread (LocalExchange.call): the server's own connection table.
        server = ex.server
        conns = []
        for c in server.conns:
            if c.user != user:
                continue
            conns.append({"closed": c.closed, "subs": [
                {"channel": s.channel, "sid": s.sid, "tickers": None if s.tickers is None else sorted(s.tickers)}
                for s in sorted(c.subs.values(), key=lambda s: s.sid)]})
        return {"conns": conns, "all_conns": len(server.conns), "tasks": len(asyncio.all_tasks())}

    commands = {
        "drop": lambda: ex.faults.drop_ws(),
        "subs": lambda: ex.call(subscriptions),
        "stats": lambda: {**ex.stats(), "faults_applied": ex.faults.snapshot()["applied"]},
    }
    parent = os.getppid()
    try:
        pipe.send((ex.ws_url, ex.rest_url, list(ex.call(lambda e: e.market_tickers()))))
        while True:
            if not pipe.poll(1.0):
                if os.getppid() != parent:  # the bench died without telling us
                    break
                continue
            cmd = pipe.recv()
            if cmd == "stop":
                break
            try:
                pipe.send(("ok", commands[cmd]()))
            except Exception as exc:  # answer with the error rather than leave the bench waiting
                pipe.send(("error", f"{type(exc).__name__}: {exc}"[:300]))
    finally:
        ex.stop()
    pipe.send("stopped")


class ExchangeProcess:
    def __init__(self, markets: int, flow: str, public_pem: bytes) -> None:
        self._child = ChildProcess(_serve_exchange, (markets, flow, public_pem, user_id_for_key(KEY_ID)),
                                   "bench-churn-exchange")
        self.ws_url = self.rest_url = ""
        self.tickers: list[str] = []

    def start(self) -> ExchangeProcess:
        self.ws_url, self.rest_url, self.tickers = self._child.start(60)
        return self

    def request(self, cmd: str, timeout: float = 15.0) -> Any:
        return self._child.call(cmd, timeout)

    def stop(self) -> None:
        self._child.stop()


# ------------------------------------------------------------------------------ recording


class EventLog:
    """Timestamped events from the reader threads (WS events) and the probe (supervisor messages).
    Appends only (atomic under the GIL); the driver reads by index."""

    def __init__(self) -> None:
        self.ws: list[tuple[float, str, int, Any]] = []  # (monotonic s, feed, client number, event)
        self.probe: list[tuple[float, Any]] = []
        self.clients: Counter[str] = Counter()  # KalshiWebSocket instances made per feed


def recording_ws_factory(events: EventLog) -> Any:
    """A ``ws_factory`` for the feeds: the real KalshiWebSocket, its event callback timestamped first."""

    def factory(url: str, credentials: Any, *, on_frames: Any, on_event: Any, **options: Any) -> KalshiWebSocket:
        feed = options.get("name", "?")
        events.clients[feed] += 1
        client_no = events.clients[feed]

        def on_event_recorded(event: object) -> None:
            if isinstance(event, (WsConnected, WsDisconnected)):
                events.ws.append((time.monotonic(), feed, client_no, event))
            on_event(event)

        return KalshiWebSocket(url, credentials, on_frames=on_frames, on_event=on_event_recorded, **options)

    return factory


class Probe(SupervisedActor):
    """Plays supervisor and broadcaster: timestamps feed readiness and sequence issues, counts the rest."""

    def setup(self) -> None:
        self.events: EventLog = self.config["events"]
        self.counts: Counter[str] = Counter()

    @handles(FeedReady, FeedDown, SequenceGap)
    def on_feed(self, msg: Any) -> None:
        self.counts[type(msg).__name__] += 1
        self.events.probe.append((time.monotonic(), msg))

    @handles(Message)
    def on_other(self, msg: Message) -> None:
        self.counts[type(msg).__name__] += 1

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out["counts"] = dict(self.counts)
        return out


class LogCounter(logging.Handler):
    """Counts WARNING+ records by logger and message template (the console shows ERROR+ only)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.levelname} {record.name}: {str(record.msg)[:60]}"] += 1


def ws_defaults(overrides: Any) -> dict[str, float]:
    """The reconnect settings the feeds' clients run with: KalshiWebSocket's defaults + ctx.ws_options."""
    params = inspect.signature(KalshiWebSocket.__init__).parameters
    names = ("backoff_initial", "backoff_max", "healthy_after_s")
    return {n: float(overrides.get(n, params[n].default)) for n in names}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def thread_names() -> Counter[str]:
    return Counter(t.name for t in threading.enumerate())


def sample(label: str, t0: float, events: EventLog | None = None) -> dict[str, Any]:
    """Threads, fds and RSS now; with ``events``, how many feeds hold a connection (each holds one socket fd;
    a feed backing off holds none)."""
    out = {"label": label, "t_s": round(time.monotonic() - t0, 1), "threads": threading.active_count(),
           "fds": open_fds(), "rss_mib": round(rss_mib(), 1), "names": dict(thread_names())}
    if events is not None:
        last: dict[str, Any] = {}
        for _, feed, _, ev in list(events.ws):
            last[feed] = ev
        out["feeds_connected"] = sum(1 for ev in last.values() if isinstance(ev, WsConnected))
    return out


def spread(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50": _r(pct(values, 50)), "max": _r(max(values) if values else None)}


def _r(v: float | None, nd: int = 3) -> float | None:
    return None if v is None else round(v, nd)


# ------------------------------------------------------------------------------ the system under test


class ChurnSystem:
    """OrderbookFeed + TradesFeed + StateKeeper, a probe as supervisor/broadcaster, a ticker."""

    def __init__(self, ex: ExchangeProcess, creds: Credentials, markets: tuple[str, ...], data_dir: Path,
                 events: EventLog) -> None:
        settings = load_settings(config_path=None, environ={}, dotenv_path=None, flags={
            "environment": "local", "data_dir": str(data_dir), "orderbook_market_limit": len(markets),
            "cleanup_on_startup": False})
        self.ctx = SystemContext(settings=settings, rest_url=ex.rest_url, ws_url=ex.ws_url, credentials=creds,
                                 data_dir=data_dir, market_tickers=markets, environment="local", execution="exchange")
        self.events = events
        self.refs: dict[str, pykka.ActorRef[Any]] = {}
        self.ticker: Ticker | None = None

    def start(self) -> None:
        base = {"context": self.ctx, "events": self.events}
        probe = Probe.start("broadcaster", 1, None, PeerTable(), base)
        self.refs["broadcaster"] = probe
        feed_cfg = {**base, "ws_factory": recording_ws_factory(self.events)}
        for name, cls, cfg in (("state_keeper", StateKeeper, base), ("orderbook_feed", OrderbookFeed, feed_cfg),
                               ("trades_feed", TradesFeed, feed_cfg)):  # downstream first
            self.refs[name] = cls.start(name, 1, probe, PeerTable(self.refs), cfg)
        pairs = tuple(self.refs.items())
        for ref in self.refs.values():
            ref.tell(PeersChanged(peers=pairs))
        self.ticker = Ticker([self.refs[n] for n in ("state_keeper", "orderbook_feed", "trades_feed")], 0.1).start()

    def stats(self, name: str) -> dict[str, Any]:
        return self.refs[name].ask(RequestStats(), timeout=30)

    def stop(self) -> None:
        if self.ticker is not None:
            self.ticker.stop()
        for name in ("orderbook_feed", "trades_feed", "state_keeper", "broadcaster"):
            ref = self.refs.pop(name, None)
            if ref is not None:
                try:
                    ref.stop(timeout=30)
                except (pykka.ActorDeadError, pykka.Timeout):
                    log.error("stopping %s failed", name)


def check_subscriptions(subs: dict[str, Any], feed: str, markets: tuple[str, ...]) -> tuple[bool, str]:
    """The server holds exactly one connection carrying ``feed``'s channel, with exactly that one subscription
    (orderbook_delta: for exactly our markets; trade: for every market)."""
    channel = FEEDS[feed]
    mine = [c for c in subs["conns"] if any(s["channel"] == channel for s in c["subs"])]
    if len(mine) != 1:
        return False, f"{len(mine)} server connections carry {channel}"
    got = mine[0]["subs"]
    if len(got) != 1:
        return False, f"{len(got)} subscriptions on the {channel} connection: {[s['channel'] for s in got]}"
    tickers = got[0]["tickers"]
    if channel == "orderbook_delta" and tickers != sorted(markets):
        return False, f"orderbook_delta holds {len(tickers or [])} markets, expected {len(markets)}"
    if channel == "trade" and tickers is not None:
        return False, f"trade subscription filtered to {len(tickers)} markets, expected all"
    return True, ""


# ------------------------------------------------------------------------------ the run


def run(args: argparse.Namespace) -> dict[str, Any]:
    counter = LogCounter()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    for h in root.handlers:  # the console: warnings only with --verbose (a drop logs several by design)
        h.setLevel(logging.WARNING if args.verbose else logging.ERROR)
    root.addHandler(counter)

    private_pem, public_pem = generate_key_pair()
    creds = Credentials.from_pem_text(KEY_ID, private_pem)
    ex = ExchangeProcess(args.markets, args.flow, public_pem).start()
    data_dir = Path(tempfile.mkdtemp(prefix="bench-churn-"))
    events = EventLog()
    system: ChurnSystem | None = None
    res: dict[str, Any] = {"bench": "reconnect_churn", "minutes": args.minutes, "drop_every_s": args.drop_every,
                           "flow": args.flow, "cpu_count": os.cpu_count()}
    t0 = time.monotonic()
    try:
        markets = tuple(ex.tickers[: args.markets])
        res["markets"] = len(markets)
        before = sample("before start", t0)
        system = ChurnSystem(ex, creds, markets, data_dir, events)
        res["ws_settings"] = ws_defaults(system.ctx.ws_options)
        system.start()

        ready: dict[str, bool] = dict.fromkeys(FEEDS, False)
        probe_i = 0
        checks: list[dict[str, Any]] = []
        drops: list[tuple[float, int]] = []  # (monotonic s, connections the exchange aborted)
        last_drop = 0.0

        def take_probe_events() -> list[tuple[float, str]]:
            """Readiness changes since the last call: (time, feed) of each FeedReady that follows a FeedDown
            (a ready feed repeats FeedReady with its status every second: those are not changes)."""
            nonlocal probe_i
            new = events.probe[probe_i:]
            probe_i += len(new)
            became_ready = []
            for t, msg in new:
                if isinstance(msg, FeedReady) and msg.feed in ready and not ready[msg.feed]:
                    ready[msg.feed] = True
                    became_ready.append((t, msg.feed))
                elif isinstance(msg, FeedDown) and msg.feed in ready:
                    ready[msg.feed] = False
            return became_ready

        wait_until(lambda: (take_probe_events(), all(ready.values()))[1], 60, "feeds not ready at start")
        wait_until(lambda: _syncs_done(system.stats("state_keeper")), 30, "first REST sync did not end")
        time.sleep(1.0)  # let start-up threads (the state keeper's first REST sync) end before the first sample
        take_probe_events()
        subs0 = ex.request("subs")
        start = sample("start (feeds ready)", t0, events)
        res["exchange_tasks_start"] = subs0["tasks"]
        samples = [before, start]

        # ---- churn
        churn_start = time.monotonic()
        churn_end = churn_start + 60.0 * args.minutes
        next_drop = churn_start + args.drop_every
        minute_sampled = False
        print(f"[{time.strftime('%H:%M:%S')}] churn: dropping every {args.drop_every}s for {args.minutes} min",
              file=sys.stderr, flush=True)
        while True:
            now = time.monotonic()
            # Readiness first, then its subscription check, then the next drop: a check never sees a drop it
            # should not (a FeedReady handled after a drop that followed it is reported as raced).
            for t, feed in take_probe_events():
                if last_drop > t:
                    checks.append({"feed": feed, "t_s": round(t - churn_start, 3), "raced_drop": True})
                    continue
                subs = ex.request("subs")
                ok, why = check_subscriptions(subs, feed, markets)
                checks.append({"feed": feed, "t_s": round(t - churn_start, 3), "ok": ok, "why": why,
                               "server_conns": len(subs["conns"]),
                               "server_subs": sum(len(c["subs"]) for c in subs["conns"])})
            if not minute_sampled and now - churn_start >= 60.0:
                samples.append(sample("after 1st minute of churn", t0, events))
                minute_sampled = True
            if now >= churn_end:
                break
            if now >= next_drop:
                last_drop = time.monotonic()
                drops.append((last_drop, ex.request("drop")))
                next_drop += args.drop_every
            time.sleep(max(0.0, min(0.02, next_drop - time.monotonic())))
        churn_s = time.monotonic() - churn_start

        # ---- settle: no more drops; the feeds come back after their current backoff
        print(f"[{time.strftime('%H:%M:%S')}] churn over: waiting for the feeds", file=sys.stderr, flush=True)
        settle_start = time.monotonic()
        wait_until(lambda: (take_probe_events(), all(ready.values()))[1], args.settle_timeout,
                   "feeds not ready after the churn")
        settle_s = time.monotonic() - settle_start
        wait_until(lambda: not system.stats("trades_feed")["backfill_running"], 30, "backfill did not end")
        wait_until(lambda: system.stats("state_keeper")["valid_books"] == len(markets), 10, "books not valid")
        time.sleep(1.0)  # transient threads (backfill, client reapers, REST sync) end
        take_probe_events()
        subs_end = ex.request("subs")
        end = sample("end (feeds ready again)", t0, events)
        samples.append(end)
        final_ok = {f: check_subscriptions(subs_end, f, markets) for f in FEEDS}
        sk = system.stats("state_keeper")
        ob = system.stats("orderbook_feed")
        tf = system.stats("trades_feed")
        probe = system.stats("broadcaster")
        ex_stats = ex.request("stats")
        system.stop()
        system = None
        time.sleep(0.5)  # daemon reapers of replaced clients, if any, finish
        after = sample("after stop", t0)
        samples.append(after)

        res.update(analyse(events, drops, churn_start, res["ws_settings"]))
        for feed, share in ready_share(events, churn_start, churn_start + churn_s).items():
            res["per_feed"][feed]["ready_share_during_churn"] = share
        ok_checks = [c for c in checks if c.get("ok")]
        bad_checks = [c for c in checks if c.get("ok") is False]
        res.update({
            "churn_s": round(churn_s, 1),
            "settle_s": round(settle_s, 1),
            "drops": len(drops),
            "drops_hit": sum(1 for _, n in drops if n),
            "connections_aborted": sum(n for _, n in drops),
            "subscription_checks": {
                "after_reconnect": len(ok_checks) + len(bad_checks),
                "ok": len(ok_checks),
                "mismatch": bad_checks[:10],
                "raced_a_drop": sum(1 for c in checks if c.get("raced_drop")),
                "max_server_conns": max((c["server_conns"] for c in ok_checks + bad_checks), default=None),
                "max_server_subs": max((c["server_subs"] for c in ok_checks + bad_checks), default=None),
                "end": {"conns": len(subs_end["conns"]), "subs": sum(len(c["subs"]) for c in subs_end["conns"]),
                        "ok": all(v[0] for v in final_ok.values()),
                        "why": {f: v[1] for f, v in final_ok.items() if not v[0]}},
            },
            "samples": samples,
            "thread_diff_end_vs_start": _name_diff(start["names"], end["names"]),
            "thread_diff_after_stop_vs_before": _name_diff(before["names"], after["names"]),
            "exchange_tasks_end": subs_end["tasks"],
            "exchange": {k: ex_stats.get(k) for k in ("ws_connections", "connections", "overflows", "engine_errors",
                                                      "faults_applied")},
            "feeds": {name: {k: s.get(k) for k in (
                "ready", "feed_state", "connections", "reconnects", "client_replacements", "gaps", "duplicates",
                "stalls", "stale_frames", "command_errors", "messages", "snapshots", "snapshot_requests",
                "snapshot_requests_skipped", "resubscribes", "stale_marks", "trades", "backfills", "backfilled", "backfill_errors",
                "last_backfill_error") if k in s} for name, s in (("orderbook_feed", ob), ("trades_feed", tf))},
            "state_keeper": {k: sk.get(k) for k in ("books", "valid_books", "stale_marks", "snapshots_applied",
                                                    "deltas_applied", "snapshot_requests", "ignored_frames",
                                                    "trades_seen", "syncs_ok", "syncs_failed")},
            "probe_counts": probe["counts"],
            "warnings_logged": dict(counter.counts.most_common(12)),
        })
    finally:
        if system is not None:
            system.stop()
        ex.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    res["run_s"] = round(time.monotonic() - t0, 1)
    return res


def _syncs_done(sk: dict[str, Any]) -> bool:
    return sk["syncs_started"] >= 1 and sk["syncs_started"] == sk["syncs_ok"] + sk["syncs_failed"]


def _name_diff(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: b.get(k, 0) - a.get(k, 0) for k in sorted(set(a) | set(b)) if b.get(k, 0) != a.get(k, 0)}


def ready_share(events: EventLog, start: float, end: float) -> dict[str, float]:
    """Share of [start, end] each feed spent ready (FeedReady → FeedDown), from the probe's timestamps."""
    out: dict[str, float] = {}
    for feed in FEEDS:
        state, since, up = True, start, 0.0  # every feed is ready when the churn starts
        for t, msg in events.probe:
            if getattr(msg, "feed", None) != feed or not start <= t <= end:
                continue
            if isinstance(msg, FeedDown) and state:
                up += t - since
                state = False
            elif isinstance(msg, FeedReady) and not state:
                state, since = True, t
        if state:
            up += end - since
        out[feed] = round(up / (end - start), 3)
    return out


def analyse(events: EventLog, drops: list[tuple[float, int]], churn_start: float,
            ws: dict[str, float]) -> dict[str, Any]:
    """Per feed: reconnects, drop → reconnected / ready delays, the announced backoff vs its schedule."""
    drop_times = [t for t, n in drops if n]
    ready_times: dict[str, list[float]] = {f: [] for f in FEEDS}
    for t, msg in events.probe:
        if isinstance(msg, FeedReady) and msg.feed in ready_times:
            ready_times[msg.feed].append(t)
    out: dict[str, Any] = {}
    for feed in FEEDS:
        up: dict[tuple[int, int], float] = {}  # (client, conn_id) → connected at
        streak = 0  # the client's "failures in a row": +1 per short-lived connection or failed attempt
        fail_run = max_fail_run = failures = 0
        announced: list[float] = []
        schedule_ok = schedule_bad = 0
        first_cap_at: int | None = None
        pending_drop: float | None = None  # the drop that ended the last connection
        drop_to_conn: list[float] = []
        drop_to_ready: list[float] = []
        detect: list[float] = []
        lifetimes: list[float] = []
        reasons: Counter[str] = Counter()
        reconnects = 0
        for t, f, client, ev in events.ws:
            if f != feed:
                continue
            key = (client, ev.conn_id)
            if isinstance(ev, WsConnected):
                up[key] = t
                fail_run = 0
                if pending_drop is not None:
                    reconnects += 1
                    drop_to_conn.append(t - pending_drop)
                    nxt = next((r for r in ready_times[feed] if r >= t), None)
                    if nxt is not None:
                        drop_to_ready.append(nxt - pending_drop)
                    pending_drop = None
                continue
            if ev.reason == "stopped":
                continue
            reasons[ev.reason] += 1
            if key in up:
                lived = t - up.pop(key)
                lifetimes.append(lived)
                streak = 1 if lived >= ws["healthy_after_s"] else streak + 1
                cause = max((d for d in drop_times if d <= t), default=None)
                if cause is not None and t - cause < 1.0:
                    detect.append(t - cause)
                    pending_drop = cause
                else:
                    pending_drop = t  # not ours (a stall, a ping timeout): measure from the disconnect
            else:  # an attempt that never connected
                failures += 1
                fail_run += 1
                max_fail_run = max(max_fail_run, fail_run)
                streak += 1
            if ev.retry_in_s is not None:
                base = min(ws["backoff_max"], ws["backoff_initial"] * 2.0 ** (streak - 1))
                announced.append(ev.retry_in_s)
                if base / 2 - 0.001 <= ev.retry_in_s <= base + 0.001:
                    schedule_ok += 1
                else:
                    schedule_bad += 1
                if base >= ws["backoff_max"] and first_cap_at is None:
                    first_cap_at = len(announced)
        out[feed] = {
            "reconnects": reconnects,
            "disconnect_reasons": dict(reasons),
            "failed_attempts": failures,
            "max_consecutive_failures": max_fail_run,
            "drop_detected_s": spread(detect),
            "drop_to_reconnected_s": spread(drop_to_conn),
            "drop_to_ready_s": spread(drop_to_ready),
            "connection_lifetime_s": spread(lifetimes),
            "announced_backoff_s": [round(a, 2) for a in announced],
            "announced_backoff_p50_max": spread(announced),
            "backoff_within_schedule": f"{schedule_ok}/{schedule_ok + schedule_bad}",
            "backoff_capped_from_reconnect": first_cap_at,
        }
    return {"per_feed": out}


# ------------------------------------------------------------------------------ output


def print_table(r: dict[str, Any]) -> None:
    ws = r["ws_settings"]
    sc = r["subscription_checks"]
    rows: list[tuple[str, Any]] = [
        ("markets / flow", f"{r['markets']} / {r['flow']}"),
        ("churn: drop every, s / lasted, s", f"{r['drop_every_s']} / {r['churn_s']}"),
        ("drops sent / that hit a connection / connections aborted",
         f"{r['drops']} / {r['drops_hit']} / {r['connections_aborted']}"),
        ("client backoff: initial / max / healthy after, s",
         f"{ws['backoff_initial']} / {ws['backoff_max']} / {ws['healthy_after_s']}"),
    ]
    for feed, f in r["per_feed"].items():
        st = r["feeds"][feed]
        rows += [
            (f"[{feed}]", ""),
            ("  reconnects (feed's own count / client replacements)",
             f"{f['reconnects']} ({st['reconnects']} / {st['client_replacements']})"),
            ("  disconnect reasons", f["disconnect_reasons"]),
            ("  failed attempts / max consecutive failures", f"{f['failed_attempts']} / {f['max_consecutive_failures']}"),
            ("  drop detected by the client, s p50 / max", _pm(f["drop_detected_s"])),
            ("  drop → reconnected, s p50 / max", _pm(f["drop_to_reconnected_s"])),
            ("  drop → ready (FeedReady), s p50 / max", _pm(f["drop_to_ready_s"])),
            ("  connection lifetime, s p50 / max", _pm(f["connection_lifetime_s"])),
            ("  announced backoff, s (in order)", " ".join(str(a) for a in f["announced_backoff_s"][:24])
             + (" …" if len(f["announced_backoff_s"]) > 24 else "")),
            ("  backoff p50 / max, s", _pm(f["announced_backoff_p50_max"])),
            ("  backoff within [base/2, base] of its schedule", f["backoff_within_schedule"]),
            ("  base reaches the cap at reconnect #", f["backoff_capped_from_reconnect"]),
            ("  gaps / duplicates / stalls / command errors",
             f"{st['gaps']} / {st['duplicates']} / {st['stalls']} / {st['command_errors']}"),
            ("  share of the churn spent ready", f["ready_share_during_churn"]),
            ("  ready at the end / state", f"{st['ready']} / {st['feed_state']}"),
        ]
        if feed == "trades_feed":
            rows.append(("  backfills / trades backfilled / backfill errors",
                         f"{st['backfills']} / {st['backfilled']} / {st['backfill_errors']}"))
        else:
            rows.append(("  snapshots / snapshot requests / resubscribes / stale marks",
                         f"{st['snapshots']} / {st['snapshot_requests']} / {st['resubscribes']} / {st['stale_marks']}"))
    sk = r["state_keeper"]
    rows += [
        ("server subscriptions after each reconnect (FeedReady): ok / checked",
         f"{sc['ok']} / {sc['after_reconnect']} (raced a drop, not checked: {sc['raced_a_drop']})"),
        ("  mismatches", sc["mismatch"] or "none"),
        ("  most server connections / subscriptions seen at a check", f"{sc['max_server_conns']} / {sc['max_server_subs']}"),
        ("  at the end: connections / subscriptions (expected 2 / 2)",
         f"{sc['end']['conns']} / {sc['end']['subs']} {'ok' if sc['end']['ok'] else sc['end']['why']}"),
        ("books valid at the end", f"{sk['valid_books']} / {sk['books']}"),
        ("state keeper: stale marks / snapshots applied / snapshot requests",
         f"{sk['stale_marks']} / {sk['snapshots_applied']} / {sk['snapshot_requests']}"),
        ("state keeper: deltas applied / ignored frames / trades seen",
         f"{sk['deltas_applied']} / {sk['ignored_frames']} / {sk['trades_seen']}"),
        ("probe: FeedReady / FeedDown / SequenceGap",
         " / ".join(str(r["probe_counts"].get(k, 0)) for k in ("FeedReady", "FeedDown", "SequenceGap"))),
    ]
    for s in r["samples"]:
        conn = f" ({s['feeds_connected']} of 2 feeds connected)" if "feeds_connected" in s else ""
        rows.append((f"threads / fds / RSS MiB: {s['label']} (t={s['t_s']}s)",
                     f"{s['threads']} / {s['fds']} / {s['rss_mib']}{conn}"))
    rows += [
        ("  thread names, end vs start", r["thread_diff_end_vs_start"] or "same"),
        ("  thread names, after stop vs before start", r["thread_diff_after_stop_vs_before"] or "same"),
        ("exchange asyncio tasks: start / end (incl. 1 writer per connection)",
         f"{r['exchange_tasks_start']} / {r['exchange_tasks_end']}"),
        ("exchange: WS connections accepted / open at the end",
         f"{r['exchange']['ws_connections']} / {r['exchange']['connections']}"),
        ("feeds settled after the churn, s", r["settle_s"]),
        ("warnings logged (top)", ""),
    ]
    rows += [(f"  {n}×", k) for k, n in r["warnings_logged"].items()]
    rows.append(("run, s", r["run_s"]))
    width = max(len(k) for k, _ in rows)
    print("L6 reconnect churn (real feeds + state keeper; local exchange in a child process drops every WS)")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


def _pm(s: dict[str, Any]) -> str:
    return f"{s['p50']} / {s['max']} (n={s['n']})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=1.0, help="how long to churn (L6: 5)")
    p.add_argument("--drop-every", type=float, default=2.0, help="seconds between drops")
    p.add_argument("--markets", type=int, default=20, help="order-book markets (the exchange's first N)")
    p.add_argument("--flow", default="calm", choices=("calm", "firehose"), help="the exchange's synthetic flow")
    p.add_argument("--settle-timeout", type=float, default=60.0,
                   help="after the churn, how long the feeds may take to be ready again")
    p.add_argument("--verbose", action="store_true", help="print warnings (they are counted either way)")
    args = p.parse_args(argv)
    if args.drop_every <= 0 or args.minutes <= 0 or args.markets <= 0:
        p.error("--minutes, --drop-every and --markets must be positive")
    r = run(args)
    print_table(r)
    print(json.dumps(r, separators=(",", ":"), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
