"""F15 end to end (reliability.md §7.2, README "Backpressure"): the whole actor system (SystemRig: every real
actor, in-process) against an in-process LocalExchange whose synthetic flow runs hot, with one consumer stalled.

1. The whale executor's thread blocks for 5 s right after it handed a follow to its venue worker (a slow
   journal or GC pause with an order in flight). The state keeper holds book views newest-per-market and the
   tracker keeps only the newest queue update while the executor has ``executor_backlog`` messages waiting;
   private messages (the order's result, our fills, account views) queue up and are never dropped. After the
   stall the system carries on: gate open, books valid, fresh views, whales followed again, no order sent
   twice, every fill of ours journaled.
2. The state keeper blocks for 3 s: the order book feed sees the state keeper's mailbox past
   ``overflow_depth``, marks every book stale and drops deltas; the state keeper's inbox stays bounded; once it
   has drained, the books come back from fresh snapshots and equal the exchange's books level by level; no
   public trade is lost.

Stalls are test-only messages handled by subclasses of the real actors (a handler waiting on an Event with a
timeout, released early in teardown). Both subclasses also get a counting inbox (a ``queue.SimpleQueue`` that
counts waiting messages per type), so the bounds on the conflated channels are checked exactly, not sampled.
Whales are made by hand (the flow's own whales are 1 contract, its noise trades far below the whale size).
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from collections import Counter
from typing import Any

import pytest

from actors.base import handles, mailbox_depth
from actors.state_keeper import StateKeeper
from actors.whale_executor import WhaleExecutor
from kalshi.exchange.flow import FlowConfig
from kalshi.units import COUNT_ONE, MONEY_ONE, PRICE_ONE
from messages.base import Message, message
from tests.helpers import wait_for
from tests.integration.helpers_system import MAKER_USER, NS, SystemRig

pytestmark = pytest.mark.timeout(90)

MARKETS = 4
# ~3,000 public messages/s of book churn over 4 markets (about 50 WS bursts a second, each one state keeper
# batch); no flow whales worth the name; a noise trade every 200 ms (1–25 contracts, never a whale).
HOT_FLOW = FlowConfig(messages_per_s=3000, whale_every_s=1_000_000.0, whale_sizes=(1,), whale_weights=(1,),
                      noise_takers_per_s=5.0)
# The production tick and report intervals (actor_config.toml), so the never-dropped control traffic in a
# stalled inbox is what it would be in production; pings every second (SystemRig).
TICK_S, REPORT_S, PING_S = 0.1, 0.5, 1.0
SUPERVISOR = {"tick_interval_ns": NS // 10, "report_interval_ns": NS // 2}
WHALE_CONTRACTS = 150  # payout $150 ≥ WHALE_MIN_SIZE_CENTS ($100); a noise print is at most 25 contracts
CYCLE_S = 1  # V3_CYCLE_SECONDS (SystemRig): the state keeper's REST sync period

EXECUTOR_STALL_S = 5.0
REFILL_S = 4  # WHALE_TOKEN_REFILL_SECONDS: shorter than the stall, so a token is back when it ends
EXECUTOR_BACKLOG = 5
KEEPER_STALL_S = 3.0
OVERFLOW_DEPTH = 30


# --- test-only instrumentation ---------------------------------------------------------------------------


class Stall:
    """One stall of an actor thread: ``block()`` runs on that thread and waits for ``release`` (or the timeout)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.release = threading.Event()
        self.entered = threading.Event()
        self.exited = threading.Event()
        self.entered_mono = 0.0
        self.exited_mono = 0.0
        self.exited_wall_ms = 0
        self.views_at_entry: dict[str, int] = {}

    def block(self, views: dict[str, Any] | None = None) -> None:
        self.views_at_entry = {t: v.seq for t, v in (views or {}).items()}
        self.entered_mono = time.monotonic()
        self.entered.set()
        self.release.wait(self.timeout_s)
        self.exited_mono = time.monotonic()
        self.exited_wall_ms = time.time_ns() // 1_000_000
        self.exited.set()

    @property
    def duration_s(self) -> float:
        return (self.exited_mono or time.monotonic()) - self.entered_mono


class CountingInbox(queue.SimpleQueue):
    """A Pykka inbox counting messages per type: put (ever) and waiting (now), and the peak of the waiting
    messages of ``group`` (the channel under an overflow policy). Counted before the put and after the get,
    so the waiting counts are never below the truth."""

    def __init__(self, group: tuple[str, ...]) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.group = frozenset(group)
        self.waiting: Counter[str] = Counter()
        self.put_total: Counter[str] = Counter()
        self.group_waiting = 0
        self.group_peak = 0

    @staticmethod
    def _kind(item: Any) -> str:
        return type(getattr(item, "message", item)).__name__

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        kind = self._kind(item)
        with self._lock:
            self.waiting[kind] += 1
            self.put_total[kind] += 1
            if kind in self.group:
                self.group_waiting += 1
                self.group_peak = max(self.group_peak, self.group_waiting)
        super().put(item, block, timeout)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        item = super().get(block, timeout)
        kind = self._kind(item)
        with self._lock:
            self.waiting[kind] -= 1
            if kind in self.group:
                self.group_waiting -= 1
        return item

    def restart_peak(self) -> None:
        with self._lock:
            self.group_peak = self.group_waiting

    def counts(self) -> tuple[dict[str, int], dict[str, int], int]:
        """(waiting now, put so far, group peak)."""
        with self._lock:
            return ({k: n for k, n in self.waiting.items() if n}, dict(self.put_total), self.group_peak)


@message
class StallNow(Message):
    stall: Stall


@message
class StallAfterNextFollow(Message):
    stall: Stall


@message
class ProbeViews(Message):
    pass


@message
class ProbeBooks(Message):
    pass


EXECUTOR_GROUP = ("BookViewsUpdated", "WhaleQueueUpdated")  # the two latest-wins channels into the executor
KEEPER_GROUP = ("BookFramesReceived",)  # the order book feed's channel into the state keeper


class StallingExecutor(WhaleExecutor):
    """The real executor; ``StallAfterNextFollow`` makes the handler that next hands a follow to the venue worker
    block afterwards (the order is in flight while the thread is stuck)."""

    _armed: Stall | None = None

    @staticmethod
    def _create_actor_inbox() -> CountingInbox:
        return CountingInbox(EXECUTOR_GROUP)

    @handles(StallAfterNextFollow)
    def on_test_arm(self, msg: StallAfterNextFollow) -> None:
        self._armed = msg.stall

    @handles(ProbeViews)
    def on_test_probe(self, msg: ProbeViews) -> dict[str, tuple[int, bool]]:
        return {t: (v.seq, v.valid) for t, v in self.views.items()}

    # A follow is decided on a queue update, on a book view (a whale waiting for its market's first view) or
    # on a Tick (a rate-limited whale getting its token): each path can be the one that sends.
    def on_queue(self, msg: Any) -> None:
        self._then_stall(super().on_queue, msg)

    def on_books(self, msg: Any) -> None:
        self._then_stall(super().on_books, msg)

    def on_tick(self, msg: Any) -> None:
        self._then_stall(super().on_tick, msg)

    def _then_stall(self, handler: Any, msg: Any) -> None:
        follows = self.counts.get("follow", 0)
        handler(msg)
        stall = self._armed
        if stall is not None and self.counts.get("follow", 0) > follows and self.open:
            self._armed = None
            stall.block(self.views)


class StallingStateKeeper(StateKeeper):
    @staticmethod
    def _create_actor_inbox() -> CountingInbox:
        return CountingInbox(KEEPER_GROUP)

    @handles(StallNow)
    def on_test_stall(self, msg: StallNow) -> None:
        msg.stall.block()

    @handles(ProbeBooks)
    def on_test_probe(self, msg: ProbeBooks) -> dict[str, tuple[int, bool, tuple, tuple]]:
        return {t: (self.book_seq.get(t, 0), b.valid, tuple(b.levels("yes")), tuple(b.levels("no")))
                for t, b in self.books.items()}


class BackpressureRig(SystemRig):
    """SystemRig with per-actor settings and actor classes of our own (the rest is SystemRig's)."""

    def __init__(self, keys: Any, tmp_path: Any, *, markets: int = MARKETS, env: dict[str, str] | None = None,
                 **kw: Any) -> None:
        env = {"WHALE_MIN_SIZE_CENTS": "10000", **(env or {})}  # $100: no burst of noise prints is a whale
        super().__init__(keys, tmp_path, markets=markets, env=env, supervisor=SUPERVISOR, **kw)
        self.stalls: list[Stall] = []

    def new_stall(self, timeout_s: float) -> Stall:
        stall = Stall(timeout_s)
        self.stalls.append(stall)
        return stall

    def ref(self, name: str) -> Any:
        return self.sup()["refs"][name]

    def close(self) -> None:
        for stall in self.stalls:  # a stalled actor cannot stop
            stall.release.set()
        super().close()


RIG_CLASS = BackpressureRig  # make_rig (tests/integration/conftest.py) builds this


# --- helpers -------------------------------------------------------------------------------------------


def whale_at_best_ask(e: Any, ticker: str) -> None:
    """On the exchange loop: deepen the best YES ask by 1,000 contracts (our maker), then a whale takes
    WHALE_CONTRACTS there. The whale's average price is that ask and the level is still offered afterwards,
    so the follow rules (slippage, depth) pass whatever the flow's fair value in that market is."""
    ask = PRICE_ONE - e.markets[ticker].book.no.prices[-1]
    e.ensure_flow_account(MAKER_USER, 10_000_000 * MONEY_ONE)
    e.place(MAKER_USER, ticker, False, ask, 1000 * COUNT_ONE)
    SystemRig.whale_trade_on(e, ticker, ask, WHALE_CONTRACTS)


def make_whales(rig: BackpressureRig, tickers: tuple[str, ...]) -> None:
    rig.ex.call(lambda e: [whale_at_best_ask(e, t) for t in tickers])


def follows(rig: BackpressureRig) -> list[str]:
    return [r[0] for r in rig.journal_rows("SELECT client_order_id FROM order_intents ORDER BY seq")]


def our_fill_ids(rig: BackpressureRig) -> set[str]:
    with rig.rest() as r:
        return {f.trade_id for f in r.iter_fills()}


def journaled_fill_ids(rig: BackpressureRig) -> set[str]:
    return {r[0] for r in rig.journal_rows("SELECT fill_id FROM fills")}


def control_allowance(stall_s: float) -> int:
    """Control messages every actor gets whatever the market does, never dropped: forwarded Ticks, supervisor
    reports (notify peers) and pings, over ``stall_s`` plus one of each already on its way at the start."""
    return sum(math.ceil(stall_s / every) + 2 for every in (TICK_S, REPORT_S, PING_S))


def wait_sampling(stall: Stall, ref: Any, depths: list[int], timeout: float, what: str, cond: Any) -> None:
    """wait_for(cond), recording the stalled actor's mailbox depth at every poll; fails if the stall ended first."""

    def poll() -> bool:
        depths.append(mailbox_depth(ref))
        if cond():
            return True
        assert not stall.exited.is_set(), f"the stall ended before {what}"
        return False

    wait_for(poll, timeout, interval=0.02, message=what)


def wait_stall_over(stall: Stall, ref: Any, depths: list[int]) -> None:
    def poll() -> bool:
        depths.append(mailbox_depth(ref))
        return stall.exited.is_set()

    wait_for(poll, stall.timeout_s + 10, interval=0.02, message="the stall to end")


# --- 1. executor stall ---------------------------------------------------------------------------------


def test_executor_stall_bounded_inbox_latest_wins_and_recovery(make_rig):
    backlog = EXECUTOR_BACKLOG
    rig = make_rig(
        markets=6,
        env={"WHALE_MAX_TRADES_PER_MINUTE": "1", "WHALE_TOKEN_REFILL_SECONDS": str(REFILL_S)},
        actor_settings={"state_keeper": {"executor_backlog": backlog}, "whale_tracker": {"executor_backlog": backlog},
                        "orderbook_feed": {"overflow_depth": 50}},
        classes={"whale_executor": StallingExecutor},
    )
    rig.start_exchange(flow=HOT_FLOW, state=False)
    rig.start_system()
    t = rig.tickers
    wait_for(lambda: rig.actor_stats("state_keeper")["valid_books"] == len(t), 15, message="every book valid")
    executor = rig.ref("whale_executor")
    inbox: CountingInbox = executor.actor_inbox

    # The token bucket holds one token, one more every REFILL_S. The first whale takes it; three more are then
    # rate limited (not final: they stay queued, their markets watched, so their book views keep coming).
    make_whales(rig, t[:1])
    wait_for(lambda: len(follows(rig)) == 1, 10, message="the first whale followed")
    make_whales(rig, t[1:4])
    wait_for(lambda: rig.executor()["queue"] == 3 and set(rig.executor()["watched"]) >= set(t[1:4]), 10,
             message="three whales queued, rate limited")
    # The next token goes to one of them: the executor hands that follow to its venue worker and its thread
    # then stays stuck for 5 s, with the order in flight and the other two whales' markets watched.
    stall = rig.new_stall(EXECUTOR_STALL_S)
    executor.tell(StallAfterNextFollow(stall=stall))
    if not stall.entered.wait(REFILL_S + 10):
        raise AssertionError(f"no second follow: {rig.executor()}")
    assert len(follows(rig)) >= 2
    assert len(stall.views_at_entry) >= 2, stall.views_at_entry
    keeper0, tracker0 = rig.actor_stats("state_keeper"), rig.actor_stats("whale_tracker")

    # --- while the executor is stuck ---
    depths: list[int] = []
    wait_sampling(stall, executor, depths, 3, "the executor backlog reached",
                  lambda: mailbox_depth(executor) >= backlog)
    make_whales(rig, t[4:5])  # a whale while it is stuck: the tracker holds the queue update for it
    wait_sampling(stall, executor, depths, 3, "a queue update held",
                  lambda: rig.actor_stats("whale_tracker")["queue_update_held"])
    make_whales(rig, t[5:6])  # and another: the held update is replaced by the newer queue
    wait_sampling(stall, executor, depths, 3, "a held queue update replaced by a newer one",
                  lambda: rig.actor_stats("whale_tracker")["queue_updates_conflated"]
                  > tracker0["queue_updates_conflated"])
    wait_sampling(stall, executor, depths, 3, "book views held and replaced",
                  lambda: rig.actor_stats("state_keeper")["views_conflated"] > keeper0["views_conflated"] + 10)
    wait_stall_over(stall, executor, depths)
    keeper1, tracker1 = rig.actor_stats("state_keeper"), rig.actor_stats("whale_tracker")
    assert stall.duration_s >= EXECUTOR_STALL_S - 0.1  # it really was stuck for the whole 5 s

    # --- the bound ---
    waiting, put, group_peak = inbox.counts()
    sightings = put.get("WhaleSightings", 0)
    # Book views and queue updates are told only while the executor has fewer than `backlog` messages waiting.
    # Two producers (state keeper, tracker) may each pass that check at backlog − 1 before either message
    # lands: at most backlog + 1 of them wait at any time. The tracker sends a held update unchecked just
    # before a WhaleSightings (never dropped): one more per sightings message. Over the whole run, not sampled.
    assert group_peak <= backlog + 1 + sightings, (group_peak, put)
    # Everything else in the stalled inbox is never dropped and does not grow with the market data rate:
    # control traffic (ticks, reports, pings), and the private traffic of the one order in flight: its venue
    # result, per fill of ours a FillReceived and up to three AccountViewUpdated (fill, position, order), an
    # AccountViewUpdated per REST sync (every CYCLE_S) and the READY → ACTING state change.
    n_fills = len(our_fill_ids(rig))
    private = 1 + 4 * n_fills + (math.ceil(stall.duration_s / CYCLE_S) + 2) + 1
    bound = backlog + 1 + sightings + control_allowance(stall.duration_s) + private
    assert max(depths) <= bound, (max(depths), bound, waiting, put)
    # Not vacuous: without the latest-wins policy the executor would have had at least one BookViewsUpdated per
    # state keeper batch touching a watched market, i.e. at least views_conflated / markets more messages.
    held_away = (keeper1["views_conflated"] - keeper0["views_conflated"]) // len(t)
    assert held_away > 10, (keeper1["views_conflated"], keeper0["views_conflated"])
    assert tracker1["queue_updates_conflated"] > tracker0["queue_updates_conflated"]

    # --- recovery ---
    def drained() -> bool:
        stats = rig.executor()
        return stats["mailbox_depth"] < backlog and stats["counts"].get("place_accepted", 0) >= 2

    wait_for(drained, 15, interval=0.05, message="executor drained, the in-flight order settled")
    wait_for(lambda: rig.actor_stats("state_keeper")["views_held"] == 0, 10, message="held views flushed")
    sup = rig.sup()
    assert sup["gate_open"] is True and sup["state"] in ("READY", "ACTING"), (sup["state"], sup["state_reason"])
    assert sup["total_restarts"] == 0
    keeper = rig.actor_stats("state_keeper")
    assert keeper["valid_books"] == len(t) and keeper["fills_lost"] == 0 and keeper["fills_undelivered"] == 0

    # Fresh views: a market watched through the stall (a rate-limited whale still queued) gets a newer view than
    # the one the executor had when it stopped — the held newest view, then the live ones.
    entry = stall.views_at_entry

    def fresh() -> bool:
        now = executor.ask(ProbeViews(), timeout=5)
        common = [m for m in now if m in entry]
        return bool(common) and all(now[m][1] and now[m][0] > entry[m] for m in common)

    wait_for(fresh, 10, interval=0.05, message="fresh book views at the executor")

    # Whales are decided again: the token that came back during the stall goes to a queued whale at once.
    def decided_after() -> list[str]:
        rows = rig.journal_rows("SELECT action, body FROM decisions")
        return [a for a, body in rows if json.loads(body)["ts_ms"] >= stall.exited_wall_ms]

    wait_for(lambda: "follow" in decided_after(), 10, interval=0.1, message="a whale followed after the stall")
    cids = follows(rig)

    def all_settled() -> bool:
        by_cid = {cid: status for _, cid, status, _ in rig.our_orders()}
        return all(by_cid.get(cid) in ("executed", "canceled") for cid in cids)

    wait_for(all_settled, 15, interval=0.1, message="every follow's order at the exchange")
    # No order sent twice: one exchange order per journaled intent, one intent per client_order_id.
    assert rig.duplicate_client_ids() == {}
    ours = [cid for _, cid, _, _ in rig.our_orders()]
    assert sorted(ours) == sorted(cids) and len(set(cids)) == len(cids) >= 3
    # Private data never dropped: every fill of ours at the exchange is journaled once.
    wait_for(lambda: our_fill_ids(rig) <= journaled_fill_ids(rig), 15, interval=0.2,
             message="every fill of ours journaled")
    assert len(our_fill_ids(rig)) >= 3  # each follow filled (the whale left the level deep enough)
    counts = rig.executor()["counts"]
    assert counts.get("fills_not_journaled", 0) == 0, counts
    assert rig.stop_system() == 0


# --- 2. state keeper stall -----------------------------------------------------------------------------


def orderbook_sub_seq(e_server: Any) -> int | None:
    subs = [s for c in e_server.conns for s in c.subs.values() if s.channel == "orderbook_delta" and s.alive]
    return subs[0].seq if len(subs) == 1 else None


def test_state_keeper_stall_feed_overflow_then_books_from_snapshots(make_rig):
    rig = make_rig(actor_settings={"orderbook_feed": {"overflow_depth": OVERFLOW_DEPTH}},
                   classes={"state_keeper": StallingStateKeeper})
    rig.start_exchange(flow=HOT_FLOW, state=False)
    rig.start_system()
    wait_for(lambda: rig.actor_stats("state_keeper")["valid_books"] == MARKETS, 15, message="every book valid")
    keeper = rig.ref("state_keeper")
    inbox: CountingInbox = keeper.actor_inbox
    feed0, keeper0 = rig.actor_stats("orderbook_feed"), rig.actor_stats("state_keeper")
    assert feed0["overflowed"] is False

    stall = rig.new_stall(KEEPER_STALL_S)
    keeper.tell(StallNow(stall=stall))
    assert stall.entered.wait(10)
    inbox.restart_peak()
    _, put_at_entry, _ = inbox.counts()
    depths: list[int] = []

    def feed_overflowed() -> bool:
        feed = rig.actor_stats("orderbook_feed")
        return feed["overflowed"] and feed["deltas_dropped"] > feed0["deltas_dropped"]

    wait_sampling(stall, keeper, depths, 3, "the feed in overflow, deltas dropped", feed_overflowed)
    wait_stall_over(stall, keeper, depths)
    _, put, book_peak = inbox.counts()
    trade_batches = put.get("TradesPrinted", 0) - put_at_entry.get("TradesPrinted", 0)
    feed1 = rig.actor_stats("orderbook_feed")
    assert feed1["downstream_overflows"] >= feed0["downstream_overflows"] + 1
    assert feed1["deltas_dropped"] > feed0["deltas_dropped"]

    # --- the bound ---
    # The feed forwards a batch only after seeing the state keeper's mailbox at ≤ overflow_depth (one producer of
    # BookFramesReceived): at most overflow_depth + 1 batches wait. Once over, deltas are dropped and a batch of
    # only deltas (all of them here: no snapshot was asked for) is not forwarded at all.
    assert book_peak <= OVERFLOW_DEPTH + 1, book_peak
    # The rest does not grow with the book rate: one BookStale per market when the overflow starts, control
    # traffic, the public trade batches (never dropped, counted as they came: a few a second of noise prints)
    # and the REST sync's result (one sync in flight at most). Nothing private: we do not trade here.
    bound = OVERFLOW_DEPTH + 1 + MARKETS + control_allowance(stall.duration_s) + trade_batches + 1
    assert max(depths) <= bound, (max(depths), bound, put)
    # Every book marked stale once, when the episode began (no snapshot was forwarded during it: no re-stale).
    assert put.get("BookStale", 0) - put_at_entry.get("BookStale", 0) == MARKETS, put

    # --- recovery: drained, overflow over, fresh snapshots for every book ---
    def recovered() -> bool:
        f, k = rig.actor_stats("orderbook_feed"), rig.actor_stats("state_keeper")
        return (not f["overflowed"] and f["pending_snapshots"] == 0 and f["stage"] is None
                and k["valid_books"] == MARKETS and k["snapshots_applied"] >= keeper0["snapshots_applied"] + MARKETS)

    wait_for(recovered, 20, interval=0.05, message="books back from snapshots")
    keeper1 = rig.actor_stats("state_keeper")
    assert keeper1["stale_marks"] >= keeper0["stale_marks"] + MARKETS
    feed2 = rig.actor_stats("orderbook_feed")
    assert feed2["snapshot_requests"] >= feed0["snapshot_requests"] + 1
    # Recovered in place: no resubscribe, no new connection.
    assert feed2["resubscribes"] == feed0["resubscribes"] and feed2["conn_id"] == feed0["conn_id"]
    assert feed2["client_replacements"] == feed0["client_replacements"] and feed2["ready"] is True
    sup = rig.sup()
    assert sup["gate_open"] is True and sup["total_restarts"] == 0, sup["state_reason"]

    # --- the books equal the exchange's, at the same stream position ---
    rig.ex.set_flow("off")  # no further book event once this returns
    seen: dict[str, Any] = {}

    def same_position() -> Any:
        seq, books = rig.ex.call(lambda e: (orderbook_sub_seq(rig.ex.server), {
            t: (tuple(e.markets[t].book.yes.depth()), tuple(e.markets[t].book.no.depth())) for t in rig.tickers}))
        ours = keeper.ask(ProbeBooks(), timeout=5)
        seen.update(seq=seq, ours={t: v[:2] for t, v in ours.items()})
        if seq is None or set(ours) < set(rig.tickers) or max(v[0] for v in ours.values()) != seq:
            return None
        return books, ours

    try:
        books, ours = wait_for(same_position, 10, interval=0.02, message="the state keeper at the exchange's seq")
    except AssertionError:
        raise AssertionError(f"never at the exchange's seq: {seen}") from None
    diffs = [f"{t}: ours valid={ours[t][1]} yes={ours[t][2]} no={ours[t][3]} / exchange yes={books[t][0]} "
             f"no={books[t][1]}" for t in rig.tickers if not ours[t][1] or (ours[t][2], ours[t][3]) != books[t]]
    assert not diffs, "\n".join(diffs)
    assert sum(len(y) + len(n) for y, n in books.values()) >= 2 * MARKETS  # books with quotes on them

    # Public trades are never dropped, only delayed: the state keeper saw every trade the tracker saw.
    wait_for(lambda: rig.actor_stats("state_keeper")["trades_seen"] == rig.actor_stats("whale_tracker")["trades_seen"],
             10, interval=0.05, message="the same trades at the state keeper and the tracker")
    assert rig.actor_stats("state_keeper")["trades_seen"] > 0
    assert rig.stop_system() == 0
