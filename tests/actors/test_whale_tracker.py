"""The whale tracker by messages: trades in, one conflated WhaleQueueUpdated per batch out."""

from __future__ import annotations

import pytest

from actors.whale_tracker import WhaleTracker
from kalshi.units import COUNT_ONE, PRICE_ONE
from messages.control import RequestStats, Tick
from messages.execution import WhaleSightings
from messages.market import TradePrinted, TradesPrinted
from messages.whale import Decision, WhaleDecisionMade, WhaleQueueUpdated
from actors.base import PeerTable, mailbox_depth
from tests.actors.conftest import Block, Echo, Probe, ProbeControl
from tests.actors.helpers_whale import FakeClock, Recorders, context
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(30)


def trade(tid, market="EVT-A", side="yes", yes_price=5500, contracts=300, ts_ms=0, backfilled=False):
    return TradePrinted(trade_id=tid, market_ticker=market, taker_side=side, yes_price=yes_price,
                        no_price=PRICE_ONE - yes_price, count=contracts * COUNT_ONE, ts_ms=ts_ms, recv_ns=0,
                        backfilled=backfilled)


class TrackerRig:
    def __init__(self, tmp_path, **flags):
        self.clock = FakeClock()
        self.rec = Recorders(("broadcaster", "whale_executor"))
        ctx = context(tmp_path, self.clock, **flags)
        self.ref = WhaleTracker.start("whale_tracker", 1, None, self.rec.peers(), {"context": ctx, "stats_interval_s": 1.0})

    def sync(self):
        stats = self.ref.ask(RequestStats(), timeout=5)
        self.rec.barrier()
        return stats

    def updates(self, name="whale_executor"):
        return self.rec.got(name, WhaleQueueUpdated)

    def tick(self, seconds):
        self.clock.advance(seconds)
        self.ref.tell(Tick(now_mono_ns=self.clock.mono_ns(), now_wall_ms=self.clock.wall_ms()))

    def close(self):
        self.ref.stop(timeout=5)
        self.rec.stop()


@pytest.fixture
def tr(tmp_path):
    r = TrackerRig(tmp_path)
    yield r
    r.close()


def test_one_conflated_update_per_batch_to_executor_and_broadcaster(tr):
    now = tr.clock.wall_ms()
    small = [trade(f"s{i}", contracts=1, ts_ms=now) for i in range(50)]
    big = [trade("b1", "EVT-A", ts_ms=now - 1), trade("b2", "EVT-B", "no", 4000, 500, now - 2)]
    tr.ref.tell(TradesPrinted(trades=tuple(small + big)))
    stats = tr.sync()
    [update] = tr.updates()
    assert [w.market for w in update.queue] == ["EVT-B", "EVT-A"]  # largest first
    assert update.stats.trades_seen == 52 and update.stats.queue_size == 2
    assert len(tr.updates("broadcaster")) == 1
    assert stats["trades_seen"] == 52
    # A batch of only small trades changes nothing: no update (stats follow on a Tick).
    tr.ref.tell(TradesPrinted(trades=(trade("s99", contracts=1, ts_ms=now),)))
    tr.sync()
    assert len(tr.updates()) == 1
    tr.tick(1.5)
    tr.sync()
    assert len(tr.updates()) == 2 and tr.updates()[-1].stats.trades_seen == 53


def test_duplicates_and_backfill_never_make_a_second_whale(tr):
    now = tr.clock.wall_ms()
    tr.ref.tell(TradesPrinted(trades=(trade("t1", ts_ms=now),)))
    tr.ref.tell(TradesPrinted(trades=(trade("t1", ts_ms=now), trade("t1", ts_ms=now, backfilled=True))))
    stats = tr.sync()
    assert len(tr.updates()) == 1 and len(tr.updates()[0].queue) == 1
    assert stats["duplicates"] == 2
    # Both repeats reach the executor in one message, to be journaled as duplicate sightings (F04).
    [sightings] = tr.rec.got("whale_executor", WhaleSightings)
    assert [(w.whale_id, t) for w, t in sightings.sightings] == [(tr.updates()[0].queue[0].whale_id, "t1")] * 2


def test_sweep_prints_group_into_one_growing_whale(tr):
    now = tr.clock.wall_ms()
    tr.ref.tell(TradesPrinted(trades=(trade("p1", yes_price=5500, contracts=80, ts_ms=now),)))
    tr.ref.tell(TradesPrinted(trades=(trade("p2", yes_price=5600, contracts=80, ts_ms=now),)))
    tr.sync()
    updates = tr.updates()
    assert len(updates) == 1  # 80 contracts: below $100; with the second print the sweep qualifies
    [w] = updates[0].queue
    assert w.trade_ids == ("p1", "p2") and w.levels == 2


def test_bad_trades_are_counted_and_dropped(tr):
    now = tr.clock.wall_ms()
    bad = TradePrinted(trade_id="x", market_ticker="EVT-A", taker_side="yes", yes_price=5500, no_price=5500,
                       count=300 * COUNT_ONE, ts_ms=now, recv_ns=0)
    tr.ref.tell(TradesPrinted(trades=(bad, trade("ok", ts_ms=now))))
    stats = tr.sync()
    assert stats["bad_trades"] == 1 and len(tr.updates()[0].queue) == 1


def test_prune_on_tick_and_removal_on_final_decision(tr):
    now = tr.clock.wall_ms()
    tr.ref.tell(TradesPrinted(trades=(trade("a", "EVT-A", ts_ms=now), trade("b", "EVT-B", ts_ms=now - 200_000))))
    tr.sync()
    assert len(tr.updates()[-1].queue) == 2
    a_id = next(w.whale_id for w in tr.updates()[-1].queue if w.market == "EVT-A")
    tr.ref.tell(WhaleDecisionMade(decision=Decision(action="skipped_age", reason="old", whale_id=a_id, market="EVT-A",
                                                    final=True)))
    tr.sync()
    assert [w.market for w in tr.updates()[-1].queue] == ["EVT-B"]
    tr.tick(120)  # EVT-B's trade is now older than the 5-minute window
    tr.sync()
    wait_for(lambda: tr.updates()[-1].queue == (), message="pruned")
    # A later print of the removed whale's sweep does not bring it back.
    tr.ref.tell(TradesPrinted(trades=(trade("a2", "EVT-A", ts_ms=now),)))
    tr.sync()
    assert tr.updates()[-1].queue == ()


def test_detection_disabled_ignores_trades(tmp_path):
    tr = TrackerRig(tmp_path, enable_whale_detection=False)
    try:
        tr.ref.tell(TradesPrinted(trades=(trade("a", ts_ms=tr.clock.wall_ms()),)))
        tr.tick(2)
        tr.sync()
        assert tr.updates() == []
    finally:
        tr.close()


class BackloggedRig(TrackerRig):
    """A tracker whose executor is a probe the test can block (``Block``) on an event; ``executor_backlog``
    set. ``sync`` is the tracker's own barrier: the recorders' barrier would wait on the blocked executor."""

    def __init__(self, tmp_path, executor_backlog):
        self.clock = FakeClock()
        self.rec = Recorders(("broadcaster",))
        self.control = ProbeControl()
        self.executor = Probe.start("whale_executor", 1, None, PeerTable(), {}, probe_log=self.rec.log,
                                    control=self.control)
        self.rec.refs["whale_executor"] = self.executor
        ctx = context(tmp_path, self.clock)
        self.ref = WhaleTracker.start("whale_tracker", 1, None, self.rec.peers(),
                                      {"context": ctx, "stats_interval_s": 1.0, "executor_backlog": executor_backlog})

    def sync(self):
        return self.ref.ask(RequestStats(), timeout=5)

    def block_executor(self):
        self.control.release.clear()
        self.control.blocked.clear()
        self.executor.tell(Block())
        assert self.control.blocked.wait(5)

    def release_executor(self):
        self.control.release.set()
        wait_for(lambda: mailbox_depth(self.executor) == 0, 5, message="executor drained")
        self.executor.ask(Echo(), timeout=5)  # its last message is handled too

    def close(self):
        self.control.release.set()  # never leave the probe blocked, even when the test failed
        super().close()


@pytest.fixture
def backlogged(tmp_path):
    rigs = []

    def make(executor_backlog):
        rigs.append(BackloggedRig(tmp_path, executor_backlog))
        return rigs[-1]

    yield make
    for r in rigs:
        r.close()


def whales(tr, n, start=0):
    """``n`` batches, each adding one whale (every batch changes the queue: one update each)."""
    now = tr.clock.wall_ms()
    for i in range(start, start + n):
        tr.ref.tell(TradesPrinted(trades=(trade(f"w{i}", f"EVT-{i}", ts_ms=now),)))


def test_blocked_executor_gets_only_the_newest_queue_update_once_it_drains(backlogged):
    tr = backlogged(3)
    tr.block_executor()
    whales(tr, 6)  # updates 1-3 fill the executor's mailbox to the bound, 4-6 are held: newest wins
    stats = tr.sync()
    assert stats["queue_updates_conflated"] == 2 and stats["queue_update_held"] is True
    assert mailbox_depth(tr.executor) == 3
    tr.tick(0.1)  # still backlogged: the update stays held
    assert tr.sync()["queue_update_held"] is True and mailbox_depth(tr.executor) == 3
    tr.release_executor()
    assert len(tr.updates()) == 3
    tr.tick(0.1)  # the next Tick finds the mailbox below the bound
    wait_for(lambda: len(tr.updates()) == 4, 5, message="the held update")
    broadcast = tr.updates("broadcaster")
    assert len(broadcast) == 6  # the broadcaster gets every update
    assert tr.updates()[:3] == broadcast[:3] and tr.updates()[3] == broadcast[5]
    assert len(tr.updates()[3].queue) == 6
    stats = tr.sync()
    assert stats["queue_update_held"] is False and stats["updates_sent"] == 6


def test_held_update_goes_out_on_the_next_publish_and_before_sightings(backlogged):
    tr = backlogged(2)
    tr.block_executor()
    whales(tr, 3)  # the third update is held
    assert tr.sync()["queue_update_held"] is True
    tr.release_executor()
    # No Tick: the next publish replaces the held update and, the mailbox being short now, sends it at once.
    whales(tr, 1, start=3)
    stats = tr.sync()
    assert stats["queue_update_held"] is False and stats["queue_updates_conflated"] == 1
    wait_for(lambda: len(tr.updates()) == 3, 5, message="the newest update")
    assert len(tr.updates()[-1].queue) == 4
    # Blocked again with an update held: a repeated trade's sighting is never held, and the held queue goes
    # out just before it (the executor journals a whale's first sighting before its repeats).
    tr.block_executor()
    whales(tr, 3, start=4)  # 2 told, the third (7 whales) held
    assert tr.sync()["queue_update_held"] is True
    now = tr.clock.wall_ms()
    tr.ref.tell(TradesPrinted(trades=(trade("w6", "EVT-6", ts_ms=now),)))
    assert tr.sync()["queue_update_held"] is False
    tr.release_executor()
    got = [e[3] for e in tr.rec.log.events("message", "whale_executor") if not isinstance(e[3], (Block, Echo))]
    assert [type(m).__name__ for m in got[-4:]] == ["WhaleQueueUpdated"] * 3 + ["WhaleSightings"]
    assert len(got[-2].queue) == 7 and got[-1].sightings[0][1] == "w6"
    assert got[-1].sightings[0][0].whale_id in {w.whale_id for w in got[-2].queue}


def test_executor_backlog_zero_sends_every_update(backlogged):
    tr = backlogged(0)
    tr.block_executor()
    whales(tr, 6)
    stats = tr.sync()
    assert stats["queue_updates_conflated"] == 0 and stats["queue_update_held"] is False
    assert mailbox_depth(tr.executor) == 6
    tr.release_executor()
    assert tr.updates() == tr.updates("broadcaster") and len(tr.updates()) == 6
