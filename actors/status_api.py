"""The status API (the seed's §7.2–7.3): aiohttp on an event loop in a thread the broadcaster owns.

Endpoints: ``GET /v3/health``, ``GET /v3/status``, ``POST /v3/cleanup?orphaned_only=true|false`` (the only
mutating one) and the ``/v3/ws`` WebSocket (``connection``, ``history_replay``, then ``system_activity``,
``trader_status``, ``trading_state``, ``whale_queue``, ``whale_processing`` and ``ping`` keep-alives).

Threads: the broadcaster calls ``update_snapshot``/``publish``/``cleanup_done`` from its own thread; each
hands a freshly built, never-again-mutated value to the loop with ``loop.call_soon_threadsafe``, so every
piece of server state is touched by the loop thread only. Cleanup requests go the other way through the
``request_cleanup`` callable (it tells the broadcaster actor a message; it never blocks).

Per WebSocket client a bounded pending buffer: latest-wins kinds (trader_status, trading_state,
whale_queue) keep only the newest payload (conflated, counted); the other kinds are appended up to
``client_buffer`` (oldest dropped, counted). A slow client only slows its own writer task.

Security (reliability S9): binds 127.0.0.1 by default; a non-loopback bind needs a token, checked with
``hmac.compare_digest`` against ``Authorization: Bearer``; a token in the query string is refused; a
foreign ``Origin`` (any endpoint, so no cross-site POST either) or a ``Host`` that is not the bound host or
loopback gets 403; header sizes are capped by aiohttp's parser limits; unknown paths are 404; a plain GET
to /v3/ws is 426.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
LATEST_WINS = frozenset({"trader_status", "trading_state", "whale_queue"})
TOKEN_QUERY_KEYS = frozenset({"token", "access_token", "auth", "authorization", "bearer"})
HEALTHY_STATES = frozenset({"READY", "ACTING"})

# Request-parsing limits: oversized request lines or headers are refused by aiohttp (400/431).
MAX_LINE = 8190
MAX_FIELD = 8190
MAX_HEADERS = 64


def _host_only(value: str) -> str:
    """``host[:port]`` or ``[v6]:port`` → the lower-case host name."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


class _Client:
    """One /v3/ws connection's pending messages (loop thread only)."""

    __slots__ = ("ws", "pending", "appended", "event", "conflated", "dropped", "seq", "cap", "sent")

    def __init__(self, ws: web.WebSocketResponse, cap: int) -> None:
        self.ws = ws
        self.pending: OrderedDict[Any, str] = OrderedDict()  # key → JSON text
        self.appended = 0
        self.event = asyncio.Event()
        self.conflated = 0
        self.dropped = 0
        self.seq = 0
        self.cap = cap
        self.sent = 0

    def put(self, kind: str, text: str) -> None:
        if kind in LATEST_WINS:
            if self.pending.pop(kind, None) is not None:
                self.conflated += 1
            self.pending[kind] = text
        else:
            self.seq += 1
            self.pending[(kind, self.seq)] = text
            self.appended += 1
            if self.appended > self.cap:
                for key in self.pending:
                    if type(key) is tuple:
                        del self.pending[key]
                        break
                self.appended -= 1
                self.dropped += 1
        self.event.set()

    def take(self) -> list[str]:
        items = list(self.pending.values())
        self.pending.clear()
        self.appended = 0
        self.event.clear()
        return items


class StatusServer:
    """The aiohttp status server in its own thread with its own event loop."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8005,
        *,
        token: str = "",
        request_cleanup: Callable[[int, bool], bool] | None = None,
        cleanup_timeout_s: float = 15.0,
        ping_interval_s: float = 15.0,
        send_timeout_s: float = 5.0,
        max_clients: int = 64,
        client_buffer: int = 256,
        history_size: int = 100,
        name: str = "status-api",
    ) -> None:
        if host not in LOOPBACK_HOSTS and not token:
            raise ValueError("binding the status API beyond loopback requires a token (V3_STATUS_TOKEN)")
        self.host = host
        self.port = port
        self._token = token.encode()
        self._request_cleanup = request_cleanup
        self.cleanup_timeout_s = cleanup_timeout_s
        self.ping_interval_s = ping_interval_s
        self.send_timeout_s = send_timeout_s
        self.max_clients = max_clients
        self.client_buffer = client_buffer
        self._name = name
        # Loop-thread state
        self._snapshot: dict[str, Any] = {"state": "STARTUP", "degraded": False}
        self._latest: dict[str, str] = {}
        self._history: deque[dict[str, Any]] = deque(maxlen=history_size)
        self._clients: set[_Client] = set()
        self._cleanups: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._client_ids = itertools.count(1)
        self.counters = {"rejected": 0, "conflated": 0, "dropped": 0, "clients_total": 0, "refused_clients": 0}
        # Thread handoff
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._start_error: BaseException | None = None
        self.bound: tuple[str, int] | None = None

    # --- lifecycle (called from the owner's thread) ----------------------------------------------

    def start(self, timeout_s: float = 10.0) -> tuple[str, int]:
        """Start the loop thread and bind; returns (host, port) or raises the bind error."""
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError("status API did not start in time")
        if self._start_error is not None:
            self._thread.join(timeout_s)
            raise self._start_error
        assert self.bound is not None
        return self.bound

    def stop(self, timeout_s: float = 5.0) -> bool:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and self._thread is not None and self._thread.is_alive():
            try:
                loop.call_soon_threadsafe(stopped.set)
            except RuntimeError:  # loop already closed
                pass
        if self._thread is not None:
            self._thread.join(timeout_s)
            return not self._thread.is_alive()
        return True

    @property
    def client_count(self) -> int:
        return len(self._clients)  # a len() read across threads is atomic in CPython

    # --- handoff from the owner's thread ----------------------------------------------------------

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closing: nothing to deliver to
            pass

    def update_snapshot(self, snapshot: dict[str, Any]) -> None:
        """Hand over a new status snapshot (the caller must not mutate it afterwards)."""
        self._call(self._set_snapshot, snapshot)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Send ``{"type": kind, "data": data}`` to every /v3/ws client (conflated per client)."""
        self._call(self._fanout, kind, data)

    def cleanup_done(self, request_id: int, status: int, body: dict[str, Any]) -> None:
        self._call(self._resolve_cleanup, request_id, status, body)

    # --- loop thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main(loop))
        except BaseException as exc:  # reported to start() when it happens before ready
            if not self._ready.is_set():
                self._start_error = exc
                self._ready.set()
            else:
                log.error("status API loop ended: %s", type(exc).__name__)
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                self._loop = None
                loop.close()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        self._stopped = asyncio.Event()
        app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        app.router.add_get("/v3/health", self._health)
        app.router.add_get("/v3/status", self._status)
        app.router.add_post("/v3/cleanup", self._cleanup)
        app.router.add_get("/v3/ws", self._ws)
        runner = web.AppRunner(
            app,
            access_log=None,
            max_line_size=MAX_LINE,
            max_field_size=MAX_FIELD,
            max_headers=MAX_HEADERS,
            shutdown_timeout=1.0,
        )
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, self.host, self.port, backlog=128)
            await site.start()
            addresses = runner.addresses  # the bound address (port 0 → the real port)
            addr = addresses[0] if addresses else (self.host, self.port)
            self.bound = (addr[0], addr[1])
            self._loop = loop
            self._ready.set()
            await self._stopped.wait()
        finally:
            for client in list(self._clients):
                await client.ws.close(code=1001, message=b"server shutdown")
            for fut in self._cleanups.values():
                if not fut.done():
                    fut.cancel()
            await runner.cleanup()

    def _set_snapshot(self, snapshot: dict[str, Any]) -> None:
        self._snapshot = snapshot

    def _fanout(self, kind: str, data: dict[str, Any]) -> None:
        text = json.dumps({"type": kind, "data": data}, separators=(",", ":"))
        if kind in LATEST_WINS:
            self._latest[kind] = text
        elif kind == "system_activity" and data.get("activity_type") == "state_transition":
            # history_replay carries the transitions themselves (from/to/reason/time), as the seed's did.
            self._history.append({**data.get("metadata", {}), "message": data.get("message")})
        for client in self._clients:
            client.put(kind, text)

    def _resolve_cleanup(self, request_id: int, status: int, body: dict[str, Any]) -> None:
        fut = self._cleanups.get(request_id)
        if fut is not None and not fut.done():
            fut.set_result((status, body))

    # --- security ------------------------------------------------------------------------------------

    def _allowed_host(self, host: str) -> bool:
        if host in LOOPBACK_HOSTS or host == self.host.lower():
            return True
        # A wildcard bind cannot know its public names; the token (required off loopback) guards it.
        return self.host in ("0.0.0.0", "::")

    def _refuse(self, status: int, reason: str) -> web.Response:
        self.counters["rejected"] += 1
        resp = web.json_response({"error": reason}, status=status)
        resp.force_close()
        return resp

    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        if any(key.lower() in TOKEN_QUERY_KEYS for key in request.query):
            return self._refuse(403, "credentials in the query string are refused; use Authorization: Bearer")
        host = request.headers.get("Host")
        if host is None or not self._allowed_host(_host_only(host)):
            return self._refuse(403, "host not allowed")
        origin = request.headers.get("Origin")
        if origin is not None:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not self._allowed_host((parts.hostname or "").lower()):
                return self._refuse(403, "origin not allowed")
        if self._token:
            header = request.headers.get("Authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
                return self._refuse(403, "missing or wrong bearer token")
        return await handler(request)

    # --- handlers ------------------------------------------------------------------------------------

    def _healthy(self) -> bool:
        snap = self._snapshot
        return snap.get("state") in HEALTHY_STATES and not snap.get("degraded", False)

    async def _health(self, request: web.Request) -> web.Response:
        snap = self._snapshot
        body = {
            "healthy": self._healthy(),
            "state": snap.get("state"),
            "degraded": snap.get("degraded", False),
            "trading_gate": snap.get("trading_gate"),
            "uptime_s": snap.get("uptime_s"),
        }
        return web.json_response(body, status=200 if body["healthy"] else 503)

    def _server_stats(self) -> dict[str, Any]:
        conflated = self.counters["conflated"] + sum(c.conflated for c in self._clients)
        dropped = self.counters["dropped"] + sum(c.dropped for c in self._clients)
        return {
            "clients": len(self._clients),
            "clients_total": self.counters["clients_total"],
            "refused_clients": self.counters["refused_clients"],
            "rejected_requests": self.counters["rejected"],
            "conflated": conflated,
            "dropped": dropped,
        }

    async def _status(self, request: web.Request) -> web.Response:
        body = dict(self._snapshot)
        body["status_api"] = self._server_stats()
        return web.json_response(body)

    async def _cleanup(self, request: web.Request) -> web.Response:
        raw = request.query.get("orphaned_only", "true").lower()
        if raw not in ("true", "false"):
            return web.json_response({"error": "orphaned_only must be true or false"}, status=400)
        if self._cleanups:
            return web.json_response({"error": "a cleanup is already running"}, status=409)
        if self._request_cleanup is None:
            return web.json_response({"error": "cleanup is not available"}, status=503)
        request_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._cleanups[request_id] = fut
        try:
            if not self._request_cleanup(request_id, raw == "true"):
                return web.json_response({"error": "the broadcaster is not running"}, status=503)
            try:
                status, body = await asyncio.wait_for(fut, self.cleanup_timeout_s)
            except asyncio.TimeoutError:
                return web.json_response(
                    {"error": f"no answer from the executor within {self.cleanup_timeout_s:g}s",
                     "request_id": request_id},
                    status=504,
                )
            return web.json_response(body, status=status)
        finally:
            self._cleanups.pop(request_id, None)

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=4096, autoping=True, heartbeat=None)
        if not ws.can_prepare(request).ok:
            return web.json_response(
                {"error": "this endpoint speaks WebSocket only"}, status=426, headers={"Upgrade": "websocket"}
            )
        if len(self._clients) >= self.max_clients:
            self.counters["refused_clients"] += 1
            return web.json_response({"error": "too many WebSocket clients"}, status=503)
        await ws.prepare(request)
        client = _Client(ws, self.client_buffer)
        client_id = next(self._client_ids)
        self.counters["clients_total"] += 1
        snap = self._snapshot
        # Greeting, replay and the latest of each latest-wins kind go first, in this order.
        client.put("connection", json.dumps({"type": "connection", "data": {
            "client_id": client_id, "state": snap.get("state"), "server_time_ms": snap.get("at_ms"),
            "message_types": ["connection", "history_replay", "system_activity", "trader_status",
                              "trading_state", "whale_queue", "whale_processing", "ping"],
        }}))
        client.put("history_replay", json.dumps({"type": "history_replay", "data": {
            "transitions": list(self._history), "count": len(self._history),
        }}))
        for kind in ("trader_status", "trading_state", "whale_queue"):
            if kind in self._latest:
                client.put(kind, self._latest[kind])
        self._clients.add(client)
        writer = asyncio.create_task(self._writer(client))
        try:
            async for msg in ws:  # inbound messages are ignored; the loop ends on close/error
                if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            self._clients.discard(client)
            self.counters["conflated"] += client.conflated
            self.counters["dropped"] += client.dropped
            writer.cancel()
            try:
                await writer
            except (asyncio.CancelledError, Exception):
                pass
            if not ws.closed:
                await ws.close()
        return ws

    async def _writer(self, client: _Client) -> None:
        ws = client.ws
        try:
            while not ws.closed:
                try:
                    await asyncio.wait_for(client.event.wait(), self.ping_interval_s)
                except asyncio.TimeoutError:
                    await asyncio.wait_for(
                        ws.send_str(json.dumps({"type": "ping", "data": {"timestamp_ms": self._snapshot.get("at_ms")}})),
                        self.send_timeout_s,
                    )
                    continue
                for text in client.take():
                    await asyncio.wait_for(ws.send_str(text), self.send_timeout_s)
                    client.sent += 1
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            # A client that cannot take a message within send_timeout is cut off; it may reconnect.
            if not ws.closed:
                await ws.close(code=1008, message=b"too slow")
