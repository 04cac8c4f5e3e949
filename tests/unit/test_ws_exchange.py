"""KalshiWebSocket against the local exchange (real engine, real signer, real decoder): the
F01/F02/F12/F13/F14 faults end to end. Skips when the exchange or its engine is not importable."""

from __future__ import annotations

import random
import threading

import pytest

from tests.helpers import wait_for

exchange = pytest.importorskip("kalshi.exchange")
pytest.importorskip("kalshi.exchange.engine")
from kalshi.auth import Credentials, generate_key_pair  # noqa: E402
from kalshi.wire.frames import OrderbookDelta, OrderbookSnapshot  # noqa: E402
from kalshi.ws import (  # noqa: E402
    KalshiWebSocket,
    WsConnected,
    WsDisconnected,
    WsMalformedFrame,
    WsSequenceIssue,
    WsStalled,
    WsSubscribed,
)

pytestmark = pytest.mark.timeout(60)
KEY_ID = "3c0a9f1e-7d2b-4c55-9e10-5a6b7c8d9e0f"


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.frames: list[object] = []
        self.events: list[object] = []

    def on_frames(self, conn_id: int, frames: tuple) -> None:
        with self.lock:
            self.frames.extend((conn_id, f) for f in frames)

    def on_event(self, event: object) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, cls: type) -> list:
        with self.lock:
            return [e for e in self.events if isinstance(e, cls)]

    def snapshots(self, conn_id: int) -> set[str]:
        with self.lock:
            return {f.market_ticker for c, f in self.frames if c == conn_id and isinstance(f, OrderbookSnapshot)}

    def deltas(self, conn_id: int) -> int:
        with self.lock:
            return sum(1 for c, f in self.frames if c == conn_id and isinstance(f, OrderbookDelta))


@pytest.fixture
def setup():
    private_pem, public_pem = generate_key_pair()
    ex = exchange.LocalExchange(api_keys={KEY_ID: public_pem}, flow="firehose", rate_limits=False,
                                ws_queue_limit=1_000_000, advance_interval_s=0.01).start()
    creds = Credentials.from_pem_text(KEY_ID, private_pem)
    clients: list[KalshiWebSocket] = []

    def client(rec: Recorder, **kw) -> KalshiWebSocket:
        c = KalshiWebSocket(ex.ws_url, creds, on_frames=rec.on_frames, on_event=rec.on_event,  # default decoder
                            backoff_initial=0.05, backoff_max=0.2, rng=random.Random(3), **kw)
        clients.append(c)
        return c

    try:
        yield ex, client
    finally:
        for c in clients:
            c.stop()
        ex.stop()


def test_books_stream_without_gaps_and_survive_a_drop_mid_snapshot(setup):
    ex, client = setup
    tickers = list(ex.call(lambda e: e.market_tickers()))
    rec = Recorder()
    ws = client(rec, idle_timeout=5)
    handle = ws.subscribe(["orderbook_delta"], tickers)
    ws.subscribe(["trade"])
    ws.start()
    wait_for(lambda: rec.snapshots(1) == set(tickers), 10, message="a snapshot per market")
    wait_for(lambda: rec.deltas(1) >= 200, 10, message="deltas flowing")
    assert not rec.of(WsSequenceIssue) and ws.stats().malformed == 0
    first_sid = next(e.sid for e in rec.of(WsSubscribed) if e.handle == handle)

    ex.faults.drop_ws(after_snapshots=2)  # F01: the next connection dies after 2 snapshots
    ex.faults.drop_ws()
    wait_for(lambda: len(rec.of(WsConnected)) >= 3, 10, message="two reconnects")
    latest = rec.of(WsConnected)[-1].conn_id
    wait_for(lambda: rec.snapshots(latest) == set(tickers), 10, message="all books resnapshotted")
    resub = [e for e in rec.of(WsSubscribed) if e.handle == handle and e.conn_id == latest]
    assert resub and resub[0].previous_sid is not None
    assert [e.previous_sid for e in rec.of(WsSubscribed) if e.handle == handle][1] == first_sid
    gone = rec.of(WsDisconnected)
    assert all(e.will_retry for e in gone) and len(gone) >= 2
    assert not rec.of(WsSequenceIssue)


def test_skip_is_a_gap_and_get_snapshot_rebases(setup):
    ex, client = setup
    tickers = list(ex.call(lambda e: e.market_tickers()))[:2]
    rec = Recorder()
    ws = client(rec, idle_timeout=5)
    ws.subscribe(["orderbook_delta"], tickers)
    ws.start()
    sid = wait_for(lambda: rec.of(WsSubscribed), 10, message="subscribed")[0].sid
    wait_for(lambda: rec.deltas(1) >= 20, 10, message="deltas")
    ex.faults.seq_fault("skip", sid)
    gap = wait_for(lambda: rec.of(WsSequenceIssue), 10, message="gap")[0]
    assert gap.kind == "gap" and gap.sid == sid and gap.got == gap.expected + 1
    before = len(rec.snapshots(1))
    ws.update_subscription(sid, "get_snapshot", tickers)
    wait_for(lambda: sum(1 for c, f in list(rec.frames) if isinstance(f, OrderbookSnapshot)) >= before + 2, 10,
             message="fresh snapshots")
    n = ws.stats().frames
    wait_for(lambda: ws.stats().frames >= n + 50, 10, message="stream continues")
    assert [i.kind for i in rec.of(WsSequenceIssue)] == ["gap"]

    ex.faults.seq_fault("duplicate", sid)
    dup = wait_for(lambda: [i for i in rec.of(WsSequenceIssue) if i.kind == "duplicate"], 10, message="dup")[0]
    assert dup.sid == sid and ws.stats().duplicates == 1


def test_bad_frames_stall_and_error_25(setup):
    ex, client = setup
    tickers = list(ex.call(lambda e: e.market_tickers()))[:1]
    rec = Recorder()
    ws = client(rec, idle_timeout=0.6, max_frame_bytes=1 << 20)
    handle = ws.subscribe(["orderbook_delta"], tickers)
    ws.start()
    wait_for(lambda: rec.of(WsSubscribed), 10, message="subscribed")
    for kind in ("malformed", "binary", "invalid_utf8"):  # F13: counted, connection kept
        ex.faults.send_bad_frame(kind)
    wait_for(lambda: ws.stats().malformed >= 3, 10, message="three bad frames")
    assert len(rec.of(WsMalformedFrame)) == 3 and not rec.of(WsDisconnected)

    ex.faults.send_bad_frame("oversized")  # F14: close 1009 and reconnect
    gone = wait_for(lambda: rec.of(WsDisconnected), 10, message="oversize disconnect")[0]
    assert gone.reason == "oversize" and ws.stats().oversized == 1
    wait_for(lambda: len(rec.of(WsConnected)) >= 2, 10, message="reconnected")

    conn = rec.of(WsConnected)[-1].conn_id
    sid = wait_for(lambda: [e for e in rec.of(WsSubscribed) if e.conn_id == conn], 10, message="resubscribed")[0].sid
    ex.faults.send_error25(sid)  # the server ends the subscription: the client subscribes again
    again = wait_for(lambda: [e for e in rec.of(WsSubscribed) if e.conn_id == conn and e.previous_sid == sid], 10,
                     message="resubscribed after error 25")
    assert again[0].handle == handle

    ex.faults.stall_ws()  # F12: nothing at all, not even pings
    stalled = wait_for(lambda: rec.of(WsStalled), 10, message="stall detected")[0]
    assert stalled.idle_s >= 0.6
    ex.faults.resume_ws()
    wait_for(lambda: len(rec.of(WsConnected)) >= 3, 10, message="reconnected after the stall")
