"""The three feed actors against the real LocalExchange (real KalshiWebSocket, real engine, real faults):
reconnect + resubscribe, stale → fresh snapshot → live, malformed frames counted with the actor alive,
a stalled socket detected, missed trades backfilled after a drop, fills for an order placed over REST."""

from __future__ import annotations

import functools
import time
import uuid

import pytest

from actors.orderbook_feed import OrderbookFeed
from actors.position_listener import PositionListener
from actors.trades_feed import TradesFeed
from kalshi.auth import Credentials, generate_key_pair
from kalshi.exchange import LocalExchange
from kalshi.rest import KalshiRest
from kalshi.units import COUNT_ONE, PRICE_ONE
from kalshi.wire.frames import OrderbookSnapshot
from messages.account import FillReceived, PositionChanged
from messages.control import FeedDown, FeedReady, RequestStats, SyncAccount, Tick
from messages.feed import SequenceGap
from messages.market import BookFramesReceived, BookStale, TradesPrinted
from tests.actors.helpers_feeds import Recorders, make_context
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(60)

KEY_ID = "feeds-live-0000-4000-8000-000000000001"
# Fast reconnects keep the tests short; the stall test shortens the idle timeout itself.
WS_OPTIONS = {"backoff_initial": 0.1, "backoff_max": 0.5, "connect_timeout": 3.0}


@functools.lru_cache(maxsize=1)
def keys() -> tuple[bytes, bytes]:
    return generate_key_pair()


@pytest.fixture
def ex():
    private, public = keys()
    exchange = LocalExchange(api_keys={KEY_ID: public}, flow="calm", rate_limits=False, markets=4).start()
    yield exchange
    exchange.stop()


@pytest.fixture
def creds() -> Credentials:
    return Credentials.from_pem_text(KEY_ID, keys()[0].decode())


@pytest.fixture
def rec():
    r = Recorders()
    yield r
    r.stop()


@pytest.fixture
def start(ex, creds, rec, tmp_path):
    """Start a feed actor against ``ex``; every one started is stopped at teardown."""
    refs = []

    def run(cls, name: str, *, markets=(), ws_options=None, credentials=creds, **config):
        ctx = make_context(tmp_path, markets=tuple(markets), credentials=credentials, ws_url=ex.ws_url,
                           rest_url=ex.rest_url, ws_options={**WS_OPTIONS, **(ws_options or {})})
        ref = cls.start(name, 1, rec.supervisor, rec.peers(), {"context": ctx, **config})
        refs.append(ref)
        return ref

    yield run
    for ref in refs:
        ref.stop(block=True, timeout=15)


def stats(ref) -> dict:
    return ref.ask(RequestStats(), timeout=5)


def tick(ref) -> None:
    ref.tell(Tick(now_mono_ns=time.monotonic_ns(), now_wall_ms=time.time_ns() // 1_000_000))


def tickers(ex: LocalExchange, n: int = 3) -> list[str]:
    return list(ex.call(lambda e: e.active_tickers()))[:n]


def drained(rec: Recorders, name: str = "state_keeper") -> None:
    """Wait until probe ``name`` has handled every message told to it so far. The feed tells the state keeper
    its batches BEFORE it tells the supervisor FeedReady, but the two probes are different threads: without
    this, a test that saw FeedReady could read the state keeper's log before those batches are in it."""
    rec.refs[name].ask(RequestStats(), timeout=5)


def snapshots_after(rec: Recorders, index: int) -> set[str]:
    """Markets with a snapshot in the BookFramesReceived batches from position ``index`` on."""
    seen = set()
    for batch in rec.got("state_keeper", BookFramesReceived)[index:]:
        seen.update(f.market_ticker for f in batch.frames if type(f) is OrderbookSnapshot)
    return seen


# --- order book --------------------------------------------------------------------------------------


def test_orderbook_drop_reconnects_resubscribes_and_resnapshots(ex, start, rec):
    markets = tickers(ex)
    ref = start(OrderbookFeed, "orderbook_feed", markets=markets)
    first = rec.wait("supervisor", FeedReady, timeout=10)[0]
    drained(rec)
    assert snapshots_after(rec, 0) == set(markets)
    assert ex.faults.drop_ws() == 1
    down = rec.wait("supervisor", FeedDown, timeout=10)[0]
    assert down.feed == "orderbook_feed"
    stale = rec.wait("state_keeper", BookStale, len(markets), timeout=10)
    assert {s.market_ticker for s in stale} == set(markets)
    mark = len(rec.got("state_keeper", BookFramesReceived))
    again = rec.wait("supervisor", FeedReady, timeout=10, where=lambda m: m.conn_id > first.conn_id)[0]
    drained(rec)
    assert snapshots_after(rec, mark) == set(markets)  # every book re-snapshotted on the new connection
    s = stats(ref)
    assert s["reconnects"] >= 1 and s["feed_state"] == "live" and s["conn_id"] == again.conn_id
    # The server holds exactly one connection with one orderbook subscription for us again.
    wait_for(lambda: server_subscriptions(ex) == [["orderbook_delta"]], 10, message="one subscription on the server")


def server_subscriptions(ex: LocalExchange) -> list[list[str]]:
    """Channels subscribed per open connection, read on the exchange's loop thread."""
    return ex.call(lambda _engine: [sorted(s.channel for s in c.subs.values()) for c in ex.server.conns])


def test_orderbook_drop_mid_snapshot_keeps_feed_down_until_all_books_fresh(ex, start, rec):
    markets = tickers(ex, 4)
    ex.faults.drop_ws(after_snapshots=2)  # the first connection dies after 2 of 4 snapshots (F01)
    ref = start(OrderbookFeed, "orderbook_feed", markets=markets)
    ready = rec.wait("supervisor", FeedReady, timeout=15)[0]
    assert ready.conn_id >= 2
    assert stats(ref)["reconnects"] >= 1
    # FeedReady came only after a connection on which every market had its snapshot.
    drained(rec)
    last_conn_batches = [b for b in rec.got("state_keeper", BookFramesReceived) if b.conn_id == ready.conn_id]
    seen = {f.market_ticker for b in last_conn_batches for f in b.frames if type(f) is OrderbookSnapshot}
    assert seen == set(markets)


def test_orderbook_seq_skip_stales_books_then_fresh_snapshots(ex, start, rec):
    markets = tickers(ex)
    ref = start(OrderbookFeed, "orderbook_feed", markets=markets)
    rec.wait("supervisor", FeedReady, timeout=10)
    sid = stats(ref)["sid"]
    ex.faults.seq_fault("skip", sid)
    gap = rec.wait("supervisor", SequenceGap, timeout=10, where=lambda m: m.kind == "gap")[0]
    assert gap.sid == sid and gap.got == gap.expected + 1
    stale = rec.wait("state_keeper", BookStale, len(markets), timeout=10)
    assert all("seq gap" in s.reason for s in stale)
    # Fresh snapshots (get_snapshot replies carry the command id) bring every book back.
    wait_for(lambda: stats(ref)["stage"] is None and stats(ref)["pending_snapshots"] == 0, 10,
             message="books fresh again")
    drained(rec)
    snaps = [f for b in rec.got("state_keeper", BookFramesReceived) for f in b.frames
             if type(f) is OrderbookSnapshot and f.id is not None]
    assert {f.market_ticker for f in snaps} == set(markets)
    s = stats(ref)
    assert s["gaps"] >= 1 and s["snapshot_requests"] >= 1 and s["feed_state"] == "live"
    assert rec.got("supervisor", FeedDown) == []  # a gap is book-level staleness, not a feed outage


def test_orderbook_duplicate_is_dropped_without_staleness(ex, start, rec):
    markets = tickers(ex)
    ref = start(OrderbookFeed, "orderbook_feed", markets=markets)
    rec.wait("supervisor", FeedReady, timeout=10)
    ex.faults.seq_fault("duplicate", stats(ref)["sid"])
    rec.wait("supervisor", SequenceGap, timeout=10, where=lambda m: m.kind == "duplicate")
    assert stats(ref)["duplicates"] >= 1
    drained(rec)
    assert rec.got("state_keeper", BookStale) == []


def test_malformed_frames_are_counted_and_the_connection_is_kept(ex, start, rec):
    markets = tickers(ex, 2)
    ref = start(OrderbookFeed, "orderbook_feed", markets=markets)
    rec.wait("supervisor", FeedReady, timeout=10)
    conn = stats(ref)["conn_id"]
    for kind in ("malformed", "binary", "invalid_utf8"):
        assert ex.faults.send_bad_frame(kind) == 1
    wait_for(lambda: stats(ref)["malformed"] >= 3, 10, message="3 malformed frames counted")
    s = stats(ref)
    assert s["conn_id"] == conn and s["connected"] and ref.is_alive()
    # A 2 MiB frame is over the client's 1 MiB cap: close 1009, reconnect, resnapshot.
    ex.faults.send_bad_frame("oversized")
    rec.wait("supervisor", FeedReady, timeout=10, where=lambda m: m.conn_id > conn)
    assert stats(ref)["malformed"] >= 4


def test_stalled_socket_is_detected_and_the_feed_recovers(ex, start, rec):
    markets = tickers(ex, 2)
    ref = start(OrderbookFeed, "orderbook_feed", markets=markets, ws_options={"idle_timeout": 1.0})
    first = rec.wait("supervisor", FeedReady, timeout=10)[0]
    ex.faults.stall_ws()
    down = rec.wait("supervisor", FeedDown, timeout=10)[0]
    assert down.reason == "stalled"
    assert stats(ref)["stalls"] >= 1
    ex.faults.resume_ws()
    rec.wait("supervisor", FeedReady, timeout=15, where=lambda m: m.conn_id > first.conn_id)


def test_error_25_renews_the_subscription_with_fresh_snapshots(ex, start, rec):
    markets = tickers(ex, 2)
    ref = start(OrderbookFeed, "orderbook_feed", markets=markets)
    rec.wait("supervisor", FeedReady, timeout=10)
    old_sid = stats(ref)["sid"]
    assert ex.faults.send_error25(old_sid) == 1
    rec.wait("state_keeper", BookStale, len(markets), timeout=10)
    wait_for(lambda: (s := stats(ref))["sid"] not in (None, old_sid) and s["pending_snapshots"] == 0, 10,
             message="renewed subscription with fresh snapshots")
    assert stats(ref)["error25"] == 1 and stats(ref)["feed_state"] == "live"


# --- trades --------------------------------------------------------------------------------------------


def place_taker_order(ex: LocalExchange, creds: Credentials, ticker: str) -> str:
    """Buy 1 YES at the best ask (IOC): a public trade and a fill for us. Returns the order id."""
    rest = KalshiRest(ex.rest_url, creds)
    try:
        book = rest.get_orderbook(ticker)
        assert book.no, "the flow keeps NO bids (YES asks) in the book"
        ask = PRICE_ONE - book.no[-1][0]
        result = rest.create_order(ticker, "bid", COUNT_ONE, ask, "immediate_or_cancel",
                                   f"feeds-live-{uuid.uuid4().hex[:12]}")
        assert result.fill_count == COUNT_ONE
        return result.order_id
    finally:
        rest.close()


def trade_ids_of_order(ex: LocalExchange, creds: Credentials, order_id: str) -> set[str]:
    rest = KalshiRest(ex.rest_url, creds)
    try:
        return {f.trade_id for f in rest.get_fills(order_id=order_id).fills}
    finally:
        rest.close()


def test_trades_stream_then_missed_trades_are_backfilled_after_a_drop(ex, start, rec, creds):
    market = tickers(ex, 1)[0]
    # A slow first retry leaves a window in which our own trade is printed while we are away.
    ref = start(TradesFeed, "trades_feed", ws_options={"backoff_initial": 3.0, "backoff_max": 3.0})
    first = rec.wait("supervisor", FeedReady, timeout=10)[0]
    live_order = place_taker_order(ex, creds, market)
    live_ids = trade_ids_of_order(ex, creds, live_order)
    wait_for(lambda: live_ids <= {t.trade_id for b in rec.got("whale_tracker", TradesPrinted) for t in b.trades},
             10, message="our live trade on the stream")
    assert ex.faults.drop_ws() == 1
    rec.wait("supervisor", FeedDown, timeout=10)
    missed_order = place_taker_order(ex, creds, market)
    missed_ids = trade_ids_of_order(ex, creds, missed_order)
    rec.wait("supervisor", FeedReady, timeout=15, where=lambda m: m.conn_id > first.conn_id)

    def backfilled() -> set[str]:
        return {t.trade_id for b in rec.got("whale_tracker", TradesPrinted) for t in b.trades if t.backfilled}

    wait_for(lambda: missed_ids <= backfilled(), 10, message="the missed trade backfilled")
    everything = [t.trade_id for b in rec.got("whale_tracker", TradesPrinted) for t in b.trades]
    assert len(everything) == len(set(everything)), "no trade passed on twice"
    assert not (live_ids & backfilled())
    assert stats(ref)["backfills"] >= 1
    assert rec.got("state_keeper", TradesPrinted) == rec.got("whale_tracker", TradesPrinted)


# --- private channels ------------------------------------------------------------------------------------


def test_fills_positions_and_sync_after_reconnect(ex, start, rec, creds):
    market = tickers(ex, 1)[0]
    ref = start(PositionListener, "position_listener")
    first = rec.wait("supervisor", FeedReady, timeout=10)[0]
    order_id = place_taker_order(ex, creds, market)
    fill = rec.wait("state_keeper", FillReceived, timeout=10)[0]
    assert (fill.order_id, fill.market_ticker, fill.count, fill.source) == (order_id, market, COUNT_ONE, "ws")
    assert fill.fill_id in trade_ids_of_order(ex, creds, order_id)
    position = rec.wait("state_keeper", PositionChanged, timeout=10,
                        where=lambda p: p.market_ticker == market)[-1]
    assert position.position == COUNT_ONE and position.source == "ws"
    assert rec.got("state_keeper", SyncAccount) == []
    ex.faults.drop_ws()
    rec.wait("supervisor", FeedReady, timeout=15, where=lambda m: m.conn_id > first.conn_id)
    assert "reconnected" in rec.wait("state_keeper", SyncAccount, timeout=10)[0].reason
    assert stats(ref)["fill_duplicates"] == 0


def test_position_listener_without_credentials_stays_idle(ex, start, rec):
    ref = start(PositionListener, "position_listener", credentials=None)
    assert rec.wait("supervisor", FeedDown)[0].reason == "no credentials"
    tick(ref)
    assert stats(ref)["idle"] is True
    assert ex.stats()["connections"] == 0


def test_last_recovery_step_replaces_the_connection(ex, start, rec):
    """The ladder's last step (a new client and connection) with the real client: the old connection is
    closed, the new one re-subscribes and re-snapshots, conn ids keep growing."""
    markets = tickers(ex, 2)
    ref = start(OrderbookFeed, "orderbook_feed", markets=markets)
    first = rec.wait("supervisor", FeedReady, timeout=10)[0]
    ref.proxy().replace_client("test").get(timeout=5)  # runs on the actor's thread, like the Tick escalation
    assert "reconnect: test" in rec.wait("supervisor", FeedDown, timeout=10)[0].reason
    again = rec.wait("supervisor", FeedReady, timeout=10, where=lambda m: m.conn_id > first.conn_id)[0]
    assert stats(ref)["client_replacements"] == 1 and again.conn_id > first.conn_id
    wait_for(lambda: server_subscriptions(ex) == [["orderbook_delta"]], 10, message="only the new connection")
