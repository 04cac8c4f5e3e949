"""F03 end to end: the local exchange's seq faults (duplicate, reorder k+2 before k+1, skipped seq) driven
through the REAL OrderbookFeed (real KalshiWebSocket) and the REAL StateKeeper, then the state keeper's books
compared level by level with the exchange engine's books.

Per fault: the books are live under the synthetic flow, the fault is armed on our sid (Python API or the
loopback ``/_control`` endpoint), the feed reacts (duplicate: dropped, nothing stale; reorder/skip: a gap →
every book stale → ``get_snapshot`` → fresh snapshots), then the flow is paused and we wait until the state
keeper has applied the exchange's last seq on our sid. At that moment both sides describe the same stream
position, so every book must match exactly (both sides, integer price and count units).

The state keeper's books are read where the executor reads them: the ``BookViewsUpdated`` it tells its
``whale_executor`` peer (a probe) for the watched markets; the last view per market is its current book.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import pykka
import pytest
import requests

from actors.base import PeerTable
from actors.orderbook_feed import OrderbookFeed
from actors.state_keeper import StateKeeper
from kalshi.auth import Credentials, generate_key_pair
from kalshi.exchange import LocalExchange
from messages.control import FeedDown, FeedReady, PeersChanged, RequestStats, Tick
from messages.feed import SequenceGap
from messages.state import BookView, BookViewsUpdated, WatchBooks
from tests.actors.helpers_feeds import Recorders, make_context
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(60)

KEY_ID = "book-convergence-4000-8000-000000000003"
N_MARKETS = 4
WS_OPTIONS = {"backoff_initial": 0.1, "backoff_max": 0.5, "connect_timeout": 3.0}
# Counter the exchange bumps when it really applied each fault (FaultInjector.applied).
APPLIED = {"duplicate": "seq_duplicate", "reorder": "seq_reorder", "skip": "seq_skip"}

Levels = tuple[tuple[int, int], ...]


@functools.lru_cache(maxsize=1)
def keys() -> tuple[bytes, bytes]:
    return generate_key_pair()


class Rig:
    """One exchange with the calm flow, the real StateKeeper and OrderbookFeed wired to each other, and probes
    for their other peers (executor, broadcaster) and the supervisor."""

    def __init__(self, tmp_path: Any) -> None:
        private, public = keys()
        self.ex = LocalExchange(api_keys={KEY_ID: public}, flow="calm", rate_limits=False, markets=N_MARKETS).start()
        self.rec: Recorders | None = None
        self.sk: pykka.ActorRef | None = None
        self.feed: pykka.ActorRef | None = None
        try:
            self.markets = tuple(self.ex.call(lambda e: e.active_tickers()))
            assert len(self.markets) == N_MARKETS
            creds = Credentials.from_pem_text(KEY_ID, private.decode())
            ctx = make_context(tmp_path, markets=self.markets, credentials=creds, ws_url=self.ex.ws_url,
                               rest_url=self.ex.rest_url, ws_options=WS_OPTIONS)
            self.rec = Recorders(names=("whale_executor", "broadcaster"))
            probes = [(n, self.rec.refs[n]) for n in ("whale_executor", "broadcaster")]
            # Market data only: no REST account sync (nothing here trades).
            self.sk = StateKeeper.start("state_keeper", 1, self.rec.supervisor, PeerTable(probes),
                                        {"context": ctx, "sync": False})
            self.tick()  # a clock before any book goes stale (its snapshot-retry timer counts from it)
            # Watch every book before any frame arrives: every change reaches the executor probe.
            self.sk.tell(WatchBooks(market_tickers=frozenset(self.markets)))
            self.feed = OrderbookFeed.start("orderbook_feed", 1, self.rec.supervisor,
                                            PeerTable([("state_keeper", self.sk), *probes]), {"context": ctx})
            # The state keeper asks the feed for snapshots (RequestSnapshot) when a delta finds no valid book.
            self.sk.tell(PeersChanged(peers=(("orderbook_feed", self.feed), *probes)))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for ref in (self.feed, self.sk):
            if ref is not None:
                try:
                    ref.stop(block=True, timeout=15)
                except pykka.ActorDeadError:
                    pass
        if self.rec is not None:
            self.rec.stop()
        self.ex.stop()

    # --- helpers -------------------------------------------------------------------------------------

    def tick(self) -> None:
        """The system ticker's job (the feed's recovery ladder and the state keeper's retries run on Ticks)."""
        msg = Tick(now_mono_ns=time.monotonic_ns(), now_wall_ms=time.time_ns() // 1_000_000)
        for ref in (self.feed, self.sk):
            if ref is not None:
                ref.tell(msg)

    def feed_stats(self) -> dict:
        return self.feed.ask(RequestStats(), timeout=5)

    def sk_stats(self) -> dict:
        return self.sk.ask(RequestStats(), timeout=5)

    def views(self) -> dict[str, BookView]:
        """The state keeper's current book per market, as last told to the executor."""
        last: dict[str, BookView] = {}
        for batch in self.rec.got("whale_executor", BookViewsUpdated):
            for view in batch.views:
                last[view.market_ticker] = view
        return last

    def all_books_valid(self) -> bool:
        self.tick()
        views = self.views()
        return set(views) == set(self.markets) and all(v.valid for v in views.values())

    def exchange_books(self, sid: int) -> tuple[int | None, dict[str, tuple[Levels, Levels]]]:
        """On the exchange's loop thread, in one step: the last seq sent on our sid and every watched book
        (YES bids, NO bids in NO-leg prices, ascending), i.e. the books as of that seq."""
        markets = self.markets

        def read(engine: Any) -> tuple[int | None, dict[str, tuple[Levels, Levels]]]:
            subs = [c.subs[sid] for c in self.ex.server.conns if sid in c.subs]
            seq = subs[0].seq if len(subs) == 1 else None
            books = {t: (tuple(engine.markets[t].book.yes.depth()), tuple(engine.markets[t].book.no.depth()))
                     for t in markets}
            return seq, books

        return self.ex.call(read)

    def arm(self, kind: str, sid: int, via: str) -> None:
        if via == "api":
            armed = self.ex.faults.seq_fault(kind, sid)
        else:
            r = requests.post(f"{self.ex.control_url}/ws/seq", json={"kind": kind, "sid": sid}, timeout=5)
            assert r.status_code == 200, r.text
            armed = r.json()["armed"]
        assert armed == 1, f"{kind} armed on {armed} subscriptions"


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.stop()


def assert_books_converge(rig: Rig, sid: int) -> None:
    """Pause the flow, wait until the state keeper has applied the exchange's last seq on ``sid``, then
    compare every book exactly."""
    rig.ex.set_flow("off")  # when this returns the flow makes no further event
    seen: dict[str, Any] = {}

    def same_position() -> tuple | None:
        rig.tick()
        seq, books = rig.exchange_books(sid)
        views = rig.views()
        seen.update(seq=seq, views={t: (v.seq, v.valid, v.reason) for t, v in views.items()})
        if seq is None or set(views) != set(rig.markets):
            return None
        if max(v.seq for v in views.values()) != seq:
            return None
        return seq, books, views

    try:
        seq, books, views = wait_for(same_position, 10, interval=0.02, message="the state keeper at the exchange's seq")
    except AssertionError:
        raise AssertionError(f"state keeper never reached the exchange's seq: last seen {seen}; "
                             f"feed {rig.feed_stats()}; state keeper {rig.sk_stats()}") from None
    diffs = []
    for t in rig.markets:
        v = views[t]
        ours = (tuple(v.yes), tuple(v.no))
        if not v.valid:
            diffs.append(f"{t}: state keeper book invalid ({v.reason})")
        elif ours != books[t]:
            diffs.append(f"{t}: state keeper yes={ours[0]} no={ours[1]} / exchange yes={books[t][0]} no={books[t][1]}")
    assert not diffs, f"books differ at seq {seq}:\n" + "\n".join(diffs)
    # Not a vacuous comparison: the books carry the makers' quotes.
    assert sum(len(yes) + len(no) for yes, no in books.values()) >= N_MARKETS, books


def gaps(rig: Rig, kind: str, after: int) -> list[SequenceGap]:
    return [g for g in rig.rec.got("supervisor", SequenceGap)[after:] if g.kind == kind]


def more_deltas(rig: Rig, n: int) -> None:
    """Wait until the state keeper has applied ``n`` more deltas (the flow keeps moving the books)."""
    target = rig.sk_stats()["deltas_applied"] + n
    wait_for(lambda: rig.sk_stats()["deltas_applied"] >= target, 10, message=f"{n} more deltas applied")


def start_live(rig: Rig) -> tuple[int, int]:
    """Wait for the feed to be ready and every book valid; return (sid, conn_id)."""
    ready = rig.rec.wait("supervisor", FeedReady, timeout=10)[0]
    wait_for(rig.all_books_valid, 10, message="every book valid at the state keeper")
    s = rig.feed_stats()
    assert s["sid"] is not None and s["feed_state"] == "live" and s["conn_id"] == ready.conn_id
    # The flow is moving the books (deltas applied on top of the first snapshots) before any fault.
    more_deltas(rig, 20)
    return s["sid"], s["conn_id"]


def test_duplicate_delta_is_dropped_without_staleness_and_books_match(rig):
    sid, conn = start_live(rig)
    feed0, sk0 = rig.feed_stats(), rig.sk_stats()
    n_gaps = len(rig.rec.got("supervisor", SequenceGap))
    rig.arm("duplicate", sid, "api")
    dup = rig.rec.wait("supervisor", SequenceGap, timeout=10, where=lambda g: g.kind == "duplicate")[0]
    assert dup.sid == sid and dup.got == dup.expected - 1  # the same seq again
    assert rig.ex.faults.count(APPLIED["duplicate"]) == 1
    # Let more deltas flow after the duplicate: applying it twice (or losing the stream) would show below.
    more_deltas(rig, 20)
    assert_books_converge(rig, sid)
    feed1, sk1 = rig.feed_stats(), rig.sk_stats()
    assert feed1["duplicates"] == feed0["duplicates"] + 1
    # No staleness of any kind: no gap, no stale mark, no snapshot asked for or applied, same connection.
    assert gaps(rig, "gap", n_gaps) == [] and gaps(rig, "backward", n_gaps) == []
    assert (feed1["gaps"], feed1["stale_marks"], feed1["snapshot_requests"]) == \
           (feed0["gaps"], feed0["stale_marks"], feed0["snapshot_requests"])
    assert (sk1["stale_marks"], sk1["snapshot_requests"], sk1["snapshots_applied"]) == \
           (sk0["stale_marks"], sk0["snapshot_requests"], sk0["snapshots_applied"])
    assert all(v.valid for v in rig.views().values())
    assert feed1["conn_id"] == conn and feed1["feed_state"] == "live"
    assert rig.rec.got("supervisor", FeedDown) == []


@pytest.mark.parametrize(("kind", "via"), [("reorder", "control"), ("skip", "api")])
def test_reorder_and_skip_stale_resnapshot_and_books_match(rig, kind, via):
    sid, conn = start_live(rig)
    feed0, sk0 = rig.feed_stats(), rig.sk_stats()
    n_gaps = len(rig.rec.got("supervisor", SequenceGap))
    rig.arm(kind, sid, via)
    gap = rig.rec.wait("supervisor", SequenceGap, timeout=10, where=lambda g: g.kind == "gap")[-1]
    assert gap.sid == sid and gap.got == gap.expected + 1  # k+2 while k+1 was expected
    wait_for(lambda: rig.ex.faults.count(APPLIED[kind]) == 1, 5, message=f"{kind} applied by the exchange")
    if kind == "reorder":
        # k+1 comes after k+2: backward, dropped by the client (no reordering buffer) — the gap covers it.
        back = rig.rec.wait("supervisor", SequenceGap, timeout=10, where=lambda g: g.kind == "backward")[0]
        assert back.sid == sid and back.got == gap.expected and back.expected == gap.got + 1
    else:
        assert gaps(rig, "backward", n_gaps) == []
    assert gaps(rig, "duplicate", n_gaps) == []

    # Recovery: every book stale once, fresh snapshots asked for and applied, the feed live again.
    def recovered() -> bool:
        rig.tick()
        f, s = rig.feed_stats(), rig.sk_stats()
        return (f["stage"] is None and f["pending_snapshots"] == 0 and f["feed_state"] == "live"
                and s["snapshots_applied"] >= sk0["snapshots_applied"] + N_MARKETS
                and s["valid_books"] == N_MARKETS)

    wait_for(recovered, 10, interval=0.02, message="fresh snapshots for every book")
    feed1, sk1 = rig.feed_stats(), rig.sk_stats()
    assert feed1["gaps"] == feed0["gaps"] + 1
    # The held-back k+1 of a reorder is counted and dropped (no reordering buffer); a skip has nothing to drop.
    assert feed1["duplicates"] == feed0["duplicates"] + (1 if kind == "reorder" else 0)
    assert feed1["stale_marks"] == feed0["stale_marks"] + 1
    assert feed1["snapshot_requests"] >= feed0["snapshot_requests"] + 1
    assert sk1["stale_marks"] >= sk0["stale_marks"] + N_MARKETS  # one BookStale per book
    # Recovered in place: a book-level gap is no outage, no resubscribe or reconnect was needed.
    assert feed1["conn_id"] == conn and feed1["resubscribes"] == feed0["resubscribes"]
    assert rig.rec.got("supervisor", FeedDown) == []
    more_deltas(rig, 20)  # deltas on top of the fresh snapshots must keep the books right too
    assert_books_converge(rig, sid)
