"""OrderbookFeed with a scripted WebSocket client: batching, readiness, gap recovery ladder, reconnects,
error 25, WatchMarkets, overflow policy and status reports."""

from __future__ import annotations

import pytest

from actors.orderbook_feed import OrderbookFeed
from kalshi.wire.frames import OrderbookDelta, OrderbookSnapshot, WsError
from kalshi.ws import WsCommandReply, WsMalformedFrame, WsSequenceIssue, WsStalled
from messages.control import FeedDown, FeedReady
from messages.feed import FeedStatus, RequestSnapshot, Resubscribe, SequenceGap, WatchMarkets
from messages.market import BookFramesReceived, BookStale
from tests.actors.helpers_feeds import FeedHarness, Hold, Recorders, harnesses, holdable
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(30)

MARKETS = ("KX-A", "KX-B")


def snap(ticker: str, seq: int, sid: int = 1, cid: int | None = None) -> OrderbookSnapshot:
    return OrderbookSnapshot(sid=sid, seq=seq, market_ticker=ticker, yes=((4500, 1000),), no=((5000, 500),), id=cid)


def delta(ticker: str, seq: int, sid: int = 1) -> OrderbookDelta:
    return OrderbookDelta(sid=sid, seq=seq, market_ticker=ticker, price=4500, delta=100, side="yes")




class Harness(FeedHarness):
    def __init__(self, tmp_path, rec: Recorders, markets=MARKETS, cls=OrderbookFeed, generation=1, **config):
        config.setdefault("snapshot_timeout_s", 2.0)
        super().__init__(tmp_path, rec, cls, "orderbook_feed", generation=generation,
                         context={"markets": markets, "ws_options": {"idle_timeout": 7.0}}, **config)


@pytest.fixture
def rec():
    r = Recorders()
    yield r
    r.stop()


@pytest.fixture
def harness(tmp_path, rec):
    yield from harnesses(lambda **kw: Harness(tmp_path, rec, **kw))


def live(h: Harness, markets=MARKETS, sid: int = 1) -> None:
    ws = h.ws
    ws.connect()
    handle = ws.find("subscribe")[-1][0]
    ws.subscribed(handle, "orderbook_delta", sid)
    ws.frames(*[snap(t, i + 1, sid) for i, t in enumerate(markets)])
    h.rec.wait("supervisor", FeedReady)


def test_subscribes_markets_with_explicit_use_yes_price_and_ws_options(harness):
    h = harness()
    wait_for(lambda: h.registry.clients and h.ws.started, 5, message="client started")
    ws = h.ws
    assert ws.url == h.ctx.ws_url
    assert ws.options["idle_timeout"] == 7.0 and ws.options["name"] == "orderbook_feed"
    subs = ws.find("subscribe")
    assert subs == [(1, "subscribe", ("orderbook_delta",), MARKETS, (("use_yes_price", False),))]


def test_ready_only_after_every_first_snapshot_and_one_message_per_batch(harness, rec):
    h = harness()
    ws = h.ws
    conn = ws.connect()
    ws.subscribed(1, "orderbook_delta", 7)
    ws.frames(snap("KX-A", 1, 7), delta("KX-A", 2, 7), delta("KX-A", 3, 7))
    h.stats()  # barrier: the batch is handled
    assert rec.got("supervisor", FeedReady) == []
    assert h.stats()["feed_state"] == "subscribed"
    ws.frames(snap("KX-B", 4, 7))
    ready = rec.wait("supervisor", FeedReady)[0]
    assert (ready.feed, ready.generation, ready.conn_id) == ("orderbook_feed", 1, conn)
    batches = rec.wait("state_keeper", BookFramesReceived, 2)
    assert [len(b.frames) for b in batches] == [3, 1]
    assert batches[0].frames[1] == delta("KX-A", 2, 7)
    assert batches[0].feed == "orderbook_feed" and batches[0].conn_id == conn and batches[0].recv_ns == h.clock.now_ns
    stats = h.stats()
    assert stats["feed_state"] == "live" and stats["messages"] == 4 and stats["pending_snapshots"] == 0


def test_no_markets_is_ready_at_once_without_subscribing(harness, rec):
    h = harness(markets=())
    ready = rec.wait("supervisor", FeedReady)[0]
    assert ready.conn_id == 0
    assert h.ws.find("subscribe") == []
    h.ws.connect()
    h.ws.disconnect()
    assert h.stats()["ready"] is True  # nothing to be stale: a dropped connection changes nothing
    assert rec.got("supervisor", FeedDown) == []
    assert rec.got("state_keeper", BookStale) == []


def test_gap_marks_every_book_stale_and_requests_snapshots(harness, rec):
    h = harness()
    live(h, sid=3)
    ws = h.ws
    ws.event(WsSequenceIssue(ws.conn_id, 3, "gap", 4, 6))
    stale = rec.wait("state_keeper", BookStale, 2)
    assert sorted(s.market_ticker for s in stale) == list(MARKETS)
    assert "seq gap" in stale[0].reason
    gap = rec.wait("supervisor", SequenceGap)[0]
    assert (gap.sid, gap.expected, gap.got, gap.kind) == (3, 4, 6, "gap")
    wait_for(lambda: ws.find("update"), 5, message="get_snapshot")
    (_, _, sid, action, tickers, conn_id), = ws.find("update")
    assert (sid, action, tickers, conn_id) == (3, "get_snapshot", MARKETS, ws.conn_id)
    assert h.stats()["feed_state"] == "stale"
    ws.frames(snap("KX-A", 7, 3, cid=9), snap("KX-B", 8, 3, cid=9))
    stats = h.stats()
    assert stats["feed_state"] == "live" and stats["stage"] is None and stats["gaps"] == 1
    # The gap never took the whole feed down: books are stale, the connection is fine.
    assert rec.got("supervisor", FeedDown) == []


def test_gap_on_another_sid_and_duplicates_do_not_stale_books(harness, rec):
    h = harness()
    live(h, sid=3)
    ws = h.ws
    ws.event(WsSequenceIssue(ws.conn_id, 99, "gap", 2, 5))
    ws.event(WsSequenceIssue(ws.conn_id, 3, "duplicate", 5, 4))
    rec.wait("supervisor", SequenceGap, 2)
    stats = h.stats()
    assert stats["gaps"] == 1 and stats["duplicates"] == 1
    assert rec.got("state_keeper", BookStale) == []
    assert ws.find("update") == []


def test_no_snapshot_escalates_to_resubscribe_then_reconnect(harness, rec):
    h = harness()
    live(h, sid=3)
    ws = h.ws
    ws.event(WsSequenceIssue(ws.conn_id, 3, "gap", 4, 6))
    wait_for(lambda: ws.find("update"), 5, message="get_snapshot")
    h.tick(1.0)
    assert ws.find("unsubscribe") == []  # not yet
    h.tick(1.5)
    wait_for(lambda: ws.find("unsubscribe"), 5, message="unsubscribe")
    assert ws.find("unsubscribe")[0][2:] == ((3,), ws.conn_id)
    resub = ws.find("subscribe")[-1]
    assert resub[0] > ws.find("unsubscribe")[0][0] and resub[2:4] == (("orderbook_delta",), MARKETS)
    assert h.stats()["resubscribes"] == 1
    h.tick(2.5)
    new = h.registry.wait_clients(2)
    assert ws.stopped.wait(5), "the old client is stopped"
    assert new.started and new.find("subscribe")[0][2:4] == (("orderbook_delta",), MARKETS)
    down = rec.wait("supervisor", FeedDown)[0]
    assert "reconnect" in down.reason
    # The new connection gets a higher conn_id than anything before and recovers normally.
    old_conn = h.stats()["conn_id"]
    new.connect()
    new.subscribed(new.find("subscribe")[0][0], "orderbook_delta", 1)
    new.frames(snap("KX-A", 1), snap("KX-B", 2))
    rec.wait("supervisor", FeedReady, where=lambda m: m.conn_id > old_conn)
    assert h.stats()["client_replacements"] == 1


def test_disconnect_stales_books_and_reconnect_recovers(harness, rec):
    h = harness()
    live(h, sid=3)
    ws = h.ws
    ws.disconnect("stalled")
    down = rec.wait("supervisor", FeedDown)[0]
    assert down.reason == "stalled"
    stale = rec.wait("state_keeper", BookStale, 2)
    assert all("connection lost" in s.reason for s in stale)
    assert h.stats()["feed_state"] == "backoff"
    # Frames of the dropped connection that are still queued are ignored.
    old = ws.conn_id
    ws.connect()
    ws._on_frames(old, (delta("KX-A", 9, 3),))
    ws.subscribed(1, "orderbook_delta", 4)
    ws.frames(snap("KX-A", 1, 4))
    assert h.stats()["ready"] is False  # KX-B still has no snapshot on the new connection
    ws.frames(snap("KX-B", 2, 4))
    rec.wait("supervisor", FeedReady, 2)
    stats = h.stats()
    assert stats["reconnects"] == 1 and stats["stale_frames"] == 1 and stats["sid"] == 4


def test_stall_and_malformed_frames_are_counted_and_actor_lives(harness, rec):
    h = harness()
    live(h)
    ws = h.ws
    for _ in range(3):
        ws.event(WsMalformedFrame(ws.conn_id, "not JSON", "{garbage"))
    ws.event(WsStalled(ws.conn_id, 7.1))
    stats = h.stats()
    assert stats["malformed"] == 3 and stats["stalls"] == 1
    assert h.ref.is_alive()


def test_error_25_stales_books_until_the_renewed_subscription_snapshots(harness, rec):
    h = harness()
    live(h, sid=3)
    ws = h.ws
    ws.event(WsCommandReply(ws.conn_id, None, WsError(id=None, sid=3, seq=None, code=25, msg="buffer overflow")))
    rec.wait("state_keeper", BookStale, 2)
    assert h.stats()["feed_state"] == "stale" and h.stats()["error25"] == 1
    ws.subscribed(1, "orderbook_delta", 5, previous_sid=3)  # the client renewed it
    ws.frames(snap("KX-A", 1, 5), snap("KX-B", 2, 5))
    stats = h.stats()
    assert stats["sid"] == 5 and stats["feed_state"] == "live"
    assert ws.find("unsubscribe") == []  # no double resubscribe


def test_error_25_without_sid_resubscribes(harness, rec):
    h = harness()
    live(h, sid=3)
    ws = h.ws
    ws.event(WsCommandReply(ws.conn_id, None, WsError(id=None, sid=None, seq=None, code=25, msg="overflow")))
    wait_for(lambda: ws.find("unsubscribe"), 5, message="resubscribe")
    assert len(ws.find("subscribe")) == 2


def test_watch_markets_adds_up_to_the_cap(harness, rec):
    h = harness(market_cap=3)
    live(h, sid=3)
    ws = h.ws
    h.ref.tell(WatchMarkets(market_tickers=frozenset({"KX-C", "KX-D", "KX-A"}), reason="whale"))
    wait_for(lambda: ws.find("update"), 5, message="add_markets")
    (_, _, sid, action, tickers, _), = ws.find("update")
    assert (sid, action, tickers) == (3, "add_markets", ("KX-C",))
    stats = h.stats()
    assert stats["markets"] == 3 and stats["watch_refused"] == 1
    assert [s.market_ticker for s in rec.got("state_keeper", BookStale)] == ["KX-C"]
    assert stats["ready"] is True  # a watched market does not take the feed down
    ws.frames(snap("KX-C", 3, 3))
    assert h.stats()["pending_snapshots"] == 0


def test_default_market_cap_and_deferred_add_before_sid(harness, rec):
    h = harness()
    assert h.stats()["market_cap"] == 10 + 10  # max(orderbook_market_limit=10, 2) + 10
    h.ws.connect()
    h.ref.tell(WatchMarkets(market_tickers=frozenset({"KX-Z"}), reason="whale"))
    h.stats()
    assert h.ws.find("update") == []  # no sid yet
    h.ws.subscribed(1, "orderbook_delta", 8)
    wait_for(lambda: h.ws.find("update"), 5, message="deferred add")
    assert h.ws.find("update")[0][2:5] == (8, "add_markets", ("KX-Z",))


def test_request_snapshot_and_resubscribe_commands(harness, rec):
    h = harness()
    live(h, sid=3)
    ws = h.ws
    h.ref.tell(RequestSnapshot(market_tickers=("KX-B", "NOT-OURS"), reason="state keeper: bad delta"))
    wait_for(lambda: ws.find("update"), 5, message="get_snapshot")
    assert ws.find("update")[0][2:5] == (3, "get_snapshot", ("KX-B",))
    # Asked again (the state keeper asks per delta it cannot apply) while that request is pending: skipped.
    h.ref.tell(RequestSnapshot(market_tickers=("KX-B",), reason="again"))
    assert h.stats()["snapshot_requests_skipped"] == 1 and len(ws.find("update")) == 1
    h.ref.tell(Resubscribe(reason="operator"))
    wait_for(lambda: ws.find("unsubscribe"), 5, message="unsubscribe")
    assert len(rec.got("state_keeper", BookStale)) == 2


def test_first_snapshots_never_arriving_escalate(harness, rec):
    h = harness()
    ws = h.ws
    ws.connect()
    ws.subscribed(1, "orderbook_delta", 2)
    ws.frames(snap("KX-A", 1, 2))
    h.stats()  # barrier: the stage deadline is set from the clock before it moves
    h.tick(2.5)
    wait_for(lambda: ws.find("unsubscribe"), 5, message="resubscribe after a missing first snapshot")
    assert rec.got("supervisor", FeedReady) == []


def test_status_reports_on_ticks(harness, rec):
    h = harness()
    live(h)
    h.tick(0.25)
    status = rec.wait("supervisor", FeedStatus)[-1]
    assert (status.feed, status.connected, status.state, status.messages) == ("orderbook_feed", True, "live", 2)
    assert status.last_message_age_ms == 250
    assert rec.wait("broadcaster", FeedStatus)[-1] == status
    h.tick(0.5)  # within the 1 s interval: no second report
    h.stats()
    assert len(rec.got("supervisor", FeedStatus)) == 1
    h.tick(0.6)
    rec.wait("supervisor", FeedStatus, 2)


def test_overflow_stales_books_then_requests_snapshots_once_caught_up(harness, rec):
    held_cls = holdable(OrderbookFeed)
    h = harness(cls=held_cls, overflow_depth=2)
    live(h, sid=3)
    ws = h.ws
    h.ref.tell(Hold())
    assert held_cls.held.wait(5)
    for i in range(5):  # the mailbox grows past the bound while the actor is held
        ws.frames(delta("KX-A", 3 + i, 3))
    held_cls.release.set()
    stale = rec.wait("state_keeper", BookStale, 2)
    assert all("overflow" in s.reason for s in stale)
    batches = rec.wait("state_keeper", BookFramesReceived, 6)
    assert len(batches) == 6  # nothing was dropped
    assert ws.find("update") == []
    h.tick(0.1)
    wait_for(lambda: ws.find("update"), 5, message="snapshots after catching up")
    assert ws.find("update")[0][2:5] == (3, "get_snapshot", MARKETS)
    assert h.stats()["overflow_events"] == 1


def test_cleanup_stops_the_client_and_reports_stopped(harness, rec, tmp_path):
    h = harness()
    live(h)
    ws = h.ws
    h.ref.stop(block=True, timeout=10)
    assert ws.stopped.is_set()
    assert rec.wait("supervisor", FeedStatus)[-1].state == "stopped"
