"""kalshi.ws.KalshiWebSocket against a small aiohttp WebSocket server on 127.0.0.1.

The server (``FakeWsServer``) speaks enough Kalshi WS v2 for the client: it checks the signed
upgrade, answers subscribe / unsubscribe / update_subscription / list_subscriptions with Kalshi's
reply shapes and distinct per-connection sids, and lets a test push frames, pings, drops, stalls,
holds replies or refuses the upgrade. Tests run with a trivial json decoder (frame classes named
like kalshi.wire.frames) and, where marked, with the real ``decode_frame`` too.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import datetime
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from kalshi.wire.errors import WireError
from kalshi.ws import (
    MAX_BATCH,
    KalshiWebSocket,
    WsCommandReply,
    WsConnected,
    WsDisconnected,
    WsMalformedFrame,
    WsSequenceIssue,
    WsStalled,
    WsSubscribed,
)
from tests.helpers import wait_for

WS_PATH = "/trade-api/ws/v2"
TICKER = "KXHIGHNY-26NOV25-T55"

# ----------------------------------------------------------------------------- test decoder


@dataclass(frozen=True)
class Subscribed:
    id: int | None
    channel: str
    sid: int
    seq: None = None


@dataclass(frozen=True)
class Unsubscribed:
    id: int | None
    sid: int | None
    seq: int | None


@dataclass(frozen=True)
class Ok:
    id: int | None
    sid: int | None
    seq: int | None
    msg: Any


@dataclass(frozen=True)
class WsError:
    id: int | None
    sid: int | None
    seq: int | None
    code: int
    msg: str


@dataclass(frozen=True)
class OrderbookSnapshot:
    sid: int
    seq: int
    market_ticker: str
    id: int | None


@dataclass(frozen=True)
class Data:
    type: str
    sid: int | None
    seq: int | None
    market_ticker: str | None


def json_decode(data: bytes | str) -> Any:
    """A trivial decoder with the frame class names of kalshi.wire.frames."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise WireError("not JSON", data) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise WireError("no type", data)
    kind, msg = obj["type"], obj.get("msg")
    sid, seq, cid = obj.get("sid"), obj.get("seq"), obj.get("id")
    if kind == "subscribed":
        return Subscribed(cid, msg["channel"], msg["sid"])
    if kind == "unsubscribed":
        return Unsubscribed(cid, sid, seq)
    if kind == "ok":
        return Ok(cid, sid, seq, msg)
    if kind == "error":
        return WsError(cid, sid, seq, msg["code"], msg["msg"])
    if kind == "orderbook_snapshot":
        return OrderbookSnapshot(sid, seq, msg["market_ticker"], cid)
    return Data(kind, sid, seq, (msg or {}).get("market_ticker"))


def _real_decoder():
    try:
        from kalshi.wire.frames import decode_frame
    except ImportError:
        return None
    return decode_frame


@pytest.fixture(params=["json", "real"])
def decoder(request):
    if request.param == "json":
        return json_decode
    real = _real_decoder()
    if real is None:
        pytest.skip("kalshi.wire.frames is not available")
    return real


def any_decoder():
    return _real_decoder() or json_decode


# ------------------------------------------------------------------------------ frame text


def delta(sid: int, seq: int, price: str = "0.4700", size: str = "1.00", side: str = "yes", ticker: str = TICKER) -> str:
    return json.dumps(
        {"type": "orderbook_delta", "sid": sid, "seq": seq,
         "msg": {"market_ticker": ticker, "price_dollars": price, "delta_fp": size, "side": side, "ts_ms": 1764000123123}}
    )


def snapshot(sid: int, seq: int, cid: int | None = None, ticker: str = TICKER) -> str:
    frame: dict[str, Any] = {"type": "orderbook_snapshot", "sid": sid, "seq": seq,
                             "msg": {"market_ticker": ticker, "yes_dollars_fp": [["0.4500", "50.00"]],
                                     "no_dollars_fp": [["0.4800", "150.00"]]}}
    if cid is not None:
        frame["id"] = cid
    return json.dumps(frame)


def ticker_frame(sid: int) -> str:
    return json.dumps({"type": "ticker", "sid": sid, "msg": {
        "market_ticker": TICKER, "price_dollars": "0.5100", "yes_bid_dollars": "0.4700", "yes_ask_dollars": "0.5200",
        "volume_fp": "1236.00", "open_interest_fp": "802.00", "ts_ms": 1764000123123}})


def ws_frame(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    """A server-to-client (unmasked) WebSocket frame."""
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        head = bytes([first, n])
    elif n < 1 << 16:
        head = bytes([first, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, 127]) + n.to_bytes(8, "big")
    return head + payload


def seq_of(frame: Any) -> int | None:
    return getattr(frame, "seq", None)


# ---------------------------------------------------------------------------- fake server


class FakeWsServer:
    """A Kalshi-like WebSocket endpoint on 127.0.0.1, driven from the test thread."""

    def __init__(self, public_key: rsa.RSAPublicKey | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self.public_key = public_key
        self.ssl_context = ssl_context
        self.reject_status: int | None = None  # answer the upgrade with this status
        self.stall = False  # accept, then never send or answer anything
        self.hold_replies = False  # queue replies until release_replies()
        self.lock = threading.Lock()
        self.handshakes: list[dict[str, str]] = []
        self.commands: list[tuple[int, dict]] = []  # (connection number, command)
        self.pongs: list[bytes] = []
        self.close_codes: list[int | None] = []
        self.connections = 0
        self._held: list[tuple[Any, list[str]]] = []
        self._live: dict[int, tuple[web.WebSocketResponse, Any]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="asyncio_fake_ws", daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # lifecycle
    def start(self) -> str:
        self._thread.start()
        self._call(self._start())
        scheme = "wss" if self.ssl_context else "ws"
        return f"{scheme}://127.0.0.1:{self.port}{WS_PATH}"

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get(WS_PATH, self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        try:
            self._call(self._stop(), timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    async def _stop(self) -> None:
        for ws, transport in list(self._live.values()):
            if transport is not None:
                transport.abort()
        assert self._runner is not None
        await self._runner.cleanup()

    def _call(self, coro, timeout: float = 5.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # the endpoint
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items()}
        with self.lock:
            self.handshakes.append(headers)
        if self.reject_status is not None:
            body = {"error": {"code": "authentication_error", "message": "authentication_error",
                              "details": "INCORRECT_API_KEY_SIGNATURE"}}
            return web.json_response(body, status=self.reject_status)
        if self.public_key is not None and not self._verify(headers):
            return web.json_response({"error": {"code": "authentication_error"}}, status=401)
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 20)
        transport = request.transport
        await ws.prepare(request)
        with self.lock:
            self.connections += 1
            conn = self.connections
        self._live[conn] = (ws, transport)
        state = {"next_sid": 1}
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    cmd = json.loads(msg.data)
                    with self.lock:
                        self.commands.append((conn, cmd))
                    if self.stall:
                        continue
                    replies = self._replies(cmd, state)
                    if self.hold_replies:
                        self._held.append((ws, replies))
                    else:
                        for text in replies:
                            await ws.send_str(text)
                elif msg.type == WSMsgType.PONG:
                    with self.lock:
                        self.pongs.append(bytes(msg.data))
                elif msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            self._live.pop(conn, None)
            with self.lock:
                self.close_codes.append(ws.close_code)
        return ws

    def _verify(self, headers: dict[str, str]) -> bool:
        try:
            ts = headers["KALSHI-ACCESS-TIMESTAMP"]
            signature = base64.b64decode(headers["KALSHI-ACCESS-SIGNATURE"], validate=True)
            self.public_key.verify(  # type: ignore[union-attr]
                signature, f"{ts}GET{WS_PATH}".encode(),
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
                hashes.SHA256(),
            )
        except Exception:
            return False
        return abs(int(ts) - time.time() * 1000) < 10_000

    @staticmethod
    def _replies(cmd: dict, state: dict) -> list[str]:
        cid, name, params = cmd.get("id"), cmd.get("cmd"), cmd.get("params") or {}
        out = []
        if name == "subscribe":
            for channel in params.get("channels", []):
                if channel == "bogus":
                    return [json.dumps({"id": cid, "type": "error", "msg": {"code": 8, "msg": "Unknown channel name"}})]
            for channel in params.get("channels", []):
                sid = state["next_sid"]
                state["next_sid"] += 1
                out.append(json.dumps({"id": cid, "type": "subscribed", "msg": {"channel": channel, "sid": sid}}))
        elif name == "unsubscribe":
            for sid in params.get("sids", []):
                out.append(json.dumps({"id": cid, "sid": sid, "seq": 3, "type": "unsubscribed"}))
        elif name == "update_subscription":
            out.append(json.dumps({"id": cid, "sid": params.get("sid"), "type": "ok",
                                   "msg": {"market_tickers": params.get("market_tickers", [])}}))
        elif name == "list_subscriptions":
            out.append(json.dumps({"id": cid, "type": "ok", "msg": [{"channel": "orderbook_delta", "sid": 1}]}))
        return out

    # driving it from the test thread
    async def _newest(self) -> tuple[web.WebSocketResponse, Any]:
        """The newest accepted connection, once its handler has registered it."""
        for _ in range(5000):
            if self._live and max(self._live) == self.connections:
                return self._live[max(self._live)]
            await asyncio.sleep(0.001)
        raise AssertionError("no live server connection")

    def send(self, *texts: str) -> None:
        """Send text frames on the newest connection, one aiohttp send per frame."""

        async def go():
            ws, _ = await self._newest()
            for text in texts:
                await ws.send_str(text)

        self._call(go())

    def send_burst(self, *texts: str) -> None:
        """Send text frames on the newest connection in ONE transport write (a real burst)."""
        self.write_raw(b"".join(ws_frame(t.encode()) for t in texts))

    def send_raw(self, payload: bytes, opcode: WSMsgType = WSMsgType.TEXT) -> None:
        async def go():
            ws, _ = await self._newest()
            try:
                await ws.send_frame(payload, opcode)
            except (ConnectionError, RuntimeError):
                pass  # the client may close while a huge frame is still going out

        self._call(go(), timeout=10)

    def write_raw(self, data: bytes) -> None:
        """Write bytes straight to the newest connection's transport (hand-made frames)."""

        async def go():
            _, transport = await self._newest()
            transport.write(data)

        self._call(go())

    def ping(self, payload: bytes = b"heartbeat") -> None:
        async def go():
            ws, _ = await self._newest()
            await ws.ping(payload)

        self._call(go())

    def close_newest(self, code: int) -> None:
        async def go():
            ws, _ = await self._newest()
            await ws.close(code=code, message=b"bye")

        self._call(go())

    def drop_all(self) -> None:
        """Abort every TCP connection without a close frame."""

        async def go():
            for ws, transport in list(self._live.values()):
                transport.abort()

        self._call(go())

    def release_replies(self) -> None:
        async def go():
            held, self._held[:] = list(self._held), []
            for ws, replies in held:
                for text in replies:
                    await ws.send_str(text)

        self.hold_replies = False
        self._call(go())

    def cmds(self, conn: int | None = None, name: str | None = None) -> list[dict]:
        with self.lock:
            return [c for n, c in self.commands if (conn is None or n == conn) and (name is None or c.get("cmd") == name)]


# ------------------------------------------------------------------------------- recorder


class Recorder:
    """Collects on_frames batches and events in one timeline (reader-thread order)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batches: list[tuple[int, tuple]] = []
        self.events: list[object] = []
        self.timeline: list[object] = []

    def on_frames(self, conn_id: int, frames: tuple) -> None:
        assert isinstance(frames, tuple)
        with self.lock:
            self.batches.append((conn_id, frames))
            self.timeline.extend(frames)

    def on_event(self, event: object) -> None:
        with self.lock:
            self.events.append(event)
            self.timeline.append(event)

    def frames(self) -> list[Any]:
        with self.lock:
            return [f for _, batch in self.batches for f in batch]

    def of(self, cls: type) -> list[Any]:
        with self.lock:
            return [e for e in self.events if isinstance(e, cls)]


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture
def key_pair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return key, pem


class _FakeCredentials:
    """Signs like Kalshi (used only if kalshi.auth is unavailable)."""

    def __init__(self, key_id: str, key: rsa.RSAPrivateKey) -> None:
        self.key_id, self.key = key_id, key

    def sign_headers(self, method: str, path: str, now_ms: int | None = None) -> dict[str, str]:
        ts = str(now_ms if now_ms is not None else int(time.time() * 1000))
        sig = self.key.sign(f"{ts}{method}{path}".encode(),
                            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
                            hashes.SHA256())
        return {"KALSHI-ACCESS-KEY": self.key_id, "KALSHI-ACCESS-TIMESTAMP": ts,
                "KALSHI-ACCESS-SIGNATURE": base64.b64encode(sig).decode()}


KEY_ID = "0f5e2a7c-1111-4222-8333-944455556666"


@pytest.fixture
def credentials(key_pair):
    key, pem = key_pair
    try:
        from kalshi.auth import Credentials
    except ImportError:
        return _FakeCredentials(KEY_ID, key)
    return Credentials.from_pem_text(KEY_ID, pem.decode())


@pytest.fixture
def server():
    srv = FakeWsServer()
    srv.url = srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def make_client():
    made: list[KalshiWebSocket] = []

    def make(url: str, recorder: Recorder, **kw) -> KalshiWebSocket:
        kw.setdefault("decode", any_decoder())
        kw.setdefault("backoff_initial", 0.02)
        kw.setdefault("backoff_max", 0.1)
        kw.setdefault("rng", random.Random(7))
        client = KalshiWebSocket(url, kw.pop("credentials", None), on_frames=recorder.on_frames,
                                 on_event=recorder.on_event, **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        client.stop(timeout=5)


def connected(rec: Recorder, n: int = 1):
    return wait_for(lambda: len(rec.of(WsConnected)) >= n and rec.of(WsConnected), 5, message=f"{n} connection(s)")


def subscribed(rec: Recorder, n: int):
    return wait_for(lambda: len(rec.of(WsSubscribed)) >= n and rec.of(WsSubscribed), 5,
                    message=f"{n} WsSubscribed events")


# ------------------------------------------------------------------------------------- tests


def test_handshake_is_signed_over_the_ws_path(key_pair, credentials, make_client, caplog):
    key, _ = key_pair
    srv = FakeWsServer(public_key=key.public_key())
    url = srv.start()
    try:
        caplog.set_level(logging.DEBUG)
        rec = Recorder()
        client = make_client(url + "?ignored=1", rec, credentials=credentials)
        client.start()
        connected(rec)  # the server only upgrades when the signature verifies
        hs = srv.handshakes[0]
        for name in ("KALSHI-ACCESS-KEY", "KALSHI-ACCESS-TIMESTAMP", "KALSHI-ACCESS-SIGNATURE"):
            assert hs.get(name), name
        assert hs["KALSHI-ACCESS-KEY"] == KEY_ID
        assert "Origin" not in hs
        assert rec.of(WsConnected)[0].conn_id == 1
        # the signature is over ts + GET + path, query excluded
        assert srv._verify(hs)
        client.stop()
        text = caplog.text
        assert hs["KALSHI-ACCESS-SIGNATURE"] not in text
        assert KEY_ID not in text
    finally:
        srv.stop()


def test_bad_signature_is_an_auth_failure(key_pair, make_client):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key, _ = key_pair
    srv = FakeWsServer(public_key=other.public_key())  # does not match the client's key
    url = srv.start()
    try:
        rec = Recorder()
        client = make_client(url, rec, credentials=_FakeCredentials(KEY_ID, key))
        client.start()
        wait_for(lambda: len(rec.of(WsDisconnected)) >= 2, 5, message="two refused attempts")
        assert all(e.reason == "auth" and e.will_retry for e in rec.of(WsDisconnected))
        assert not rec.of(WsConnected)
        assert client.stats().auth_failures >= 2
    finally:
        srv.stop()


def test_commands_arrive_with_unique_ids_and_replies_are_events(server, make_client, decoder):
    rec = Recorder()
    client = make_client(server.url, rec, decode=decoder)
    h1 = client.subscribe(["orderbook_delta"], [TICKER])
    h2 = client.subscribe(["trade", "ticker"])
    client.start()
    connected(rec)
    subs = subscribed(rec, 3)
    sid_ob = next(e.sid for e in subs if e.handle == h1)
    assert {(e.handle, e.channel) for e in subs} == {(h1, "orderbook_delta"), (h2, "trade"), (h2, "ticker")}
    assert all(e.previous_sid is None for e in subs)
    c3 = client.update_subscription(sid_ob, "add_markets", ["KXB-1"])
    c4 = client.update_subscription(sid_ob, "get_snapshot", [TICKER])
    c5 = client.list_subscriptions()
    sid_trade = next(e.sid for e in subs if e.channel == "trade")
    c6 = client.unsubscribe([sid_trade])
    wait_for(lambda: len(server.cmds()) >= 6, 5, message="six commands at the server")
    cmds = server.cmds()
    ids = [c["id"] for c in cmds]
    assert len(set(ids)) == len(ids) == 6
    assert ids == [h1, h2, c3, c4, c5, c6]
    assert cmds[0] == {"id": h1, "cmd": "subscribe",
                       "params": {"channels": ["orderbook_delta"], "market_tickers": [TICKER], "use_yes_price": False}}
    assert cmds[1]["params"] == {"channels": ["trade", "ticker"]}
    assert cmds[2]["params"] == {"sid": sid_ob, "market_tickers": ["KXB-1"], "action": "add_markets"}
    assert cmds[3]["params"] == {"sid": sid_ob, "market_tickers": [TICKER], "action": "get_snapshot"}
    assert cmds[4] == {"id": c5, "cmd": "list_subscriptions"}
    assert cmds[5]["params"] == {"sids": [sid_trade]}
    replies = wait_for(lambda: len(rec.of(WsCommandReply)) >= 7 and rec.of(WsCommandReply), 5, message="replies")
    assert {r.command_id for r in replies} == {h1, h2, c3, c4, c5, c6}
    assert {r.handle for r in replies if r.command_id in (h1, h2)} == {h1, h2}
    assert {r.handle for r in replies if r.command_id not in (h1, h2)} == {None}
    assert all(type(r.frame).__name__ in {"Subscribed", "Unsubscribed", "Ok", "WsError"} for r in replies)
    assert rec.frames() == []  # replies never travel in on_frames
    assert client.stats().subscriptions == 2  # trade unsubscribed; ticker and orderbook_delta left


def test_use_yes_price_explicit_and_market_ticker_param(server, make_client):
    rec = Recorder()
    client = make_client(server.url, rec)
    client.start()
    connected(rec)
    client.subscribe(["orderbook_delta"], market_ticker=TICKER, use_yes_price=True)
    client.subscribe(["ticker"], market_tickers=[TICKER], send_initial_snapshot=True)
    wait_for(lambda: len(server.cmds()) >= 2, 5, message="two subscribes")
    p1, p2 = (c["params"] for c in server.cmds())
    assert p1 == {"channels": ["orderbook_delta"], "market_tickers": [TICKER], "use_yes_price": True}
    assert p2 == {"channels": ["ticker"], "market_tickers": [TICKER], "send_initial_snapshot": True}


def test_bad_command_arguments_raise_in_the_caller(make_client):
    rec = Recorder()
    client = make_client("ws://127.0.0.1:9/trade-api/ws/v2", rec)
    with pytest.raises(TypeError):
        client.subscribe("trade")
    with pytest.raises(ValueError):
        client.subscribe([])
    with pytest.raises(TypeError):
        client.subscribe(["trade"], TICKER)
    with pytest.raises(ValueError):
        client.subscribe(["trade"], [TICKER], market_ticker=TICKER)
    with pytest.raises(ValueError):
        client.subscribe(["orderbook_delta"], [])
    with pytest.raises(TypeError):
        client.subscribe(["trade"], weird=object())
    with pytest.raises(ValueError):
        client.update_subscription(1, "replace", [TICKER])
    with pytest.raises(ValueError):
        client.update_subscription(1, "add_markets", [])
    with pytest.raises(ValueError):
        client.unsubscribe([0])
    with pytest.raises(ValueError):
        client.unsubscribe([True])
    with pytest.raises(ValueError):
        KalshiWebSocket("http://127.0.0.1:9/x", on_frames=rec.on_frames, on_event=rec.on_event, decode=json_decode)
    with pytest.raises(ValueError):
        KalshiWebSocket("ws://u:p@127.0.0.1:9/x", on_frames=rec.on_frames, on_event=rec.on_event, decode=json_decode)
    with pytest.raises(ValueError):
        KalshiWebSocket("ws://127.0.0.1:9/x", on_frames=rec.on_frames, on_event=rec.on_event, decode=json_decode,
                        idle_timeout=0)


def test_a_burst_is_delivered_in_few_batches_in_order(server, make_client, decoder):
    rec = Recorder()
    client = make_client(server.url, rec, decode=decoder)
    client.start()
    connected(rec)
    server.send_burst(*[delta(1, seq) for seq in range(1, 1001)])
    wait_for(lambda: len(rec.frames()) >= 1000, 10, message="1000 frames")
    frames = rec.frames()
    assert [seq_of(f) for f in frames] == list(range(1, 1001))
    assert len(rec.batches) < 100, len(rec.batches)  # one callback per burst, not per frame
    assert max(len(b) for _, b in rec.batches) <= MAX_BATCH
    assert all(conn == 1 for conn, _ in rec.batches)
    stats = client.stats()
    assert stats.frames == 1000 and stats.batches == len(rec.batches)
    assert stats.gaps == stats.duplicates == stats.malformed == 0
    assert stats.bytes >= 1000 * 100
    assert stats.last_frame_age_s is not None and stats.last_frame_age_s < 5


def test_sequence_gap_delivered_duplicate_and_backward_dropped(server, make_client, decoder):
    rec = Recorder()
    client = make_client(server.url, rec, decode=decoder)
    client.start()
    connected(rec)
    server.send(
        snapshot(1, 1), delta(1, 2), delta(1, 4),  # gap: 3 missing
        delta(1, 4),  # duplicate
        delta(1, 3),  # backward (late reorder)
        delta(1, 2),  # backward again, same watermark: counted, not re-reported
        delta(1, 5),
        delta(2, 7), delta(2, 8),  # another sid: its own baseline
        ticker_frame(3),  # no seq: untouched
        snapshot(1, 20, cid=9),  # get_snapshot reply: re-bases sid 1
        delta(1, 21),
    )
    wait_for(lambda: len(rec.frames()) >= 9, 5, message="frames")
    got = [(f.sid, seq_of(f)) for f in rec.frames()]
    assert got == [(1, 1), (1, 2), (1, 4), (1, 5), (2, 7), (2, 8), (3, None), (1, 20), (1, 21)]
    issues = rec.of(WsSequenceIssue)
    assert [(i.sid, i.kind, i.expected, i.got) for i in issues] == [
        (1, "gap", 3, 4), (1, "duplicate", 5, 4), (1, "backward", 5, 3)]
    # the gap event comes before the frame that revealed it
    with rec.lock:
        timeline = list(rec.timeline)
    gap_at = timeline.index(issues[0])
    assert seq_of(timeline[gap_at - 1]) == 2 and seq_of(timeline[gap_at + 1]) == 4
    stats = client.stats()
    assert (stats.gaps, stats.duplicates, stats.backward) == (1, 1, 2)


def test_seq_tracking_resets_on_resubscribe_and_reconnect(server, make_client):
    rec = Recorder()
    client = make_client(server.url, rec, idle_timeout=5)
    client.subscribe(["orderbook_delta"], [TICKER])
    client.start()
    subscribed(rec, 1)
    server.send(snapshot(1, 1), delta(1, 2), delta(1, 3))
    wait_for(lambda: len(rec.frames()) >= 3, 5, message="frames")
    server.drop_all()
    subscribed(rec, 2)
    server.send(snapshot(1, 1), delta(1, 2))  # the new connection's sid 1 starts again at 1
    wait_for(lambda: len(rec.frames()) >= 5, 5, message="frames after reconnect")
    assert not rec.of(WsSequenceIssue)
    assert [c for c, _ in rec.batches][-1] == 2


def test_reconnect_replays_desired_subscriptions(server, make_client, credentials, caplog):
    caplog.set_level(logging.DEBUG)
    rec = Recorder()
    client = make_client(server.url, rec, credentials=credentials, idle_timeout=5)
    client.start()
    connected(rec)
    h_ob = client.subscribe(["orderbook_delta"], [TICKER, "KXA-1"])
    h_tr = client.subscribe(["trade"])
    h_fill = client.subscribe(["fill"])
    first = subscribed(rec, 3)
    sid = {e.handle: e.sid for e in first}
    client.update_subscription(sid[h_ob], "add_markets", ["KXB-2"])
    client.update_subscription(sid[h_ob], "delete_markets", ["KXA-1"])
    client.unsubscribe([sid[h_fill]])
    wait_for(lambda: len(server.cmds(conn=1)) >= 6, 5, message="commands on connection 1")

    server.drop_all()
    gone = wait_for(lambda: rec.of(WsDisconnected), 5, message="disconnect")[0]
    assert gone.conn_id == 1 and gone.will_retry and gone.reason == "connection_lost"
    assert 0.01 <= gone.retry_in_s <= 0.02  # first retry after a short connection: initial, jittered
    connected(rec, 2)
    again = subscribed(rec, 5)[3:]
    replayed = server.cmds(conn=2, name="subscribe")
    assert sorted((tuple(c["params"]["channels"]), tuple(c["params"].get("market_tickers", ()))) for c in replayed) == [
        (("orderbook_delta",), ("KXB-2", TICKER)), (("trade",), ())]
    ob = next(c for c in replayed if c["params"]["channels"] == ["orderbook_delta"])
    assert ob["params"]["use_yes_price"] is False
    assert all(c["id"] not in {h_ob, h_tr} for c in replayed)  # replays use new ids: ids never repeat
    assert {e.handle for e in again} == {h_ob, h_tr}
    assert {e.handle: e.previous_sid for e in again} == {h_ob: sid[h_ob], h_tr: sid[h_tr]}
    assert all(e.conn_id == 2 for e in again)
    replies2 = [r for r in rec.of(WsCommandReply) if r.conn_id == 2]
    assert {r.handle for r in replies2} == {h_ob, h_tr}
    assert all(r.command_id != r.handle for r in replies2)
    # a fresh signature on every attempt
    sigs = [h["KALSHI-ACCESS-SIGNATURE"] for h in server.handshakes]
    assert len(sigs) == 2 and sigs[0] != sigs[1]
    assert client.stats().reconnects == 1
    for s in sigs:
        assert s not in caplog.text

    # an old sid, pinned to its connection, reaches the subscription's new sid
    new_sid = {e.handle: e.sid for e in again}
    client.update_subscription(sid[h_ob], "get_snapshot", [TICKER], conn_id=1)
    upd = wait_for(lambda: server.cmds(conn=2, name="update_subscription"), 5, message="get_snapshot on connection 2")
    assert upd[0]["params"]["sid"] == new_sid[h_ob]


def test_update_while_resubscribe_in_flight_is_not_lost(server, make_client):
    rec = Recorder()
    client = make_client(server.url, rec, idle_timeout=5)
    h = client.subscribe(["orderbook_delta"], [TICKER])
    h2 = client.subscribe(["trade"], [TICKER])
    client.start()
    first = subscribed(rec, 2)
    old = {e.handle: e.sid for e in first}
    server.hold_replies = True
    server.drop_all()
    wait_for(lambda: len(server.cmds(conn=2, name="subscribe")) >= 2, 5, message="replayed subscribes")
    client.update_subscription(old[h], "add_markets", ["KXC-3"], conn_id=1)  # reply not yet back
    client.unsubscribe([old[h2]], conn_id=1)
    wait_for(lambda: client.stats().subscriptions == 1, 5, message="trade removed from the desired state")
    assert not server.cmds(conn=2, name="update_subscription")  # no live sid yet: nothing sent
    server.release_replies()
    upd = wait_for(lambda: server.cmds(conn=2, name="update_subscription"), 5, message="catch-up update")
    ev = wait_for(lambda: [e for e in rec.of(WsSubscribed) if e.conn_id == 2], 5, message="new sid")
    assert upd[0]["params"] == {"sid": ev[0].sid, "market_tickers": ["KXC-3"], "action": "add_markets"}
    # the trade subscription arrived after it was no longer wanted: cleaned up
    unsub = wait_for(lambda: server.cmds(conn=2, name="unsubscribe"), 5, message="orphan cleanup")
    assert len(unsub[0]["params"]["sids"]) == 1
    assert [e.handle for e in rec.of(WsSubscribed) if e.conn_id == 2] == [h]


def test_commands_while_disconnected_shape_the_replay(make_client):
    rec = Recorder()
    # nothing listens on this port: every attempt fails
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = make_client(f"ws://127.0.0.1:{port}{WS_PATH}", rec)
    client.start()
    wait_for(lambda: rec.of(WsDisconnected), 5, message="failed attempt")
    assert rec.of(WsDisconnected)[0].reason == "connect_failed"
    client.subscribe(["trade"])
    client.list_subscriptions()
    client.update_subscription(5, "get_snapshot", [TICKER])
    wait_for(lambda: client.stats().commands_dropped == 2, 5, message="ephemeral commands dropped")
    assert client.stats().subscriptions == 1


def test_error_25_resubscribes_and_permanent_error_forgets(server, make_client):
    rec = Recorder()
    client = make_client(server.url, rec, idle_timeout=5)
    h = client.subscribe(["orderbook_delta"], [TICKER])
    client.start()
    sid = subscribed(rec, 1)[0].sid
    server.send(json.dumps({"type": "error", "sid": sid, "msg": {"code": 25, "msg": "Subscription buffer overflow"}}))
    again = subscribed(rec, 2)[1]
    assert again.handle == h and again.previous_sid == sid and again.conn_id == 1
    assert len(server.cmds(conn=1, name="subscribe")) == 2

    bad = client.subscribe(["bogus"])
    err = wait_for(lambda: [r for r in rec.of(WsCommandReply) if r.command_id == bad], 5, message="error reply")
    assert err[0].frame.code == 8 and err[0].handle == bad
    wait_for(lambda: client.stats().subscriptions == 1, 5, message="bogus forgotten")
    server.drop_all()
    wait_for(lambda: server.cmds(conn=2, name="subscribe"), 5, message="replay")
    assert all("bogus" not in c["params"]["channels"] for c in server.cmds(conn=2, name="subscribe"))


def test_malformed_frames_are_counted_and_the_connection_kept(server, make_client, decoder):
    rec = Recorder()
    client = make_client(server.url, rec, decode=decoder)
    client.start()
    connected(rec)
    server.send("not json \x1b[31m")
    server.send('{"type": "orderbook_delta", "sid": 1, "se')
    server.send_raw(b'{"type":"trade","x":"\xff\xfe"}')  # invalid UTF-8 in a text frame
    server.send_raw(b"\x00\x01binary", WSMsgType.BINARY)
    server.send(delta(1, 1))
    wait_for(lambda: rec.frames(), 5, message="the good frame")
    assert [seq_of(f) for f in rec.frames()] == [1]
    bad = rec.of(WsMalformedFrame)
    assert len(bad) == 4
    assert bad[3].reason == "binary frame"
    for ev in bad:
        assert ev.sample.isascii() and ev.sample.isprintable() and len(ev.sample) <= 160
        assert "\x1b" not in ev.reason + ev.sample
    assert client.stats().malformed == 4
    assert len(rec.of(WsConnected)) == 1 and not rec.of(WsDisconnected)


def test_too_many_bad_frames_reconnect(server, make_client):
    rec = Recorder()
    client = make_client(server.url, rec, bad_frame_limit=(3, 10.0))
    client.start()
    connected(rec)
    server.send("x", "y", "z")
    wait_for(lambda: client.stats().malformed == 3, 5, message="three bad frames")
    assert not rec.of(WsDisconnected)
    server.send("w")
    gone = wait_for(lambda: rec.of(WsDisconnected), 5, message="reconnect")[0]
    assert gone.reason == "bad_frames" and gone.will_retry
    connected(rec, 2)


def test_oversized_frame_closes_1009_and_reconnects(server, make_client):
    rec = Recorder()
    client = make_client(server.url, rec, max_frame_bytes=64 * 1024, idle_timeout=5)
    h = client.subscribe(["orderbook_delta"], [TICKER])
    client.start()
    subscribed(rec, 1)
    server.send(delta(1, 1, size="2.00"))  # small frames are fine
    wait_for(lambda: rec.frames(), 5, message="small frame")
    big = '{"type":"ticker","sid":1,"msg":{"market_ticker":"' + "A" * (2 << 20) + '"}}'
    server.send_raw(big.encode())
    gone = wait_for(lambda: rec.of(WsDisconnected), 10, message="disconnect")[0]
    assert gone.reason == "oversize" and gone.will_retry
    wait_for(lambda: 1009 in server.close_codes, 5, message="close code 1009 at the server")
    stats = client.stats()
    assert stats.oversized == 1 and stats.malformed == 1
    assert any("exceeds" in e.reason for e in rec.of(WsMalformedFrame))
    again = subscribed(rec, 2)[1]  # resubscribed after the reconnect
    assert again.handle == h and again.conn_id == 2


def test_server_close_frame_is_a_reason(server, make_client):
    rec = Recorder()
    client = make_client(server.url, rec)
    client.start()
    connected(rec)
    server.close_newest(4001)
    gone = wait_for(lambda: rec.of(WsDisconnected), 5, message="disconnect")[0]
    assert gone.reason == "closed_by_server:4001" and gone.will_retry
    connected(rec, 2)


def test_stalled_server_is_detected_and_left(server, make_client):
    server.stall = True
    rec = Recorder()
    client = make_client(server.url, rec, idle_timeout=0.3)
    client.subscribe(["trade"])
    client.start()
    connected(rec)
    t0 = time.monotonic()
    stalled = wait_for(lambda: rec.of(WsStalled), 5, message="stall")[0]
    assert stalled.conn_id == 1 and stalled.idle_s >= 0.3
    assert time.monotonic() - t0 < 0.3 + 1.5
    gone = wait_for(lambda: rec.of(WsDisconnected), 5, message="disconnect")[0]
    assert gone.reason == "stalled"
    connected(rec, 2)  # and it tries again


def test_server_pings_are_answered_and_keep_the_socket_alive(server, make_client):
    rec = Recorder()
    client = make_client(server.url, rec, idle_timeout=1.0)
    client.start()
    connected(rec)
    stop = threading.Event()

    def pinger():
        while not stop.wait(0.1):
            try:
                server.ping(b"heartbeat")
            except Exception:
                return

    t = threading.Thread(target=pinger, name="test-pinger")
    t.start()
    try:
        wait_for(lambda: len(server.pongs) >= 15, 10, message="15 pongs")  # > 1.5 s of pings and nothing else
    finally:
        stop.set()
        t.join(5)
    assert set(server.pongs) == {b"heartbeat"}
    assert not rec.of(WsStalled) and not rec.of(WsDisconnected)


def test_401_on_upgrade_backs_off_with_cap(server, make_client):
    server.reject_status = 401
    rec = Recorder()
    client = make_client(server.url, rec, backoff_initial=0.01, backoff_max=0.04)
    client.start()
    events = wait_for(lambda: len(rec.of(WsDisconnected)) >= 6 and rec.of(WsDisconnected), 10, message="six attempts")
    assert all(e.reason == "auth" and e.will_retry for e in events)
    delays = [e.retry_in_s for e in events[:6]]
    bases = [0.01, 0.02, 0.04, 0.04, 0.04, 0.04]  # initial, doubling per failure in a row, capped
    for d, base in zip(delays, bases):
        assert base / 2 - 1e-3 <= d <= base + 1e-3, (delays, bases)
    assert client.stats().auth_failures >= 6
    assert not rec.of(WsConnected)
    server.reject_status = 503
    wait_for(lambda: any(e.reason == "http_503" for e in rec.of(WsDisconnected)), 5, message="http_503")


def test_callback_exceptions_are_contained(server, make_client):
    calls = {"frames": 0, "events": 0}

    class Exploding(Recorder):
        def on_frames(self, conn_id, frames):
            calls["frames"] += 1
            super().on_frames(conn_id, frames)
            raise RuntimeError("actor is gone")

        def on_event(self, event):
            calls["events"] += 1
            super().on_event(event)
            raise RuntimeError("actor is gone")

    rec = Exploding()
    client = make_client(server.url, rec)
    client.start()
    connected(rec)
    server.send(delta(1, 1))
    wait_for(lambda: rec.frames(), 5, message="first frame")
    server.send(delta(1, 2))
    wait_for(lambda: len(rec.frames()) == 2, 5, message="second frame")
    assert client.stats().callback_errors == calls["frames"] + calls["events"] >= 3
    assert len(rec.of(WsConnected)) == 1 and not rec.of(WsDisconnected)


def test_stop_is_prompt_in_every_phase(server, make_client):
    # connected and idle
    rec = Recorder()
    client = make_client(server.url, rec, idle_timeout=30)
    client.start()
    connected(rec)
    t0 = time.monotonic()
    client.stop()
    assert time.monotonic() - t0 < 1.0
    assert rec.of(WsDisconnected)[-1] == WsDisconnected(1, "stopped", False, None)
    client.stop()  # idempotent
    assert not [t for t in threading.enumerate() if t.name == "ws-reader"]
    assert client.subscribe(["trade"]) > 0 and client.stats().commands_dropped == 1

    # backing off for a long time
    server.reject_status = 401
    rec2 = Recorder()
    c2 = make_client(server.url, rec2, backoff_initial=30, backoff_max=60, name="ws2")
    c2.start()
    wait_for(lambda: rec2.of(WsDisconnected), 5, message="refused")
    t0 = time.monotonic()
    c2.stop()
    assert time.monotonic() - t0 < 1.0

    # stuck in a handshake: the peer accepts TCP and never answers
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        rec3 = Recorder()
        c3 = make_client(f"ws://127.0.0.1:{listener.getsockname()[1]}{WS_PATH}", rec3,
                         connect_timeout=30, name="ws3")
        c3.start()
        peer, _ = listener.accept()
        with peer:
            t0 = time.monotonic()
            c3.stop()
            assert time.monotonic() - t0 < 2.0
    for c in (c2, c3):
        assert not c._thread.is_alive()


def test_stop_before_start_and_double_start(make_client):
    rec = Recorder()
    client = make_client("ws://127.0.0.1:9/trade-api/ws/v2", rec)
    client.stop()
    client2 = make_client("ws://127.0.0.1:9/trade-api/ws/v2", rec, name="ws-b")
    client2.start()
    with pytest.raises(RuntimeError):
        client2.start()
    client2.stop()


def test_real_decoder_captures_flow_through(server, make_client, wire_dir):
    real = _real_decoder()
    if real is None:
        pytest.skip("kalshi.wire.frames is not available")
    lines = [ln for ln in (wire_dir / "ws__orderbook_trade_noleg.jsonl").read_text().splitlines() if ln.strip()]
    rec = Recorder()
    client = make_client(server.url, rec, decode=real)
    client.start()
    connected(rec)
    server.send(*[ln + "\n" for ln in lines])
    data_lines = [ln for ln in lines if '"subscribed"' not in ln]
    wait_for(lambda: len(rec.frames()) >= len(data_lines), 5, message="capture frames")
    assert [type(f).__name__ for f in rec.frames()][:2] == ["OrderbookSnapshot", "OrderbookDelta"]
    assert len(rec.of(WsCommandReply)) == len(lines) - len(data_lines)
    assert client.stats().malformed == 0 and not rec.of(WsSequenceIssue)


def test_a_frame_split_across_reads_resumes(server, make_client):
    rec = Recorder()
    client = make_client(server.url, rec, recv_poll_s=0.05)
    client.start()
    connected(rec)
    raw = ws_frame(delta(1, 1).encode()) + ws_frame(delta(1, 2).encode())
    server.write_raw(raw[:1])  # inside the first header
    threading.Event().wait(0.2)  # not a wait for a result: the split must straddle several read timeouts
    server.write_raw(raw[1:60])  # inside the first payload
    threading.Event().wait(0.2)
    server.write_raw(raw[60:])
    wait_for(lambda: len(rec.frames()) == 2, 5, message="both frames")
    assert [seq_of(f) for f in rec.frames()] == [1, 2]
    assert client.stats().malformed == 0 and not rec.of(WsDisconnected)


def test_fragmented_messages_are_joined_and_capped(server, make_client):
    rec = Recorder()
    client = make_client(server.url, rec, max_frame_bytes=1000)
    client.start()
    connected(rec)
    text = delta(1, 1).encode()
    server.write_raw(ws_frame(text[:50], opcode=0x1, fin=False) + ws_frame(b"", opcode=0x9) +  # ping in between
                     ws_frame(text[50:], opcode=0x0, fin=True))
    wait_for(lambda: rec.frames(), 5, message="joined message")
    assert [seq_of(f) for f in rec.frames()] == [1]
    # 600 + 600 bytes: each fragment is under the cap, the message is not
    server.write_raw(ws_frame(b"x" * 600, opcode=0x1, fin=False) + ws_frame(b"y" * 600, opcode=0x0, fin=True))
    gone = wait_for(lambda: rec.of(WsDisconnected), 5, message="disconnect")[0]
    assert gone.reason == "oversize"
    assert client.stats().oversized == 1


def test_protocol_violations_reconnect(server, make_client):
    rec = Recorder()
    client = make_client(server.url, rec)
    client.start()
    connected(rec)
    server.write_raw(ws_frame(b"p" * 200, opcode=0x9))  # a ping may carry at most 125 bytes
    gone = wait_for(lambda: rec.of(WsDisconnected), 5, message="disconnect")[0]
    assert gone.reason == "protocol_error" and gone.will_retry
    connected(rec, 2)
    wait_for(lambda: server.connections >= 2, 5, message="second connection at the server")
    server.write_raw(ws_frame(b"z", opcode=0x0))  # a continuation with nothing to continue
    wait_for(lambda: len(rec.of(WsDisconnected)) == 2, 5, message="second disconnect")
    assert rec.of(WsDisconnected)[1].reason == "protocol_error"
    assert client.stats().malformed == 2


def _self_signed() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def test_wss_with_a_trusted_certificate_and_refusal_of_an_untrusted_one(tmp_path, make_client):
    cert_pem, key_pem = _self_signed()
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    srv = FakeWsServer(ssl_context=server_ctx)
    url = srv.start()
    try:
        assert url.startswith("wss://")
        rec = Recorder()
        client = make_client(url, rec, ssl_context=ssl.create_default_context(cadata=cert_pem.decode()))
        client.subscribe(["orderbook_delta"], [TICKER])
        client.start()
        subscribed(rec, 1)
        srv.send_burst(*[delta(1, seq) for seq in range(1, 2001)])
        wait_for(lambda: len(rec.frames()) >= 2000, 10, message="2000 frames over TLS")
        assert [seq_of(f) for f in rec.frames()] == list(range(1, 2001))
        assert len(rec.batches) < 200

        untrusting = Recorder()
        c2 = make_client(url, untrusting, name="ws-untrusting")  # default trust store: self-signed refused
        c2.start()
        gone = wait_for(lambda: untrusting.of(WsDisconnected), 5, message="refused")[0]
        assert gone.reason == "tls_error" and not untrusting.of(WsConnected)
    finally:
        srv.stop()


def test_sid_given_during_reconnect_attempts_means_the_last_live_connection(server, make_client):
    rec = Recorder()
    client = make_client(server.url, rec, idle_timeout=5)
    h_keep = client.subscribe(["trade"])
    client.subscribe(["fill"])
    client.start()
    first = subscribed(rec, 2)
    fill_sid = next(e.sid for e in first if e.channel == "fill")
    server.reject_status = 401
    server.drop_all()
    wait_for(lambda: len(rec.of(WsDisconnected)) >= 3, 5, message="failed attempts after the drop")
    client.unsubscribe([fill_sid])  # no conn_id: the sid is from connection 1, the last one that was up
    wait_for(lambda: client.stats().subscriptions == 1, 5, message="fill removed")
    server.reject_status = None
    again = wait_for(lambda: [e for e in rec.of(WsSubscribed) if e.conn_id > 1], 5, message="resubscribed")
    assert [e.handle for e in again] == [h_keep]
    conn = again[0].conn_id
    assert [c["params"]["channels"] for c in server.cmds(conn=2, name="subscribe")] == [["trade"]]
    assert conn > 3


def _open_fds() -> int:
    import os

    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/fd"), reason="needs /proc")
def test_reconnect_churn_leaks_no_file_descriptors(server, make_client):
    rec = Recorder()
    client = make_client(server.url, rec, backoff_initial=0.005, backoff_max=0.02)
    client.subscribe(["trade"])
    before = _open_fds()
    client.start()
    for n in range(1, 11):
        subscribed(rec, n)
        wait_for(lambda: server.connections >= n, 5, message="server side up")
        server.drop_all()
    subscribed(rec, 11)
    client.stop()
    wait_for(lambda: not server._live, 5, message="server side closed")
    delays = [e.retry_in_s for e in rec.of(WsDisconnected) if e.will_retry]
    assert len(delays) == 10 and max(delays) <= 0.02
    assert _open_fds() <= before


# ------------------------------------------------- the private frame reader kalshi.ws extends


def test_websocket_client_self_check_passes_on_the_installed_version():
    import kalshi.ws as ws_module

    assert ws_module._websocket_client_problem() is None


def _breaks_resume(original):
    # A plausible upstream change: forget the parsed header when a read times out mid-frame.
    def recv_frame(self):
        try:
            return original(self)
        except Exception:
            self.clear()
            raise

    return recv_frame


def _reads_header_directly(self):
    # A plausible upstream change: the header read bypasses recv_strict (and so the read-ahead).
    data = self.recv(2)
    self.header = (1, 0, 0, 0, data[0] & 0x0F, 0, data[1] & 0x7F) if len(data) == 2 else None


@pytest.mark.parametrize("change", ["resume", "header", "attribute", "trace"])
def test_websocket_client_changes_fail_loudly_at_import(monkeypatch, change):
    import websocket
    from websocket._abnf import frame_buffer

    import kalshi.ws as ws_module

    if change == "resume":
        monkeypatch.setattr(frame_buffer, "recv_frame", _breaks_resume(frame_buffer.recv_frame))
    elif change == "header":
        monkeypatch.setattr(frame_buffer, "recv_header", _reads_header_directly)
    elif change == "attribute":
        monkeypatch.setattr(websocket.WebSocket, "recv_frame", lambda self: self._frames.recv_frame())
    else:
        monkeypatch.delattr(websocket._logging, "isEnabledForTrace")
    assert ws_module._websocket_client_problem()
    with pytest.raises(ImportError, match=r"websocket-client.*Pin websocket-client==1\.9"):
        ws_module._check_websocket_client()
