"""Transport of the local Kalshi-compatible exchange: aiohttp REST + WebSocket on one port.

The engine (engine.py) holds every Kalshi semantic and knows nothing of I/O; this module puts it
on the network exactly the way Kalshi does:

- REST under ``/trade-api/v2``: RSA-PSS auth on private routes (and on public ones when auth headers
  are sent), Kalshi's 401 bodies, token-bucket rate limits (ratelimit.py), a ``Date`` header from the
  exchange clock on every answer, engine errors in the engine's error shape.
- WebSocket at ``/trade-api/ws/v2`` (auth on the upgrade): subscribe / unsubscribe /
  update_subscription / list_subscriptions with Kalshi's replies and error codes, per-sid ``seq``
  on seq'd channels, snapshot-then-deltas, ``use_yes_price``, private channels per user, a server
  Ping with payload ``heartbeat``, and a bounded outbound queue per connection: a client that does
  not keep up gets error 25 and loses that subscription (terminal), as on Kalshi.
- Optional limits Kalshi has but does not publish: markets per subscription (error 26, the command
  changes nothing) and commands per second per connection (error 27, the command is not run).
- Each event is serialized once; a subscriber's frame only wraps those bytes with its sid/seq.
- The engine runs on the event-loop thread: a task advances its clock every ~20 ms, listeners fan
  out synchronously, so the engine needs no locks.
- Faults (faults.py) and the loopback-only ``/_control`` endpoint; a state file saved atomically.

``LocalExchange`` runs all of it on its own event loop in a thread, for tests and the CLI.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import email.utils
import json
import logging
import os
import re
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable

import msgspec
from aiohttp import WSMsgType, web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from kalshi.exchange.faults import (
    ERROR_2XX_BODY,
    LOOP_CURSOR,
    FaultInjector,
    ThreadSafeFaults,
    control_route,
    control_routes,
    only,
)
from kalshi.exchange.ratelimit import TIERS, TOO_MANY_REQUESTS_BODY, RateLimiter, TokenBucket
from kalshi.units import PRICE_ONE, format_price, parse_price, safe_repr

__all__ = [
    "LocalExchange",
    "ExchangeServer",
    "user_id_for_key",
    "REST_PREFIX",
    "WS_PATH",
    "CHANNELS",
    "SEQ_CHANNELS",
    "PRIVATE_CHANNELS",
]

log = logging.getLogger("kalshi.exchange")

REST_PREFIX = "/trade-api/v2"
WS_PATH = "/trade-api/ws/v2"

SEQ_CHANNELS = frozenset({"orderbook_delta", "trade", "market_lifecycle_v2", "order_group_updates"})
PRIVATE_CHANNELS = frozenset({"fill", "market_positions", "user_orders", "order_group_updates"})
TICKER_CHANNELS = frozenset({"orderbook_delta", "ticker", "trade", "fill", "market_positions", "user_orders"})
CHANNELS = SEQ_CHANNELS | PRIVATE_CHANNELS | TICKER_CHANNELS
TICKER_RE = re.compile(r"^[A-Z0-9-]{1,200}$")

STATE_FORMAT = "kalshi-local-exchange"
STATE_VERSION = 1
MAX_BODY = 1 << 20
MAX_WS_COMMAND = 1 << 16
OVERSIZED_FRAME = 2 * 1024 * 1024
REPLY_SLACK = 1_000  # replies and control items a connection may queue beyond its data bound

WS_ERRORS = {
    1: "Unable to process message",
    2: "Params required",
    3: "Channels required",
    4: "Subscription IDs required",
    5: "Unknown command",
    7: "Unknown subscription ID",
    8: "Unknown channel name",
    11: "Invalid parameter",
    12: "Exactly one subscription ID is required",
    13: "Unsupported action",
    14: "Market Ticker required",
    15: "Action required",
    25: "Subscription buffer overflow",
    26: "Subscription market limit exceeded",
    27: "Too many requests",
}

_USER_NS = uuid.UUID("6f1c2a4e-0b7d-4f35-9d41-6a1e5c3b2f80")


def user_id_for_key(key_id: str) -> str:
    """The local user id of an API key: a stable UUID derived from the key id (which it does not reveal)."""
    return str(uuid.uuid5(_USER_NS, key_id))


def _mask(key_id: str) -> str:
    return (key_id[:4] + "…") if len(key_id) > 4 else "…"


def _auth_error(code: str, message: str, details: str | None = None) -> dict:
    err: dict[str, str] = {"code": code, "message": message}
    if details is not None:
        err["details"] = details
    return {"error": err}


# Kalshi's 401 bodies (protocol §1.4)
AUTH_MISSING = _auth_error("signature_is_missing_from_headers", "signature is missing from headers")
AUTH_EXPIRED = _auth_error("header_timestamp_expired", "header timestamp expired")
AUTH_BAD_SIGNATURE = _auth_error("authentication_error", "authentication_error", "INCORRECT_API_KEY_SIGNATURE")
AUTH_UNKNOWN_KEY = _auth_error("authentication_error", "authentication_error", "NOT_FOUND")
INTERNAL_ERROR = {"error": {"code": "internal_server_error", "message": "internal server error", "service": "exchange"}}
UNAVAILABLE = {"error": {"code": "service_unavailable", "message": "service unavailable", "service": "exchange"}}
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)

# The server verifies with its own few lines of `cryptography` rather than kalshi/auth.py on purpose:
# a bug shared by the client's signer and the server's verifier would otherwise pass every test.


def load_public_key(pem: bytes | str) -> rsa.RSAPublicKey:
    """An RSA public key from PEM (SubjectPublicKeyInfo or PKCS#1); a clear ValueError otherwise."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ValueError("API public key is not a PEM public key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("API public key must be an RSA key")
    return key


def _verify(key: rsa.RSAPublicKey, text: str, signature_b64: str) -> bool:
    try:
        sig = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        key.verify(sig, text.encode("utf-8"), _PSS, hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _dumps(obj: Any) -> bytes:
    return msgspec.json.encode(obj)


class _Sub:
    """One WS subscription: a channel on a connection, with its sid, ticker filter and seq counter."""

    __slots__ = ("conn", "sid", "channel", "tickers", "seqd", "seq", "private", "yes", "fault", "held", "alive")

    def __init__(self, conn: "_Conn", sid: int, channel: str, tickers: set[str] | None, yes: bool) -> None:
        self.conn = conn
        self.sid = sid
        self.channel = channel
        self.tickers = tickers  # None = every market
        self.seqd = channel in SEQ_CHANNELS
        self.seq = 0
        self.private = channel in PRIVATE_CHANNELS
        self.yes = yes
        self.fault: str | None = None  # armed seq fault: skip / duplicate / reorder / release
        self.held: Any = None  # a frame held back by "reorder"
        self.alive = True


_PING = ("ping",)


class _Conn:
    """One WebSocket client: its subscriptions and a bounded outbound queue drained by a writer task."""

    def __init__(self, hub: "ExchangeServer", ws: web.WebSocketResponse, transport: Any, user: str, limit: int,
                 commands: TokenBucket | None = None) -> None:
        self.hub = hub
        self.commands = commands  # error 27 budget (None: unlimited)
        self.ws = ws
        self.transport = transport
        self.user = user
        self.limit = limit
        self.q: deque[Any] = deque()
        self.wake = asyncio.Event()
        self.subs: dict[int, _Sub] = {}
        self.by_channel: dict[str, _Sub] = {}
        self.next_sid = 1
        self.closed = False
        self.snaps_until_drop: int | None = None
        self.sent = 0

    def push(self, item: Any) -> bool:
        """Queue a data frame; False when the queue is full (the caller ends the subscription)."""
        if len(self.q) >= self.limit:
            return False
        self.q.append(item)
        if not self.wake.is_set():
            self.wake.set()
        return True

    def force(self, item: Any) -> None:
        """Queue a control item or a reply past the data bound (they are few and small). A client that
        keeps sending commands without reading the answers is dropped instead of growing the queue."""
        if len(self.q) >= self.limit + REPLY_SLACK:
            if not self.closed:
                self.hub.stats["ws_slow_dropped"] += 1
                log.info("dropping a websocket client that does not read its replies")
                self.abort()
            return
        self.q.append(item)
        if not self.wake.is_set():
            self.wake.set()

    def reply(self, obj: dict) -> None:
        self.force(_dumps(obj))

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (what a network failure looks like)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self.wake.set()

    async def run_writer(self) -> None:
        ws, q, hub = self.ws, self.q, self.hub
        text = WSMsgType.TEXT
        try:
            while not self.closed:
                await self.wake.wait()
                self.wake.clear()
                burst = 0
                while q and not hub.stalled and not self.closed:
                    item = q.popleft()
                    if type(item) is bytes:
                        await ws.send_frame(item, text)
                    else:
                        await self._special(item)
                    self.sent += 1
                    burst += 1
                    if burst >= 256:  # let the engine and other sockets run during a long drain
                        burst = 0
                        await asyncio.sleep(0)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("websocket writer ended: %s", type(exc).__name__)
            self.closed = True
        except asyncio.CancelledError:
            self.closed = True
            raise

    async def _special(self, item: tuple) -> None:
        kind = item[0]
        if kind == "snap":
            await self.ws.send_frame(item[1], WSMsgType.TEXT)
            if self.snaps_until_drop is not None:
                self.snaps_until_drop -= 1
                if self.snaps_until_drop <= 0:
                    self.hub.mid_snapshot_drop(self)
        elif kind == "ping":
            await self.ws.ping(b"heartbeat")
        elif kind == "pong":
            await self.ws.pong(item[1])
        elif kind == "raw":
            await self.ws.send_frame(item[2], item[1])


class ExchangeServer:
    """The aiohttp application around one engine. Everything here runs on the event-loop thread."""

    def __init__(
        self,
        engine: Any,
        *,
        api_keys: dict[str, str | bytes] | None = None,
        rate_limits: bool = True,
        tier: str = "basic",
        clock_skew_ms: int = 0,
        timestamp_window_ms: int | tuple[int, int] = 10_000,
        ping_interval_s: float = 10.0,
        advance_interval_s: float = 0.02,
        ws_queue_limit: int = 20_000,
        state_file: str | os.PathLike | None = None,
        state_save_interval_s: float = 2.0,
        faults: FaultInjector | None = None,
        ws_max_markets_per_sub: int | None = None,
        ws_commands_per_s: float | None = None,
    ) -> None:
        if ws_max_markets_per_sub is not None and (type(ws_max_markets_per_sub) is not int or ws_max_markets_per_sub < 1):
            raise ValueError("ws_max_markets_per_sub must be a positive integer or None")
        if ws_commands_per_s is not None and (isinstance(ws_commands_per_s, bool) or not ws_commands_per_s > 0):
            raise ValueError("ws_commands_per_s must be a positive number or None")
        self.engine = engine
        self.limiter = RateLimiter(tier, enabled=rate_limits)
        self.faults = faults or FaultInjector()
        self.faults.attach(self)
        self.base_skew_ms = int(clock_skew_ms)
        # (accept, reject) in the brief: anything beyond the accept window is refused
        self.window_ms = int(timestamp_window_ms[0] if isinstance(timestamp_window_ms, tuple) else timestamp_window_ms)
        self.ping_interval_s = ping_interval_s
        self.advance_interval_s = advance_interval_s
        self.ws_queue_limit = ws_queue_limit
        self.ws_max_markets = ws_max_markets_per_sub
        self.ws_commands_per_s = ws_commands_per_s
        self.state_file = Path(state_file) if state_file is not None else None
        self.state_save_interval_s = state_save_interval_s
        self._keys: dict[str, tuple[rsa.RSAPublicKey, str]] = {}
        for key_id, pem in (api_keys or {}).items():
            self.add_api_key(key_id, pem)
        self.conns: set[_Conn] = set()
        self._index: dict[str, set[_Sub]] = {c: set() for c in CHANNELS}
        self._type_bytes: dict[str, bytes] = {}
        self.stalled = False
        self._duplicates: dict[str, int] = {}  # channel → events still to send twice
        self._drop_after: int | None = None
        self._dirty = False
        self._last_save = time.monotonic()
        self._save_cost = 0.0  # seconds the last save took
        self._write_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task] = []
        self.stats = {"rest": 0, "ws_connections": 0, "engine_errors": 0, "overflows": 0, "state_saves": 0,
                      "ws_throttled": 0, "ws_market_limit": 0, "ws_slow_dropped": 0}
        engine.add_listener(self.on_event)
        self.app = self._build_app()

    # ---- clock and keys -----------------------------------------------------------------------
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.base_skew_ms + self.faults.clock_skew_ms

    def add_api_key(self, key_id: str, public_pem: str | bytes) -> str:
        """Register an API key; returns its user id (and opens the account)."""
        if not isinstance(key_id, str) or not key_id or len(key_id) > 200:
            raise ValueError("API key id must be a non-empty string")
        user = user_id_for_key(key_id)
        self._keys[key_id] = (load_public_key(public_pem), user)
        self.engine.ensure_account(user)
        return user

    def authenticate(self, headers: Any, method: str, raw_path: str) -> tuple[str | None, dict | None]:
        """(user, None) when the headers verify, (None, None) when there are none, (None, 401 body) otherwise."""
        key_id = headers.get("KALSHI-ACCESS-KEY")
        ts = headers.get("KALSHI-ACCESS-TIMESTAMP")
        sig = headers.get("KALSHI-ACCESS-SIGNATURE")
        if key_id is None and ts is None and sig is None:
            return None, None
        if not key_id or not ts or not sig:
            return None, AUTH_MISSING
        entry = self._keys.get(key_id)
        if entry is None:
            return None, AUTH_UNKNOWN_KEY
        if not ts.isascii() or not ts.isdigit() or len(ts) > 16 or abs(int(ts) - self.now_ms()) > self.window_ms:
            return None, AUTH_EXPIRED
        path = raw_path.split("?", 1)[0]
        if not _verify(entry[0], ts + method + path, sig):
            log.info("bad signature for key %s on %s %s", _mask(key_id), method, safe_repr(path, 100))
            return None, AUTH_BAD_SIGNATURE
        return entry[1], None

    # ---- aiohttp app ----------------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.add_routes(control_routes(self.faults))
        app.add_routes([control_route("POST", "/_control/flow", lambda p: self.set_flow(only(p, "flow").get("flow")))])
        app.router.add_get(WS_PATH, self.ws_handler)
        app.router.add_route("*", REST_PREFIX + "/{tail:.*}", self.rest_handler)
        app.on_response_prepare.append(self._date_header)
        return app

    async def _date_header(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Date"] = email.utils.formatdate(self.now_ms() / 1000, usegmt=True)

    @staticmethod
    def _json(status: int, body: Any) -> web.Response:
        if body is None:
            return web.Response(status=status)
        return web.Response(status=status, body=_dumps(body), content_type="application/json")

    async def start_background(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._drive(), name="exchange-drive"),
            loop.create_task(self._pinger(), name="exchange-ping"),
        ]
        if self.state_file is not None:
            self._tasks.append(loop.create_task(self._saver(), name="exchange-save"))

    async def shutdown(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
        self._tasks = []
        for conn in list(self.conns):
            conn.closed = True
            conn.wake.set()
            try:
                await asyncio.wait_for(conn.ws.close(code=1001, message=b"exchange stopping"), 2.0)
            except (asyncio.TimeoutError, ConnectionError, RuntimeError):
                conn.abort()
        try:
            self.save_state()
        finally:
            if self._write_pool is not None:
                self._write_pool.shutdown(wait=True)
                self._write_pool = None

    def set_flow(self, flow: Any) -> dict:
        """Pause / resume / retune the engine's synthetic flow ("off" / "calm" / "firehose" or a FlowConfig)."""
        if flow is None:
            raise ValueError("flow is required: 'off', 'calm' or 'firehose'")
        set_flow = getattr(self.engine, "set_flow", None)
        if set_flow is None:
            raise RuntimeError("this engine has no synthetic flow")
        set_flow(resolve_flow(flow))
        self._dirty = True
        return {"flow": flow if isinstance(flow, str) else "custom"}

    # ---- engine clock, pings, state -------------------------------------------------------------
    async def _drive(self) -> None:
        while True:
            await asyncio.sleep(self.advance_interval_s)
            try:
                self.engine.advance(self.now_ms())
            except Exception:
                self.stats["engine_errors"] += 1
                if self.stats["engine_errors"] <= 5 or self.stats["engine_errors"] % 1000 == 0:
                    log.exception("engine.advance failed (%d so far)", self.stats["engine_errors"])

    async def _pinger(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval_s)
            for conn in self.conns:
                conn.force(_PING)

    async def _saver(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.05)
            if self.save_due(time.monotonic()):
                try:
                    started = time.monotonic()
                    data = self._state_bytes()
                    # the file write and fsync run on the writer thread (they release the GIL)
                    await loop.run_in_executor(self._writer(), write_atomic, self.state_file, data)
                    self._saved(started)
                except Exception:
                    log.exception("could not write the state file")
                    self._last_save = time.monotonic()

    def save_due(self, now: float) -> bool:
        """Soon after a REST write (so a kill loses little) and periodically (flow, clocks); but saving
        takes at most ~10% of the loop's time: a firehose state is megabytes (~60 ms to build here)."""
        since = now - self._last_save
        gap = max(0.1, 10 * self._save_cost)
        return (self._dirty and since >= gap) or since >= max(self.state_save_interval_s, gap)

    def _state_bytes(self) -> bytes:
        state = {"format": STATE_FORMAT, "version": STATE_VERSION, "saved_at_ms": self.now_ms(),
                 "engine": self.engine.to_state()}
        self._dirty = False  # a write from here on makes it dirty again
        return _dumps(state)  # msgspec: ~4x faster than json on a big state

    def _writer(self) -> concurrent.futures.ThreadPoolExecutor:
        """One writer thread, so saves land in the order they were taken."""
        if self._write_pool is None:
            self._write_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="exchange-state")
        return self._write_pool

    def _saved(self, started: float) -> None:
        self._last_save = time.monotonic()
        self._save_cost = self._last_save - started
        self.stats["state_saves"] += 1

    def save_state(self) -> bool:
        """Write engine state now, atomically (temp file + fsync + os.replace, mode 0600); returns when written."""
        if self.state_file is None:
            return False
        started = time.monotonic()
        data = self._state_bytes()
        if self._write_pool is not None:  # behind any write in flight, never before it
            self._write_pool.submit(write_atomic, self.state_file, data).result()
        else:
            write_atomic(self.state_file, data)
        self._saved(started)
        return True

    # ---- REST -------------------------------------------------------------------------------------
    async def rest_handler(self, request: web.Request) -> web.StreamResponse:
        self.stats["rest"] += 1
        method = request.method
        path = "/" + request.match_info["tail"]
        faults = self.faults
        if faults.slow_ms:
            faults.note_slow()
            await asyncio.sleep(faults.slow_ms / 1000)
        status = faults.take_rest_failure(method, path)
        if status is not None:  # the call is NOT executed
            return self._json(status, UNAVAILABLE if status == 503 else INTERNAL_ERROR)
        if faults.flooding(method):
            return self._json(429, TOO_MANY_REQUESTS_BODY)

        engine = self.engine
        try:
            private = path == "/account/limits" or engine.is_private(method, path)
        except Exception:
            log.exception("engine.is_private failed on %s %s", method, safe_repr(path, 100))
            return self._json(500, INTERNAL_ERROR)
        user, auth_error = self.authenticate(request.headers, method, request.raw_path)
        if auth_error is not None or (private and user is None):
            return self._json(401, auth_error or AUTH_MISSING)

        body: Any = None
        body_error: dict | None = None
        if request.can_read_body:
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return self._json(413, {"code": "bad_request", "message": "bad request", "details": "body too large"})
            if raw.strip():
                try:
                    body = json.loads(raw, parse_constant=_reject_constant)
                except (ValueError, RecursionError) as exc:
                    body_error = {"code": "bad_request", "message": "bad request", "details": str(exc)[:200]}

        try:
            bucket, cost = engine.request_cost(method, path, body)
        except Exception:  # price it like Kalshi's default rather than fail the call
            log.exception("engine.request_cost failed on %s %s", method, safe_repr(path, 100))
            bucket, cost = ("read" if method == "GET" else "write"), 10
        who = user if user is not None else "anon:" + str(request.remote)
        if not self.limiter.allow(who, bucket, cost, time.monotonic()):
            return self._json(429, TOO_MANY_REQUESTS_BODY)
        if body_error is not None:
            return self._json(400, body_error)

        if path == "/account/limits" and method == "GET":
            status, out = 200, self.limiter.limits_body()
        else:
            query = {k: request.query.getall(k) for k in request.query.keys()}
            error_2xx = faults.take_error_2xx(method, path)
            if error_2xx is not None and not error_2xx.execute:  # F20 without running the call
                return self._json(error_2xx.status, ERROR_2XX_BODY)
            lost = faults.take_lost_response(method, path)
            try:
                status, out = engine.handle(method, path, query, body, user, self.now_ms())
            except Exception as exc:
                if hasattr(exc, "status") and hasattr(exc, "body"):  # the engine's ExchangeError
                    status, out = exc.status, exc.body()
                else:
                    log.exception("engine.handle failed on %s %s", method, safe_repr(path, 100))
                    status, out = 500, INTERNAL_ERROR
            if method != "GET" and status < 400:
                self._dirty = True
            if error_2xx is not None:  # F20 after running it: the effect happened, the answer hides it
                status, out = error_2xx.status, ERROR_2XX_BODY
            elif (status == 200 and type(out) is dict and "cursor" in out
                    and faults.take_pagination_loop(method, path)):  # F21
                out = {**out, "cursor": LOOP_CURSOR}
            if lost is not None:
                if lost.mode == "drop":
                    if request.transport is not None:
                        request.transport.abort()
                    raise asyncio.CancelledError  # aiohttp drops the handler silently; nothing is sent
                await asyncio.sleep(lost.delay_ms / 1000)

        trickle = faults.take_trickle(method, path)
        if trickle is not None and out is not None:
            return await self._trickle(request, status, _dumps(out), trickle.chunk_bytes, trickle.interval_ms)
        return self._json(status, out)

    async def _trickle(self, request: web.Request, status: int, data: bytes, chunk: int, interval_ms: int) -> web.StreamResponse:
        resp = web.StreamResponse(status=status)
        resp.content_type = "application/json"
        resp.content_length = len(data)
        await resp.prepare(request)
        for i in range(0, len(data), chunk):
            await resp.write(data[i : i + chunk])
            await asyncio.sleep(interval_ms / 1000)
        await resp.write_eof()
        return resp

    # ---- WebSocket ------------------------------------------------------------------------------
    async def ws_handler(self, request: web.Request) -> web.StreamResponse:
        user, auth_error = self.authenticate(request.headers, "GET", request.raw_path)
        if auth_error is not None or user is None:
            return self._json(401, auth_error or AUTH_MISSING)
        # autoping off: a client's Ping is answered through the queue, so a stalled socket stays silent
        ws = web.WebSocketResponse(autoping=False, max_msg_size=MAX_WS_COMMAND, compress=False)
        await ws.prepare(request)
        rate = self.ws_commands_per_s
        # a burst of one second of commands (at least one), then ``rate`` per second
        bucket = TokenBucket(rate, max(rate, 1.0), time.monotonic()) if rate is not None else None
        conn = _Conn(self, ws, request.transport, user, self.ws_queue_limit, bucket)
        if self._drop_after is not None:
            conn.snaps_until_drop = self._drop_after
        self.conns.add(conn)
        self.stats["ws_connections"] += 1
        writer = asyncio.get_running_loop().create_task(conn.run_writer(), name="exchange-ws-writer")
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self.handle_command(conn, msg.data)
                elif msg.type == WSMsgType.PING:
                    conn.force(("pong", msg.data))
                elif msg.type == WSMsgType.BINARY:
                    self._error(conn, None, 1)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            conn.closed = True
            self.conns.discard(conn)
            for sub in list(conn.subs.values()):
                self._remove_sub(sub)
            writer.cancel()
            try:
                await writer
            except (asyncio.CancelledError, ConnectionError, RuntimeError):
                pass
        return ws

    # replies ----------------------------------------------------------------------------------------
    @staticmethod
    def _with_id(cid: int | None, obj: dict) -> dict:
        return obj if cid is None else {"id": cid, **obj}

    def _error(self, conn: _Conn, cid: int | None, code: int, detail: str | None = None, sid: int | None = None) -> None:
        text = WS_ERRORS[code] if detail is None else f"{WS_ERRORS[code]}: {detail}"
        obj: dict = {"type": "error"}
        if sid is not None:
            obj["sid"] = sid
        obj["msg"] = {"code": code, "msg": text}
        conn.reply(self._with_id(cid, obj))

    # commands ---------------------------------------------------------------------------------------
    def handle_command(self, conn: _Conn, text: str) -> None:
        try:
            cmd = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            cmd = None
        cid = cmd.get("id") if isinstance(cmd, dict) else None
        bad_id = cid is not None and (type(cid) is not int or cid < 0 or cid >= 2**63)
        if conn.commands is not None and not conn.commands.try_take(1, time.monotonic()):
            # every text frame counts, garbage too; the reply is bounded like data so a client that
            # floods commands and never reads cannot grow the queue without limit
            self.stats["ws_throttled"] += 1
            conn.push(_dumps(self._with_id(None if bad_id else cid, {"type": "error", "msg": {"code": 27, "msg": WS_ERRORS[27]}})))
            return
        if not isinstance(cmd, dict):
            self._error(conn, None, 1)
            return
        if bad_id:
            self._error(conn, None, 1, "id must be a non-negative integer")
            return
        name = cmd.get("cmd")
        handler = {
            "subscribe": self._cmd_subscribe,
            "unsubscribe": self._cmd_unsubscribe,
            "update_subscription": self._cmd_update,
            "list_subscriptions": self._cmd_list,
        }.get(name) if isinstance(name, str) else None
        if handler is None:
            self._error(conn, cid, 5)
            return
        params = cmd.get("params")
        if params is not None and not isinstance(params, dict):
            self._error(conn, cid, 1, "params must be an object")
            return
        try:
            handler(conn, cid, params)
        except Exception:  # a bug here must not kill the socket
            log.exception("websocket command %s failed", name)
            self._error(conn, cid, 1)

    def _tickers(self, conn: _Conn, cid: int | None, params: dict) -> tuple[bool, list[str] | None]:
        """Parse market_ticker / market_tickers: (ok, tickers or None when absent)."""
        one, many = params.get("market_ticker"), params.get("market_tickers")
        if one is not None and many is not None:
            self._error(conn, cid, 11, "market_ticker and market_tickers are exclusive")
            return False, None
        if one is not None:
            many = [one]
        if many is None:
            return True, None
        if not isinstance(many, list) or not all(isinstance(t, str) and TICKER_RE.match(t) for t in many):
            self._error(conn, cid, 11, "market_tickers must be a list of tickers")
            return False, None
        unknown = [t for t in many if not self.engine.market_exists(t)]
        if unknown:
            self._error(conn, cid, 11, "unknown market ticker " + ",".join(unknown[:5]))
            return False, None
        return True, list(dict.fromkeys(many))

    def _cmd_subscribe(self, conn: _Conn, cid: int | None, params: dict | None) -> None:
        if params is None:
            self._error(conn, cid, 2)
            return
        channels = params.get("channels")
        if channels is None or channels == []:
            self._error(conn, cid, 3)
            return
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            self._error(conn, cid, 1, "channels must be a list of names")
            return
        for c in channels:
            if c not in CHANNELS:
                self._error(conn, cid, 8)
                return
        flags = {}
        for flag in ("use_yes_price", "send_initial_snapshot", "skip_ticker_ack"):
            v = params.get(flag, False)
            if not isinstance(v, bool):
                self._error(conn, cid, 11, f"{flag} must be a boolean")
                return
            flags[flag] = v
        ok, tickers = self._tickers(conn, cid, params)
        if not ok:
            return
        if "orderbook_delta" in channels and not tickers:
            self._error(conn, cid, 14)
            return
        if tickers is not None and self.ws_max_markets is not None:
            for ch in channels:
                sub = conn.by_channel.get(ch)
                if ch in TICKER_CHANNELS and not self._fits(sub.tickers if sub is not None else set(), tickers):
                    self._error(conn, cid, 26, sid=sub.sid if sub is not None else None)
                    return
        snapshots: list[tuple[_Sub, list[str]]] = []
        for ch in dict.fromkeys(channels):
            wanted = tickers if ch in TICKER_CHANNELS else None
            sub = conn.by_channel.get(ch)
            if sub is None:
                sub = _Sub(conn, conn.next_sid, ch, set(wanted) if wanted is not None else None, flags["use_yes_price"])
                conn.next_sid += 1
                conn.subs[sub.sid] = sub
                conn.by_channel[ch] = sub
                self._index[ch].add(sub)
                new = wanted or []
            else:  # idempotent re-subscribe: merge the tickers into the existing subscription
                if sub.tickers is None or wanted is None:
                    new = [] if sub.tickers is None else [t for t in (wanted or []) if t not in sub.tickers]
                    if ch in TICKER_CHANNELS and wanted is None:
                        sub.tickers = None
                else:
                    new = [t for t in wanted if t not in sub.tickers]
                    sub.tickers.update(new)
            if not (ch == "ticker" and flags["skip_ticker_ack"]):
                conn.reply(self._with_id(cid, {"type": "subscribed", "msg": {"channel": ch, "sid": sub.sid}}))
            if ch == "orderbook_delta":
                snapshots.append((sub, new))
            elif ch == "ticker" and flags["send_initial_snapshot"]:
                snapshots.append((sub, new))
        for sub, new in snapshots:
            self._send_snapshots(sub, new, None)

    def _send_snapshots(self, sub: _Sub, tickers: Iterable[str], cid: int | None) -> None:
        engine = self.engine
        for t in tickers:
            if not sub.alive:
                return
            if sub.channel == "orderbook_delta":
                body = _dumps(engine.orderbook_snapshot_msg(t, use_yes_price=sub.yes))
                self._deliver(sub, b"orderbook_snapshot", body, snap=True, cid=cid)
            else:
                self._deliver(sub, b"ticker", _dumps(engine.ticker_msg(t)))

    def _sids(self, conn: _Conn, cid: int | None, params: dict | None, exactly_one: bool) -> list[_Sub] | None:
        if params is None:
            self._error(conn, cid, 2)
            return None
        sids = params.get("sids")
        if sids is None and "sid" in params:
            sids = [params["sid"]]
        if exactly_one and (not isinstance(sids, list) or len(sids) != 1):
            self._error(conn, cid, 12)
            return None
        if not sids:
            self._error(conn, cid, 4)
            return None
        if not isinstance(sids, list) or not all(type(s) is int for s in sids):
            self._error(conn, cid, 11, "sids must be integers")
            return None
        subs = []
        for s in sids:
            sub = conn.subs.get(s)
            if sub is None:
                self._error(conn, cid, 7, sid=s)
                return None
            subs.append(sub)
        return subs

    def _cmd_unsubscribe(self, conn: _Conn, cid: int | None, params: dict | None) -> None:
        subs = self._sids(conn, cid, params, exactly_one=False)
        if subs is None:
            return
        for sub in subs:
            self._remove_sub(sub)
            obj: dict = {"sid": sub.sid}
            if sub.seqd:
                obj["seq"] = sub.seq
            obj["type"] = "unsubscribed"
            conn.reply(self._with_id(cid, obj))

    def _cmd_update(self, conn: _Conn, cid: int | None, params: dict | None) -> None:
        subs = self._sids(conn, cid, params, exactly_one=True)
        if subs is None:
            return
        sub = subs[0]
        action = params.get("action")  # type: ignore[union-attr]
        if action is None:
            self._error(conn, cid, 15, sid=sub.sid)
            return
        if action not in ("add_markets", "delete_markets", "get_snapshot") or sub.channel not in TICKER_CHANNELS \
                or (action == "get_snapshot" and sub.channel != "orderbook_delta"):
            self._error(conn, cid, 13, sid=sub.sid)
            return
        ok, tickers = self._tickers(conn, cid, params)  # type: ignore[arg-type]
        if not ok:
            return
        if not tickers:
            self._error(conn, cid, 14, sid=sub.sid)
            return
        if action == "get_snapshot":
            wanted = [t for t in tickers if sub.tickers is None or t in sub.tickers]
            self._send_snapshots(sub, wanted, cid)
            return
        new: list[str] = []
        if action == "add_markets" and sub.tickers is not None and not self._fits(sub.tickers, tickers):
            self._error(conn, cid, 26, sid=sub.sid)
            return
        if action == "add_markets":
            if sub.tickers is not None:
                new = [t for t in tickers if t not in sub.tickers]
                sub.tickers.update(new)
        elif sub.tickers is not None:
            sub.tickers.difference_update(tickers)
        obj: dict = {"sid": sub.sid}
        if sub.seqd:
            obj["seq"] = sub.seq
        obj["type"] = "ok"
        obj["msg"] = {"market_tickers": sorted(sub.tickers) if sub.tickers is not None else []}
        conn.reply(self._with_id(cid, obj))
        if sub.channel == "orderbook_delta" and new:
            self._send_snapshots(sub, new, None)

    def _fits(self, current: set[str] | None, adding: list[str]) -> bool:
        """Whether a subscription holding ``current`` markets may add ``adding`` (error 26 otherwise);
        a subscription to every market (None) has no list to grow."""
        limit = self.ws_max_markets
        if limit is None or current is None or len(current) + len(adding) <= limit:
            return True
        if len(current | set(adding)) <= limit:
            return True
        self.stats["ws_market_limit"] += 1
        return False

    def _cmd_list(self, conn: _Conn, cid: int | None, params: dict | None) -> None:
        listing = [{"channel": s.channel, "sid": s.sid} for s in sorted(conn.subs.values(), key=lambda s: s.sid)]
        conn.reply(self._with_id(cid, {"type": "ok", "msg": listing}))

    def _remove_sub(self, sub: _Sub) -> None:
        sub.alive = False
        self._index[sub.channel].discard(sub)
        conn = sub.conn
        conn.subs.pop(sub.sid, None)
        if conn.by_channel.get(sub.channel) is sub:
            del conn.by_channel[sub.channel]

    def _overflow(self, sub: _Sub) -> None:
        """Error 25 (terminal): the subscription ends; the client must resubscribe."""
        if not sub.alive:
            return
        self.stats["overflows"] += 1
        self._remove_sub(sub)
        self._error(sub.conn, None, 25, sid=sub.sid)

    # fan-out ----------------------------------------------------------------------------------------
    def on_event(self, channel: str, user: str | None, ticker: str | None, msg_type: str, msg: dict) -> None:
        """Engine listener: deliver one event to every matching subscription, encoding it once."""
        self._fan_out(channel, user, ticker, msg_type, msg)
        if self._duplicates and self._duplicates.get(channel):  # F04/F05: the same event sent again
            self._duplicates[channel] -= 1
            if not self._duplicates[channel]:
                del self._duplicates[channel]
            self.faults.applied[f"duplicate_{channel}"] += 1
            self._fan_out(channel, user, ticker, msg_type, msg)

    def _fan_out(self, channel: str, user: str | None, ticker: str | None, msg_type: str, msg: dict) -> None:
        subs = self._index.get(channel)
        if not subs:
            return
        type_b = self._type_bytes.get(msg_type)
        if type_b is None:
            type_b = self._type_bytes[msg_type] = msg_type.encode()
        plain: bytes | None = None
        variants: dict[tuple[bool, bool], bytes] | None = None
        book = channel == "orderbook_delta"
        has_coid = book and "client_order_id" in msg
        if has_coid and user is None:  # the engine names the owner of a delta it caused here
            user = getattr(self.engine, "event_owner", None)
        private = channel in PRIVATE_CHANNELS
        for sub in tuple(subs):
            if private and sub.conn.user != user:
                continue
            if sub.tickers is not None and ticker not in sub.tickers:
                continue
            if book and ((sub.yes and msg.get("side") == "no") or (has_coid and sub.conn.user != user)):
                key = (sub.yes and msg.get("side") == "no", has_coid and sub.conn.user != user)
                if variants is None:
                    variants = {}
                body = variants.get(key)
                if body is None:
                    body = variants[key] = _dumps(_book_variant(msg, *key))
            else:
                if plain is None:
                    plain = _dumps(msg)
                body = plain
            self._deliver(sub, type_b, body)

    def _deliver(self, sub: _Sub, type_b: bytes, body: bytes, snap: bool = False, cid: int | None = None) -> None:
        conn = sub.conn
        if conn.closed:
            return
        if not sub.seqd:
            if not conn.push(b'{"type":"%b","sid":%d,"msg":%b}' % (type_b, sub.sid, body)):
                self._overflow(sub)
            return
        fault = sub.fault
        if fault == "skip":
            sub.seq += 1
            sub.fault = None
            self.faults.applied["seq_skip"] += 1
        sub.seq += 1
        if cid is None:
            frame = b'{"type":"%b","sid":%d,"seq":%d,"msg":%b}' % (type_b, sub.sid, sub.seq, body)
        else:
            frame = b'{"type":"%b","id":%d,"sid":%d,"seq":%d,"msg":%b}' % (type_b, cid, sub.sid, sub.seq, body)
        item: Any = ("snap", frame) if snap else frame
        if fault is None or fault == "skip":
            ok = conn.push(item)
        elif fault == "duplicate":
            sub.fault = None
            self.faults.applied["seq_duplicate"] += 1
            ok = conn.push(item) and conn.push(item)
        elif fault == "reorder":  # hold k+1, send it after k+2
            sub.fault = "release"
            sub.held = item
            return
        else:  # release
            sub.fault = None
            held, sub.held = sub.held, None
            self.faults.applied["seq_reorder"] += 1
            ok = conn.push(item) and conn.push(held)
        if not ok:
            self._overflow(sub)

    # ---- fault hooks (FaultInjector calls these) -------------------------------------------------
    def drop_connections(self, after_snapshots: int | None) -> int:
        if after_snapshots is not None:
            self._drop_after = after_snapshots
            for conn in self.conns:
                conn.snaps_until_drop = after_snapshots
            return 0
        conns = list(self.conns)
        for conn in conns:
            conn.abort()
        return len(conns)

    def mid_snapshot_drop(self, conn: _Conn) -> None:
        self._drop_after = None
        for c in self.conns:
            c.snaps_until_drop = None
        self.faults.applied["ws_drop_mid_snapshot"] += 1
        conn.abort()

    def set_seq_fault(self, kind: str, sid: int | None) -> int:
        n = 0
        for conn in self.conns:
            for sub in conn.subs.values():
                if sub.seqd and (sid is None or sub.sid == sid):
                    sub.fault = kind or None
                    n += 1
        return n

    def set_stalled(self, stalled: bool) -> None:
        self.stalled = stalled
        if not stalled:
            for conn in self.conns:
                conn.wake.set()

    def send_bad_frame(self, kind: str) -> int:
        if kind == "malformed":
            item = ("raw", WSMsgType.TEXT, b'{"type":"orderbook_delta","sid":1,"seq":')
        elif kind == "binary":
            item = ("raw", WSMsgType.BINARY, b"\x00\x01\x02binary\xff")
        elif kind == "invalid_utf8":
            item = ("raw", WSMsgType.TEXT, b'{"type":"\xff\xfe\xc3\x28"}')
        else:  # a well-formed 2 MiB text frame, larger than any sane client max_size
            pad = OVERSIZED_FRAME - len(b'{"type":"junk","msg":""}')
            item = ("raw", WSMsgType.TEXT, b'{"type":"junk","msg":"' + b"x" * pad + b'"}')
        for conn in self.conns:
            conn.force(item)
        return len(self.conns)

    def overflow_subscriptions(self, sid: int | None) -> int:
        n = 0
        for conn in list(self.conns):
            for sub in list(conn.subs.values()):
                if sid is None or sub.sid == sid:
                    self._overflow(sub)
                    n += 1
        return n

    def duplicate_events(self, channel: str, count: int) -> None:
        if channel not in CHANNELS:
            raise ValueError(f"channel must be one of {', '.join(sorted(CHANNELS))}")
        self._duplicates[channel] = self._duplicates.get(channel, 0) + count

    def clear_faults(self) -> None:
        self.set_stalled(False)
        self._duplicates.clear()
        self._drop_after = None
        for conn in self.conns:
            conn.snaps_until_drop = None
            for sub in conn.subs.values():
                if sub.fault == "release" and sub.held is not None:
                    conn.push(sub.held)
                sub.fault = None
                sub.held = None


def _book_variant(msg: dict, yes: bool, strip: bool) -> dict:
    """An orderbook_delta body re-priced to the YES leg and/or without another user's client_order_id."""
    out = dict(msg)
    if yes and "price_dollars" in out:
        out["price_dollars"] = format_price(PRICE_ONE - parse_price(out["price_dollars"], "price_dollars"))
    if strip:
        out.pop("client_order_id", None)
        out.pop("subaccount", None)
    return out


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600: temp file in the same folder, fsync, replace."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def read_state(path: Path) -> dict:
    """The engine state saved in ``path``; ValueError with a clear message when the file is not one."""
    try:
        state = json.loads(Path(path).read_bytes(), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"state file {path} is not valid JSON") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or not isinstance(state.get("engine"), dict):
        raise ValueError(f"state file {path} is not a local-exchange state file")
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"state file {path} has unsupported version {state.get('version')!r}")
    return state["engine"]


class LocalExchange:
    """The local exchange on its own event loop in a thread (tests, the CLI, benchmarks).

    ``start()`` returns once it is listening; ``stop()`` is idempotent, saves state and joins.
    ``call(fn)`` runs ``fn(engine)`` on the loop thread and returns its result.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 1,
        markets: int = 8,
        state_file: str | os.PathLike | None = None,
        api_keys: dict[str, str | bytes] | None = None,
        start_balance: int = 10_000 * 10_000,
        flow: Any = "calm",
        rate_limits: bool = True,
        tier: str = "basic",
        clock_skew_ms: int = 0,
        timestamp_window_ms: int | tuple[int, int] = (10_000, 30_000),
        *,
        ping_interval_s: float = 10.0,
        advance_interval_s: float = 0.02,
        ws_queue_limit: int = 20_000,
        state_save_interval_s: float = 2.0,
        ws_max_markets_per_sub: int | None = None,
        ws_commands_per_s: float | None = None,
        engine_options: dict | None = None,
        engine_cls: Any = None,
        engine_config: Any = None,
    ) -> None:
        self.host = host
        self._port = port
        self._server_kwargs = dict(
            api_keys=dict(api_keys or {}), rate_limits=rate_limits, tier=tier, clock_skew_ms=clock_skew_ms,
            timestamp_window_ms=timestamp_window_ms, ping_interval_s=ping_interval_s,
            advance_interval_s=advance_interval_s, ws_queue_limit=ws_queue_limit, state_file=state_file,
            state_save_interval_s=state_save_interval_s, ws_max_markets_per_sub=ws_max_markets_per_sub,
            ws_commands_per_s=ws_commands_per_s,
        )
        self._state_file = Path(state_file) if state_file is not None else None
        self._engine_args = dict(seed=seed, markets=markets, start_balance=start_balance, flow=flow,
                                 engine_options=dict(engine_options or {}))
        self._engine_cls = engine_cls
        self._engine_config = engine_config
        if tier not in TIERS:
            raise ValueError(f"unknown rate-limit tier {tier!r}; known: {', '.join(TIERS)}")
        self._injector = FaultInjector()
        self.faults = ThreadSafeFaults(self._injector, self._run_on_loop)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: ExchangeServer | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._stopped = False
        self._lock = threading.Lock()

    # ---- engine construction ------------------------------------------------------------------
    def _make_engine(self, now_ms: int) -> Any:
        cls = self._engine_cls
        config = self._engine_config
        if cls is None or config is None:
            from kalshi.exchange import engine as engine_mod  # the engine helper's module, imported late

            cls = cls or engine_mod.Engine
            if config is None:
                a = self._engine_args
                config = engine_mod.EngineConfig(
                    seed=a["seed"], n_markets=a["markets"], start_balance=a["start_balance"],
                    flow=resolve_flow(a["flow"]), **a["engine_options"],
                )
        if self._state_file is not None and self._state_file.exists():
            engine = cls.from_state(read_state(self._state_file), now_ms)
            log.info("local exchange resumed from %s", self._state_file)
            return engine
        return cls(config, now_ms)

    # ---- lifecycle ----------------------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> "LocalExchange":
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("LocalExchange.start() called twice")
            self._thread = threading.Thread(target=self._thread_main, name="local-exchange", daemon=True)
            self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("local exchange did not start in time")
        if self._start_error is not None:
            self._thread.join(5)
            raise self._start_error
        return self

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:
            self._start_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _startup(self) -> None:
        now = time.time_ns() // 1_000_000 + int(self._server_kwargs["clock_skew_ms"])
        engine = self._make_engine(now)
        self._server = ExchangeServer(engine, faults=self._injector, **self._server_kwargs)
        runner = web.AppRunner(self._server.app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port)
        await site.start()
        self._runner = runner
        self._port = runner.addresses[0][1]
        await self._server.start_background()

    async def _shutdown(self) -> None:
        assert self._server is not None and self._runner is not None
        try:
            await self._server.shutdown()
        finally:
            await self._runner.cleanup()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop serving, save the state file, join the thread. Safe to call more than once."""
        with self._lock:
            if self._stopped or self._thread is None:
                self._stopped = True
                return
            self._stopped = True
        loop = self._loop
        if loop is not None and self._start_error is None and not loop.is_closed():
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            try:
                fut.result(timeout)
            except Exception:
                log.exception("local exchange shutdown failed")
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout)

    def __enter__(self) -> "LocalExchange":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- access ----------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def rest_url(self) -> str:
        return f"http://{self._url_host()}:{self._port}{REST_PREFIX}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self._url_host()}:{self._port}{WS_PATH}"

    @property
    def control_url(self) -> str:
        return f"http://{self._url_host()}:{self._port}/_control"

    def _url_host(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else "[::1]" if self.host == "::" else self.host
        return f"[{host}]" if ":" in host and not host.startswith("[") else host

    @property
    def server(self) -> ExchangeServer:
        """The server object (loop-thread only: use ``call`` from other threads)."""
        if self._server is None:
            raise RuntimeError("the exchange is not running")
        return self._server

    def _run_on_loop(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        loop = self._loop
        if loop is None or self._server is None or self._stopped:
            raise RuntimeError("the exchange is not running")
        if threading.current_thread() is self._thread:
            return fn()
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    def call(self, fn: Callable[[Any], Any], timeout: float = 10.0) -> Any:
        """Run ``fn(engine)`` on the loop thread and return its result (thread-safe inspection)."""
        return self._run_on_loop(lambda: fn(self.server.engine), timeout)

    def add_api_key(self, key_id: str, public_pem: str | bytes) -> str:
        """Register an API key while running (or before start); returns the user id."""
        if self._server is None:
            self._server_kwargs["api_keys"][key_id] = public_pem
            load_public_key(public_pem)
            return user_id_for_key(key_id)
        return self._run_on_loop(lambda: self.server.add_api_key(key_id, public_pem))

    def user_id(self, key_id: str) -> str:
        return user_id_for_key(key_id)

    def save_state(self) -> bool:
        return self._run_on_loop(lambda: self.server.save_state())

    def set_flow(self, flow: Any) -> None:
        """Pause (``"off"``), resume or retune (``"calm"``, ``"firehose"``, a FlowConfig) the synthetic flow.
        Pausing keeps the makers' quotes on the books; when this returns no further flow event is made."""
        self._run_on_loop(lambda: self.server.set_flow(flow))

    def stats(self) -> dict:
        return self._run_on_loop(lambda: dict(self.server.stats, connections=len(self.server.conns)))


FLOW_PRESETS = ("off", "calm", "firehose")


def resolve_flow(flow: Any) -> Any:
    """``"calm"`` / ``"firehose"`` / ``"off"`` or a FlowConfig → the engine's FlowConfig."""
    if not isinstance(flow, str):
        from kalshi.exchange.flow import FlowConfig

        if not isinstance(flow, FlowConfig):
            raise ValueError("flow must be 'off', 'calm', 'firehose' or a FlowConfig")
        return flow
    if flow not in FLOW_PRESETS:
        raise ValueError(f"unknown flow {flow[:40]!r}; known: {', '.join(FLOW_PRESETS)}")
    from kalshi.exchange.flow import FlowConfig

    return getattr(FlowConfig, flow)()
