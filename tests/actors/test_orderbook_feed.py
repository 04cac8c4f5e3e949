"""OrderbookFeed with a scripted WebSocket client: batching, readiness, gap recovery ladder, reconnects,
error 25, WatchMarkets, overflow policy and status reports."""

from __future__ import annotations

import pytest

from actors.orderbook_feed import OrderbookFeed
from kalshi.wire.frames import OrderbookDelta, OrderbookSnapshot, WsError
from kalshi.ws import WsCommandReply, WsMalformedFrame, WsSequenceIssue, WsStalled
from messages.control import FeedDown, FeedReady, RequestStats
from messages.feed import FeedStatus, RequestSnapshot, Resubscribe, SequenceGap, WatchMarkets
from messages.market import BookFramesReceived, BookStale
from actors.base import PeerTable, mailbox_depth
from tests.actors.conftest import Block, Probe, ProbeControl
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
    # The state keeper keeps asking for snapshots of its stale books while we are down: counted, nothing sent
    # (the reconnection's subscription brings every snapshot).
    h.ref.tell(RequestSnapshot(market_tickers=("KX-A",), reason="stale"))
    assert h.stats()["snapshot_requests_skipped"] == 1 and not ws.find("update")
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
    # The books are stale and will be re-snapshotted: the deltas of the backlog are dropped, not forwarded.
    stats = h.stats()
    assert stats["deltas_dropped"] == 5 and stats["overflow_events"] == 1 and stats["downstream_overflows"] == 0
    rec.refs["state_keeper"].ask(RequestStats(), timeout=5)  # barrier: the state keeper got all we told it
    assert len(rec.got("state_keeper", BookFramesReceived)) == 1  # only the first snapshots (before the hold)
    assert ws.find("update") == []
    h.tick(0.1)
    wait_for(lambda: ws.find("update"), 5, message="snapshots after catching up")
    assert ws.find("update")[0][2:5] == (3, "get_snapshot", MARKETS)
    assert h.stats()["overflow_events"] == 1


@pytest.fixture
def slow_keeper(rec):
    """The state keeper's probe replaced by one a test can block (``Block``) on an event; released at teardown."""
    control = ProbeControl()
    rec.refs["state_keeper"].stop(block=True, timeout=5)
    rec.refs["state_keeper"] = Probe.start("state_keeper", 1, None, PeerTable(), {}, probe_log=rec.log,
                                           control=control)
    yield control
    control.release.set()


def keeper_inbox(rec: Recorders) -> list:
    """What the state keeper probe handled, in order (book messages only)."""
    return [e[3] for e in rec.log.events("message", "state_keeper") if type(e[3]) in (BookFramesReceived, BookStale)]


def replay_as_state_keeper(sent: list, received: list) -> int:
    """Replays ``received`` as the state keeper applies it: a snapshot makes its book valid, ``BookStale`` stale,
    a delta applies only to a valid book. Every applied delta must be the very next frame of that market the
    exchange sent (``sent``) after the book's last snapshot — so no dropped delta is missing from a book the
    state keeper thinks valid. Returns how many deltas were applied."""
    by_market: dict[str, list] = {}
    for f in sent:
        by_market.setdefault(f.market_ticker, []).append(f)
    position: dict[str, int | None] = {}  # index of the last applied frame per market; None = stale
    applied = 0
    for m in received:
        if type(m) is BookStale:
            position[m.market_ticker] = None
            continue
        for f in m.frames:
            t = f.market_ticker
            if type(f) is OrderbookSnapshot:
                position[t] = by_market[t].index(f)
            elif position.get(t) is not None:
                nxt = position[t] + 1
                assert by_market[t][nxt] == f, f"{f} applied to a valid book that missed {by_market[t][nxt]}"
                position[t] = nxt
                applied += 1
    return applied


def test_slow_state_keeper_drops_deltas_after_staling_books_and_resnapshots(slow_keeper, harness, rec):
    bound = 8
    h = harness(overflow_depth=bound)
    live(h, sid=3)
    sent = [snap(t, i + 1, 3) for i, t in enumerate(MARKETS)]  # what live() sent
    ws = h.ws
    keeper = rec.refs["state_keeper"]
    keeper.tell(Block())
    assert slow_keeper.blocked.wait(5)

    def send(*frames):
        sent.extend(frames)
        ws.frames(*frames)
        h.stats()  # one batch at a time: our own mailbox stays short, only the consumer's grows

    seq = 3
    for i in range(40):
        send(delta(MARKETS[i % 2], seq, 3))
        seq += 1
    # Batches go on while the state keeper holds at most `bound`; the next one starts the episode.
    stats = h.stats()
    assert stats["overflowed"] is True and stats["deltas_dropped"] == 40 - (bound + 1)
    assert (stats["overflow_events"], stats["downstream_overflows"]) == (1, 1)
    # Snapshots still go through; a delta after one re-stales that book first (KX-B's book is stale anyway).
    send(snap("KX-A", seq, 3), delta("KX-A", seq + 1, 3), delta("KX-B", seq + 2, 3))
    send(snap("KX-B", seq + 3, 3))
    seq += 4
    stats = h.stats()
    assert stats["deltas_dropped"] == 40 - (bound + 1) + 2 and stats["overflow_restales"] == 1
    # The state keeper's own retries are not sent while overflowed: every book is re-snapshotted at the end.
    h.ref.tell(RequestSnapshot(market_tickers=("KX-A",), reason="state keeper: still stale"))
    assert h.stats()["snapshot_requests_skipped"] == 1
    h.tick(0.1)  # still backlogged: no catching up yet
    assert h.stats()["overflowed"] is True and ws.find("update") == []
    depth = mailbox_depth(keeper)
    assert depth <= bound + len(MARKETS) + 4, depth  # bounded: + stale marks, 2 snapshot batches, 1 re-stale

    slow_keeper.release.set()
    wait_for(lambda: mailbox_depth(keeper) == 0, 5, message="state keeper drained")
    keeper.ask(RequestStats(), timeout=5)
    received = keeper_inbox(rec)
    first_stale = next(i for i, m in enumerate(received) if type(m) is BookStale)
    assert [m.market_ticker for m in received[first_stale:first_stale + 2]] == list(MARKETS)
    assert all("state keeper behind" in m.reason for m in received[first_stale:first_stale + 2])
    before = [f for m in received[:first_stale] for f in m.frames if type(f) is OrderbookDelta]
    assert [f.seq for f in before] == list(range(3, 3 + bound + 1))  # nothing dropped before the stale marks
    after = received[first_stale + 2:]
    assert [type(m).__name__ for m in after] == ["BookFramesReceived", "BookStale", "BookFramesReceived"]
    assert after[0].frames == (snap("KX-A", 43, 3),) and after[2].frames == (snap("KX-B", 46, 3),)
    assert after[1].market_ticker == "KX-A" and "dropped" in after[1].reason
    assert replay_as_state_keeper(sent, received) == bound + 1

    # Caught up (both mailboxes at most bound // 4): fresh snapshots for every book, deltas flow again.
    h.tick(0.1)
    wait_for(lambda: ws.find("update"), 5, message="snapshots after catching up")
    assert ws.find("update")[0][2:5] == (3, "get_snapshot", MARKETS)
    send(delta("KX-A", seq, 3), delta("KX-B", seq + 1, 3))
    send(snap("KX-A", seq + 2, 3), snap("KX-B", seq + 3, 3))
    stats = h.stats()
    assert stats["overflowed"] is False and stats["deltas_dropped"] == 40 - (bound + 1) + 2
    assert stats["feed_state"] == "live" and stats["overflow_events"] == 1
    keeper.ask(RequestStats(), timeout=5)
    received = keeper_inbox(rec)
    assert received[-2].frames == (delta("KX-A", seq, 3), delta("KX-B", seq + 1, 3))
    # KX-B's book stayed valid since its snapshot in the episode (no delta of it was dropped after it).
    assert replay_as_state_keeper(sent, received) == bound + 1 + 1


def test_overflow_depth_zero_forwards_everything_to_a_slow_state_keeper(slow_keeper, harness, rec):
    h = harness(overflow_depth=0)
    live(h, sid=3)
    rec.refs["state_keeper"].tell(Block())
    assert slow_keeper.blocked.wait(5)
    for i in range(30):
        h.ws.frames(delta(MARKETS[i % 2], 3 + i, 3))
    stats = h.stats()
    assert stats["deltas_dropped"] == 0 and stats["overflow_events"] == 0 and stats["overflowed"] is False
    assert mailbox_depth(rec.refs["state_keeper"]) == 30
    slow_keeper.release.set()
    rec.wait("state_keeper", BookFramesReceived, 31)
    assert rec.got("state_keeper", BookStale) == []


def test_cleanup_stops_the_client_and_reports_stopped(harness, rec, tmp_path):
    h = harness()
    live(h)
    ws = h.ws
    h.ref.stop(block=True, timeout=10)
    assert ws.stopped.is_set()
    assert rec.wait("supervisor", FeedStatus)[-1].state == "stopped"
