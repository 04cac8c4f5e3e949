"""Kalshi WebSocket v2 client: one reader thread, batched frames, per-sid seq tracking, reconnects.

``KalshiWebSocket`` owns one thread that connects (signing the upgrade afresh on every attempt),
replays the desired subscriptions, reads frames and hands them to two callbacks:

- ``on_frames(conn_id, frames)``: a tuple of decoded data frames, everything that was readable
  without blocking (up to ``MAX_BATCH``), in wire order. One call per burst, not per frame.
- ``on_event(event)``: connection events (the ``Ws*`` classes below).

Both are called from the reader thread and must be cheap (an ``actor_ref.tell``). Exceptions in
them are caught, counted and logged; they never reach the reader loop. Frames and events are
delivered in wire order: before an event is emitted, the frames read before it are flushed.

Command replies (``Subscribed``, ``Unsubscribed``, ``Ok``, ``WsError``) are NOT in ``on_frames``:
they arrive as ``WsCommandReply`` events (plus ``WsSubscribed`` when a subscription gets a sid),
so feed actors only ever see market data in their batches. Frames are classified by the class
names of ``kalshi.wire.frames`` (any decoder whose classes use those names works).

Commands (``subscribe``, ``unsubscribe``, ``update_subscription``, ``list_subscriptions``) may be
called from any thread. They are queued, the reader thread is woken through a pipe and sends
them; each returns its command id at once. The client keeps the desired subscriptions (channel,
tickers merged across add/delete, params) and re-sends them after every reconnect. Sids change
on every connection: ``WsSubscribed(handle, sid, previous_sid)`` reports the new sid of the
subscription created by the ``subscribe`` call whose id is ``handle``. ``unsubscribe`` and
``update_subscription`` take a sid as reported; it is read against the last connection that was
up when the call was made (or against ``conn_id`` if given) and mapped to the subscription's
current sid, so a reconnect racing the call cannot retarget it to another subscription. Commands
issued while disconnected only change the desired state; ``get_snapshot`` and
``list_subscriptions`` are then dropped (counted) because a reconnect brings fresh snapshots.
Tickers added or removed while a (re)subscribe is in flight are sent once its sid is known. A
subscribe refused with a permanent error code is forgotten; error 25 (buffer overflow, the server
ended the subscription) is answered by subscribing again.

Sequence numbers, per sid (command replies excluded): the first message is the baseline; then
``last + 1`` is expected. A gap is reported (``WsSequenceIssue('gap')``) and the frame IS
delivered; ``seq == last`` (duplicate) and ``seq < last`` (backward) are reported and DROPPED
(a backward report is made once per watermark, so a server-side reset does not flood events).
A snapshot carrying ``id`` (the reply to ``get_snapshot``) re-bases the sid. Tracking for a sid
is reset on subscribe/unsubscribe and for all sids on reconnect.

Liveness: websocket-client answers server pings while reading (``recv_data_frame`` sends the
pong); any frame, pings included, proves the socket alive. No frame for ``idle_timeout`` seconds
→ ``WsStalled``, close, reconnect. Reconnects back off exponentially with jitter, capped, reset
once a connection has stayed up ``healthy_after_s``. A 401/403 on the upgrade is reason
``'auth'``: it keeps backing off (the supervisor decides when persistent auth failure is fatal).

Bad input never kills the reader: undecodable text, binary frames and invalid UTF-8 are counted
and reported (``WsMalformedFrame``, sample escaped and truncated), the connection is kept unless
more than ``bad_frame_limit[0]`` arrive within ``bad_frame_limit[1]`` seconds. A frame larger
than ``max_frame_bytes`` is refused from its header (the payload is never buffered): close 1009,
reconnect. Logs never contain request headers or signatures.

Speed: the stock websocket-client reader makes three recv calls per frame; the reader here reads
ahead 64 KiB at a time, which also answers "is another frame already here?" without a syscall.
Measured on loopback with the real decoder: ~200k frames/s, 512 frames per batch under load.
TLS uses the default context (certificate and host name checked); no proxy is used.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import math
import os
import queue
import random
import select
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol, Sequence
from urllib.parse import urlsplit

import websocket
from websocket import ABNF
# Private: no public hook exists to cap frame size or read ahead. _check_websocket_client() below
# verifies at import that it still behaves as _CappedFrameBuffer relies on.
from websocket._abnf import frame_buffer as _FrameBuffer

from .units import safe_repr
from .wire.frames import decode_frame

__all__ = [
    "KalshiWebSocket",
    "WsConnected",
    "WsDisconnected",
    "WsSequenceIssue",
    "WsMalformedFrame",
    "WsCommandReply",
    "WsSubscribed",
    "WsStalled",
    "WsStats",
    "WsEvent",
    "UPDATE_ACTIONS",
    "MAX_BATCH",
]

log = logging.getLogger(__name__)

_READ_AHEAD = 65536  # bytes asked of the socket per recv call
MAX_BATCH = 512  # frames per on_frames call; bounds latency of the first frame in a burst
RECV_POLL_S = 0.2  # longest the reader waits before re-checking stop/idle state
UPDATE_ACTIONS = frozenset({"add_markets", "delete_markets", "get_snapshot"})
# WS error code 25 = subscription buffer overflow: the server ended that subscription; we redo it.
_RESUBSCRIBE_CODES = frozenset({25})
# Errors to a subscribe that may succeed later: keep the subscription desired.
_TRANSIENT_CODES = frozenset({18, 25, 27})
_PENDING_CAP = 4096  # command ids remembered per connection, to match replies
_HISTORY_CONNS = 4  # connections for which a subscription's old sids are still understood
# Closes after which the peer is alive and should see our close frame; how long we wait for it.
_LINGER_REASONS = frozenset({"oversize", "bad_frames", "stopped"})
_LINGER_S = 0.3


# ---------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class WsConnected:
    conn_id: int
    url: str


@dataclass(frozen=True, slots=True)
class WsDisconnected:
    """A connection ended or an attempt failed. ``reason`` is a short token: ``auth``,
    ``connect_failed``, ``connect_timeout``, ``handshake_failed``, ``http_<status>``, ``tls_error``,
    ``stalled``, ``connection_lost``, ``closed_by_server:<code>``, ``oversize``, ``bad_frames``,
    ``protocol_error``, ``send_failed``, ``stopped`` or ``internal_error:<type>``."""

    conn_id: int
    reason: str
    will_retry: bool
    retry_in_s: float | None


@dataclass(frozen=True, slots=True)
class WsSequenceIssue:
    conn_id: int
    sid: int
    kind: str  # 'gap' (frame delivered) | 'duplicate' | 'backward' (frame dropped)
    expected: int
    got: int


@dataclass(frozen=True, slots=True)
class WsMalformedFrame:
    conn_id: int
    reason: str
    sample: str  # escaped, truncated


@dataclass(frozen=True, slots=True)
class WsCommandReply:
    """A subscribed / unsubscribed / ok / error frame; ``command_id`` is its ``id`` (None or 0 if
    the server sent none, e.g. an unsolicited error). ``handle`` is the id of the ``subscribe()``
    call the reply belongs to when it answers a subscribe (also a replayed one, whose command id
    differs), else None."""

    conn_id: int
    command_id: int | None
    frame: Any  # the decoded frame (an immutable kalshi.wire.frames struct)
    handle: int | None = None


@dataclass(frozen=True, slots=True)
class WsSubscribed:
    """The subscription made by ``subscribe()`` call ``handle`` has ``sid`` on ``conn_id`` for
    ``channel``; ``previous_sid`` is the sid it had before (older connection), None the first time."""

    conn_id: int
    handle: int
    command_id: int
    channel: str
    sid: int
    previous_sid: int | None


@dataclass(frozen=True, slots=True)
class WsStalled:
    conn_id: int
    idle_s: float


WsEvent = (
    WsConnected | WsDisconnected | WsSequenceIssue | WsMalformedFrame | WsCommandReply | WsSubscribed | WsStalled
)


@dataclass(frozen=True, slots=True)
class WsStats:
    connected: bool
    conn_id: int
    frames: int  # data frames delivered through on_frames
    batches: int
    bytes: int  # payload bytes of text/binary frames received
    malformed: int  # frames dropped as undecodable (incl. binary and oversize)
    gaps: int
    duplicates: int
    backward: int
    oversized: int
    reconnects: int  # connection attempts after the first
    auth_failures: int
    callback_errors: int
    commands_sent: int
    commands_dropped: int
    subscriptions: int  # desired (channel, subscribe-call) entries
    last_frame_age_s: float | None


class SignsHeaders(Protocol):
    def sign_headers(self, method: str, path: str, now_ms: int | None = None) -> dict[str, str]: ...


# -------------------------------------------------------------------- size-capped frame reading


class _FrameTooBig(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


class _CappedFrameBuffer(_FrameBuffer):
    """websocket-client's frame reader with two changes:

    - read-ahead: the stock reader asks the socket for exactly the bytes it needs next (three
      recv calls per frame); this one reads up to ``_READ_AHEAD`` bytes per call and serves frames
      from its buffer, which also tells the reader cheaply whether another frame is already here;
    - a size cap: a frame (or fragmented message) whose length header exceeds the cap is refused
      before any of its payload is buffered.

    A timeout in the middle of a frame leaves the bytes read so far in the buffer and the parsed
    header in place, so the next call resumes the same frame.
    """

    def __init__(self, recv_fn: Callable[[int], bytes], cap: int) -> None:
        super().__init__(recv_fn, True)
        self._cap = cap
        self._message_bytes = 0
        self._buf = bytearray()
        self._pos = 0

    def pending(self) -> int:
        return len(self._buf) - self._pos

    def recv_strict(self, bufsize: int) -> bytes:
        buf = self._buf
        while len(buf) - self._pos < bufsize:
            if self._pos:
                del buf[: self._pos]  # compact before growing
                self._pos = 0
            chunk = self.recv(_READ_AHEAD)
            if not chunk:
                raise websocket.WebSocketConnectionClosedException("connection closed")
            buf += chunk
        start = self._pos
        self._pos = start + bufsize
        out = bytes(buf[start : self._pos])
        if self._pos == len(buf):
            buf.clear()
            self._pos = 0
        return out

    def recv_length(self) -> None:
        super().recv_length()
        opcode = self.header[4]  # type: ignore[index]
        length = self.length or 0
        if opcode == ABNF.OPCODE_CONT:
            self._message_bytes += length
        elif opcode in (ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY):
            self._message_bytes = length
        elif length > 125:  # RFC 6455: control frames carry at most 125 bytes
            raise websocket.WebSocketProtocolException("control frame too long")
        else:
            return
        if self._message_bytes > self._cap:
            raise _FrameTooBig(self._message_bytes)


class _CappedWebSocket(websocket.WebSocket):
    def __init__(self, cap: int) -> None:
        # Only the reader thread uses the socket, so no send/receive locks are needed.
        super().__init__(skip_utf8_validation=True, enable_multithread=False)
        self.frame_buffer = _CappedFrameBuffer(self._recv, cap)


def _ws_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """An unmasked server frame (RFC 6455 §5.2), for the self-check below."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        return head + bytes([n]) + payload
    if n < 1 << 16:
        return head + bytes([126]) + struct.pack("!H", n) + payload
    return head + bytes([127]) + struct.pack("!Q", n) + payload


def _check_websocket_client() -> None:
    """Fail at import, with a clear message, if websocket-client's private frame reader no longer
    behaves the way ``_CappedFrameBuffer`` relies on (it extends ``websocket._abnf.frame_buffer``).

    Runs the real ``WebSocket.recv_data_frame`` path over a scripted byte stream: small, 16-bit
    and fragmented text frames arriving one byte at a time with a timeout in the middle of a frame
    (must resume), then an oversize header with no payload behind it (must be refused from the
    header alone: reading on would hit the end of the stream)."""
    problem = _websocket_client_problem()
    if problem is not None:
        raise ImportError(
            f"kalshi.ws needs websocket-client's frame reader as of 1.9 (installed: "
            f"{getattr(websocket, '__version__', '?')}): {problem}. Pin websocket-client==1.9.* "
            "or update _CappedFrameBuffer in kalshi/ws.py."
        )


def _websocket_client_problem() -> str | None:
    if not callable(getattr(getattr(websocket, "_logging", None), "isEnabledForTrace", None)):
        return "websocket._logging.isEnabledForTrace is gone (used to keep auth headers out of traces)"
    if not callable(getattr(websocket.WebSocket, "_recv", None)):
        return "WebSocket._recv is gone"
    big = b"x" * 300
    stream = (
        _ws_frame(ABNF.OPCODE_TEXT, b"hello")
        + _ws_frame(ABNF.OPCODE_TEXT, big)
        + _ws_frame(ABNF.OPCODE_TEXT, b"ab", fin=False)
        + _ws_frame(ABNF.OPCODE_CONT, b"cd")
        + b"\x81\x7e\x04\x00"  # header of a 1024-byte text frame, over the cap of 1000; no payload
    )
    pos = 0
    timed_out = False

    def trickle(_bufsize: int) -> bytes:
        nonlocal pos, timed_out
        if pos == 60 and not timed_out:  # inside the second frame's payload
            timed_out = True
            raise websocket.WebSocketTimeoutException("scripted timeout")
        chunk = stream[pos : pos + 1]
        pos += len(chunk)
        return chunk

    try:
        ws = _CappedWebSocket(1000)
        if type(getattr(ws, "frame_buffer", None)) is not _CappedFrameBuffer:
            return "WebSocket no longer reads frames through its frame_buffer attribute"
        ws.frame_buffer.recv = trickle
        got = [ws.recv_data_frame(True)]
        try:
            ws.recv_data_frame(True)
            return "a timeout inside a frame did not propagate"
        except websocket.WebSocketTimeoutException:
            pass
        got += [ws.recv_data_frame(True), ws.recv_data_frame(True)]
        result = [(op, f.data) for op, f in got]
        if result != [(ABNF.OPCODE_TEXT, b"hello"), (ABNF.OPCODE_TEXT, big), (ABNF.OPCODE_TEXT, b"abcd")]:
            return f"frames read back wrong: {safe_repr(result, 120)}"
        try:
            ws.recv_data_frame(True)
            return "an oversize frame was not refused"
        except _FrameTooBig as exc:
            if exc.size != 1024:
                return f"oversize frame reported as {exc.size} bytes, not 1024"
    except Exception as exc:  # any other failure means the reader changed under us
        return f"self-check raised {type(exc).__name__}: {safe_repr(str(exc), 120)}"
    return None


_check_websocket_client()


# ----------------------------------------------------------------------------- internal state


@dataclass(frozen=True, slots=True)
class _Cmd:
    kind: str  # subscribe | unsubscribe | update | list
    cid: int
    channels: tuple[str, ...] = ()
    tickers: frozenset[str] | None = None
    params: tuple[tuple[str, Any], ...] = ()
    sids: tuple[int, ...] = ()
    action: str = ""
    conn_id: int | None = None


class _Sub:
    """One desired (subscribe call, channel) subscription; owned by the reader thread."""

    __slots__ = ("handle", "channel", "tickers", "params", "sid", "sid_conn", "known", "sent")

    def __init__(
        self, handle: int, channel: str, tickers: frozenset[str] | None, params: tuple[tuple[str, Any], ...]
    ) -> None:
        self.handle = handle
        self.channel = channel
        self.tickers = tickers  # None = no market filter
        self.params = params
        self.sid: int | None = None  # last sid the server gave this subscription
        self.sid_conn: int | None = None  # connection on which ``sid`` is live (None: not live)
        self.known: dict[int, int] = {}  # conn_id → sid, to interpret sids callers saw earlier
        self.sent = False


@dataclass(slots=True)
class _Pending:
    kind: str
    handle: int = 0
    tickers_sent: dict[str, frozenset[str] | None] | None = None


class _Throttle:
    """At most one log line per ``interval`` seconds; counts what it suppressed."""

    __slots__ = ("interval", "next_at", "suppressed")

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.next_at = 0.0
        self.suppressed = 0

    def take(self) -> int | None:
        now = time.monotonic()
        if now < self.next_at:
            self.suppressed += 1
            return None
        self.next_at = now + self.interval
        n, self.suppressed = self.suppressed, 0
        return n


class _SendFailed(Exception):
    pass


class _Stopping(Exception):
    pass


_REPLY, _SNAPSHOT, _DATA = 0, 1, 2
_REPLY_NAMES = frozenset({"Subscribed", "Unsubscribed", "Ok", "WsError"})


def _kind_of(cls: type) -> int:
    name = cls.__name__
    if name in _REPLY_NAMES:
        return _REPLY
    if name == "OrderbookSnapshot":
        return _SNAPSHOT
    return _DATA


# ---------------------------------------------------------------------------- argument checks


def _check_str_seq(value: object, what: str) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{what} must be a sequence of strings, not {type(value).__name__}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str) or not item:
            raise ValueError(f"{what} must contain non-empty strings, got {safe_repr(item)}")
    return items


def _freeze_params(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    out = []
    for key, value in sorted(params.items()):
        if isinstance(value, (list, tuple)):
            value = tuple(value)
            if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
                raise TypeError(f"subscribe param {key!r}: list items must be str or int")
        elif not (value is None or isinstance(value, (bool, int, str))):
            raise TypeError(f"subscribe param {key!r}: unsupported type {type(value).__name__}")
        out.append((key, value))
    return tuple(out)


# ------------------------------------------------------------------------------------ client


class KalshiWebSocket:
    def __init__(
        self,
        url: str,
        credentials: SignsHeaders | None = None,
        *,
        on_frames: Callable[[int, tuple], None],
        on_event: Callable[[object], None],
        decode: Callable[[bytes | str], Any] = decode_frame,
        idle_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        max_frame_bytes: int = 1 << 20,
        bad_frame_limit: tuple[int, float] = (50, 10.0),
        name: str = "ws",
        rng: random.Random | None = None,
        healthy_after_s: float = 10.0,
        recv_poll_s: float = RECV_POLL_S,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"WebSocket URL must be ws:// or wss:// with a host, got {safe_repr(url, 80)}")
        if parts.username or parts.password:
            raise ValueError("WebSocket URL must not carry credentials")
        for label, value in (
            ("idle_timeout", idle_timeout),
            ("connect_timeout", connect_timeout),
            ("backoff_initial", backoff_initial),
            ("backoff_max", backoff_max),
            ("recv_poll_s", recv_poll_s),
            ("healthy_after_s", healthy_after_s),
        ):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{label} must be a positive number, got {value!r}")
        if backoff_max < backoff_initial:
            raise ValueError("backoff_max must be >= backoff_initial")
        if not (isinstance(max_frame_bytes, int) and max_frame_bytes > 0):
            raise ValueError("max_frame_bytes must be a positive int")
        limit, window = bad_frame_limit
        if not (isinstance(limit, int) and limit >= 0 and window > 0):
            raise ValueError("bad_frame_limit must be (count >= 0, window_s > 0)")
        self._url = url
        self._host = parts.hostname
        self._secure = parts.scheme == "wss"
        self._port = parts.port or (443 if self._secure else 80)
        self._path = parts.path or "/"  # signed path: the URL path, never the query
        self._creds = credentials
        self._on_frames = on_frames
        self._on_event = on_event
        self._decode = decode
        self._idle_timeout = float(idle_timeout)
        self._connect_timeout = float(connect_timeout)
        self._backoff_initial = float(backoff_initial)
        self._backoff_max = float(backoff_max)
        self._max_frame_bytes = max_frame_bytes
        self._bad_limit = limit
        self._bad_window = float(window)
        self._name = name
        self._rng = rng if rng is not None else random.Random()
        self._healthy_after = float(healthy_after_s)
        self._recv_poll = float(recv_poll_s)
        # Certificate and host name checks are on (the default context); tests pass their own CA.
        self._ssl_context = ssl_context if ssl_context is not None else (
            ssl.create_default_context() if self._secure else None)

        # Shared with caller threads.
        self._ids = itertools.count(1)
        self._commands: queue.SimpleQueue[_Cmd] = queue.SimpleQueue()
        self._stop_evt = threading.Event()
        self._wake_lock = threading.Lock()
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self._sock_lock = threading.Lock()
        self._live_sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._started = False

        # Reader-thread state (read by stats() without locks: plain ints under the GIL).
        self._conn_id = 0  # the current (or last) connection attempt
        self._live_conn = 0  # the last connection that was established: the one sids belong to
        self._connected = False
        self._frames = self._batches = self._bytes = 0
        self._malformed = self._gaps = self._duplicates = self._backward = self._oversized = 0
        self._reconnects = self._auth_failures = self._callback_errors = 0
        self._commands_sent = self._commands_dropped = self._dropped_after_stop = 0
        self._last_rx: float | None = None
        self._subs: dict[tuple[int, str], _Sub] = {}
        self._pending: dict[int, _Pending] = {}
        self._used_ids: set[int] = set()
        self._last_seq: dict[int, int] = {}
        self._backward_reported: dict[int, int] = {}
        self._bad_times: collections.deque[float] = collections.deque()
        self._kinds: dict[type, int] = {}
        self._log_malformed = _Throttle()
        self._log_callback = _Throttle()
        self._log_seq = _Throttle()

    def __repr__(self) -> str:
        return f"KalshiWebSocket(name={self._name!r}, url={self._url!r}, conn_id={self._conn_id})"

    # ------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the reader thread (once)."""
        if self._started:
            raise RuntimeError(f"{self._name}: start() called twice")
        self._started = True
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._run, name=f"{self._name}-reader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop and join the reader thread; idempotent, bounded by ``timeout``."""
        self._stop_evt.set()
        self._wake()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        deadline = time.monotonic() + max(0.0, timeout)
        thread.join(min(0.5, max(0.0, timeout)))
        if thread.is_alive():
            # Blocked inside a handshake or a trickling frame: cut the socket under it.
            with self._sock_lock:
                sock = self._live_sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            log.warning("%s: reader thread did not stop within %.1fs (blocked in DNS/TCP connect?)",
                        self._name, timeout)

    def stats(self) -> WsStats:
        last = self._last_rx
        return WsStats(
            connected=self._connected,
            conn_id=self._conn_id,
            frames=self._frames,
            batches=self._batches,
            bytes=self._bytes,
            malformed=self._malformed,
            gaps=self._gaps,
            duplicates=self._duplicates,
            backward=self._backward,
            oversized=self._oversized,
            reconnects=self._reconnects,
            auth_failures=self._auth_failures,
            callback_errors=self._callback_errors,
            commands_sent=self._commands_sent,
            commands_dropped=self._commands_dropped + self._dropped_after_stop,
            subscriptions=len(self._subs),
            last_frame_age_s=None if last is None else time.monotonic() - last,
        )

    # ------------------------------------------------------------------------- commands

    def subscribe(self, channels: Sequence[str], market_tickers: Sequence[str] | None = None, **params: Any) -> int:
        """Subscribe ``channels`` (optionally filtered to ``market_tickers``); returns the command
        id, which is also the subscription's ``handle`` in ``WsSubscribed`` events.
        ``orderbook_delta`` always carries ``use_yes_price`` (default False)."""
        chans = _check_str_seq(channels, "channels")
        if not chans:
            raise ValueError("subscribe needs at least one channel")
        single = params.pop("market_ticker", None)
        if single is not None:
            if market_tickers is not None:
                raise ValueError("give market_ticker or market_tickers, not both")
            market_tickers = [single]
        tickers = None if market_tickers is None else frozenset(_check_str_seq(market_tickers, "market_tickers"))
        if tickers is not None and not tickers:
            raise ValueError("market_tickers is empty (None means all markets)")
        if "orderbook_delta" in chans:
            params.setdefault("use_yes_price", False)
        return self._enqueue(
            _Cmd("subscribe", next(self._ids), channels=tuple(dict.fromkeys(chans)), tickers=tickers,
                 params=_freeze_params(params))
        )

    def unsubscribe(self, sids: Sequence[int], *, conn_id: int | None = None) -> int:
        """Unsubscribe ``sids`` (as reported on ``conn_id``; default: the current connection)."""
        return self._enqueue(
            _Cmd("unsubscribe", next(self._ids), sids=self._check_sids(sids), conn_id=self._conn_of(conn_id))
        )

    def update_subscription(
        self, sid: int, action: str, market_tickers: Sequence[str], *, conn_id: int | None = None
    ) -> int:
        """``add_markets`` / ``delete_markets`` (remembered for reconnects) or ``get_snapshot``."""
        if action not in UPDATE_ACTIONS:
            raise ValueError(f"action must be one of {sorted(UPDATE_ACTIONS)}, got {safe_repr(action)}")
        tickers = _check_str_seq(market_tickers, "market_tickers")
        if not tickers:
            raise ValueError("update_subscription needs at least one market ticker")
        return self._enqueue(
            _Cmd("update", next(self._ids), sids=self._check_sids([sid]), action=action,
                 tickers=frozenset(tickers), conn_id=self._conn_of(conn_id))
        )

    def list_subscriptions(self) -> int:
        return self._enqueue(_Cmd("list", next(self._ids)))

    def _conn_of(self, conn_id: int | None) -> int:
        # A sid means what it meant when the caller spoke: pin it to the last connection that was
        # up, so a reconnect between the call and its processing cannot retarget it.
        return self._live_conn if conn_id is None else conn_id

    @staticmethod
    def _check_sids(sids: Sequence[int]) -> tuple[int, ...]:
        if isinstance(sids, (str, bytes)) or not isinstance(sids, Iterable):
            raise TypeError("sids must be a sequence of ints")
        out = tuple(sids)
        if not out or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in out):
            raise ValueError(f"sids must be positive ints, got {safe_repr(out)}")
        return out

    def _enqueue(self, cmd: _Cmd) -> int:
        if self._stop_evt.is_set():
            self._dropped_after_stop += 1  # caller-side counter: the reader has its own
            log.debug("%s: %s %d dropped: client stopped", self._name, cmd.kind, cmd.cid)
            return cmd.cid
        self._commands.put(cmd)
        self._wake()
        return cmd.cid

    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_w is not None:
                try:
                    os.write(self._wake_w, b"\0")
                except (BlockingIOError, InterruptedError):
                    pass  # pipe already full: the reader is going to wake anyway

    # ---------------------------------------------------------------------- reader thread

    def _run(self) -> None:
        failures = 0
        try:
            while not self._stop_evt.is_set():
                self._conn_id += 1
                if self._conn_id > 1:
                    self._reconnects += 1
                conn_id = self._conn_id
                ws, reason = self._connect()
                healthy = False
                if ws is not None:
                    started = time.monotonic()
                    try:
                        reason = self._serve(ws, conn_id)
                    except Exception as exc:  # a bug must not kill the feed: reconnect instead
                        log.exception("%s: reader error on connection %d", self._name, conn_id)
                        reason = f"internal_error:{type(exc).__name__}"
                    finally:
                        self._close(ws, reason)
                    healthy = time.monotonic() - started >= self._healthy_after
                if self._stop_evt.is_set():
                    if ws is not None:
                        self._emit(WsDisconnected(conn_id, "stopped", False, None))
                    break
                failures = 1 if healthy else failures + 1
                delay = self._backoff(failures)
                log.info("%s: connection %d ended (%s); retry in %.2fs", self._name, conn_id, reason, delay)
                self._emit(WsDisconnected(conn_id, reason, True, round(delay, 3)))
                if self._idle_wait(delay):
                    break
        except BaseException:  # pragma: no cover - last resort; keep the process alive and say why
            log.critical("%s: reader thread died", self._name, exc_info=True)
            self._emit(WsDisconnected(self._conn_id, "internal_error:reader_died", False, None))
        finally:
            self._connected = False
            with self._wake_lock:
                for fd in (self._wake_r, self._wake_w):
                    if fd is not None:
                        os.close(fd)
                self._wake_r = self._wake_w = None

    def _backoff(self, failures: int) -> float:
        """Equal-jitter exponential backoff: in [base/2, base]; base = initial for the first failure
        in a row, doubling per further failure, capped at backoff_max."""
        base = min(self._backoff_max, self._backoff_initial * (2.0 ** min(failures - 1, 60)))
        return base / 2 + self._rng.random() * base / 2

    def _idle_wait(self, delay: float) -> bool:
        """Back off for ``delay`` seconds while still taking commands (they shape the replay).
        Returns True if stop() was called."""
        deadline = time.monotonic() + delay
        poller = select.poll()
        assert self._wake_r is not None
        poller.register(self._wake_r, select.POLLIN)
        while not self._stop_evt.is_set():
            self._process_commands(None)
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if poller.poll(max(1, math.ceil(left * 1000))):
                self._drain_wake()
        return True

    def _connect(self) -> tuple[_CappedWebSocket | None, str]:
        headers: list[str] = []
        if self._creds is not None:
            try:
                signed = self._creds.sign_headers("GET", self._path)
                headers = [f"{k}: {v}" for k, v in signed.items()]
            except Exception as exc:  # never log the message: it may quote key material
                self._auth_failures += 1
                log.error("%s: signing the handshake failed (%s)", self._name, type(exc).__name__)
                return None, "auth"
        try:
            sock = socket.create_connection((self._host, self._port), timeout=self._connect_timeout)
        except (socket.timeout, TimeoutError):
            return None, "connect_timeout"
        except OSError as exc:
            log.debug("%s: connect failed: %s", self._name, type(exc).__name__)
            return None, "connect_failed"
        with self._sock_lock:
            self._live_sock = sock
        ws: _CappedWebSocket | None = None
        reason = "stopped"
        try:
            if self._stop_evt.is_set():
                raise _Stopping
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl_context is not None:
                sock = self._ssl_context.wrap_socket(sock, server_hostname=self._host)
                with self._sock_lock:
                    self._live_sock = sock
            if websocket._logging.isEnabledForTrace():
                # websocket-client's trace dumps the request headers, i.e. the signature.
                log.warning("%s: websocket-client trace is on and would log auth headers: turning it off", self._name)
                websocket.enableTrace(False)
            ws = _CappedWebSocket(self._max_frame_bytes)
            ws.connect(
                self._url,
                socket=sock,
                header=headers,
                timeout=self._connect_timeout,
                redirect_limit=0,  # never replay the signed headers to another host
                suppress_origin=True,
            )
            ws.settimeout(self._recv_poll)
            return ws, ""
        except _Stopping:
            pass
        except websocket.WebSocketBadStatusException as exc:
            status = getattr(exc, "status_code", 0)
            if status in (401, 403):
                self._auth_failures += 1
                log.warning("%s: handshake refused with HTTP %s (auth)", self._name, status)
                reason = "auth"
            else:
                log.warning("%s: handshake refused with HTTP %s", self._name, status)
                reason = f"http_{status}"
        except (socket.timeout, TimeoutError, websocket.WebSocketTimeoutException):
            reason = "connect_timeout"
        except ssl.SSLError as exc:
            log.warning("%s: TLS failed: %s", self._name, type(exc).__name__)
            reason = "tls_error"
        except (OSError, websocket.WebSocketException) as exc:
            log.warning("%s: handshake failed: %s", self._name, type(exc).__name__)
            reason = "handshake_failed"
        # Failure: release everything.
        with self._sock_lock:
            self._live_sock = None
        try:
            sock.close()
        except OSError:
            pass
        if ws is not None:
            ws.shutdown()
        return None, "stopped" if self._stop_evt.is_set() else reason

    def _close(self, ws: _CappedWebSocket, reason: str) -> None:
        """Send a close frame (1009 for an oversize frame) when the peer may still listen, then
        linger briefly, discarding input, so the close frame is not lost to a TCP reset."""
        self._connected = False
        sock = ws.sock
        if ws.connected and sock is not None and reason in _LINGER_REASONS:
            code = 1009 if reason == "oversize" else 1000
            try:
                ws.send_close(code, b"message too big" if code == 1009 else b"")
                sock.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + _LINGER_S
                sock.settimeout(0.05)
                while time.monotonic() < deadline:
                    try:
                        if not sock.recv(65536):
                            break  # the peer closed too
                    except (socket.timeout, TimeoutError, ssl.SSLWantReadError):
                        continue
            except Exception:
                pass
        with self._sock_lock:
            self._live_sock = None
        ws.shutdown()

    def _serve(self, ws: _CappedWebSocket, conn_id: int) -> str:
        self._connected = True
        self._live_conn = conn_id
        self._pending.clear()
        self._used_ids.clear()
        self._last_seq.clear()
        self._backward_reported.clear()
        self._bad_times.clear()
        now = time.monotonic()
        self._last_rx = now
        log.info("%s: connected (connection %d)", self._name, conn_id)
        self._emit(WsConnected(conn_id, self._url))
        ws_fd = ws.sock.fileno()  # type: ignore[union-attr]
        poller = select.poll()  # socket + wake pipe: the idle wait
        poller.register(ws_fd, select.POLLIN | select.POLLPRI)
        assert self._wake_r is not None
        poller.register(self._wake_r, select.POLLIN)
        ws_poller = select.poll()  # socket only: "is more already here?" while draining a burst
        ws_poller.register(ws_fd, select.POLLIN | select.POLLPRI)
        try:
            self._process_commands(None)  # fold queued commands into the desired state, then replay it all
            self._replay(ws, list(self._subs.values()))
            while True:
                if self._stop_evt.is_set():
                    return "stopped"
                self._process_commands(ws)
                idle = time.monotonic() - self._last_rx
                if idle >= self._idle_timeout:
                    log.warning("%s: no frame for %.1fs on connection %d: reconnecting", self._name, idle, conn_id)
                    self._emit(WsStalled(conn_id, round(idle, 3)))
                    return "stalled"
                if not self._buffered(ws):
                    wait_ms = max(1, math.ceil(min(self._recv_poll, self._idle_timeout - idle) * 1000))
                    readable = False
                    for fd, _ in poller.poll(wait_ms):
                        if fd == ws_fd:
                            readable = True
                        else:
                            self._drain_wake()
                    if not readable:
                        continue
                reason = self._read_batch(ws, conn_id, ws_poller)
                if reason:
                    return reason
        except _SendFailed:
            return "send_failed"

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):  # type: ignore[arg-type]
                pass
        except (BlockingIOError, InterruptedError):
            pass

    @staticmethod
    def _buffered(ws: _CappedWebSocket) -> bool:
        """True if a frame's bytes are already in websocket-client's or the TLS layer's buffer."""
        if ws.frame_buffer.pending():  # type: ignore[attr-defined]
            return True
        sock = ws.sock
        return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0

    # ------------------------------------------------------------------------ reading

    def _read_batch(self, ws: _CappedWebSocket, conn_id: int, ws_poller: select.poll) -> str | None:
        """Read every frame available without waiting (up to MAX_BATCH); deliver; return a reason
        to drop the connection, or None."""
        batch: list[Any] = []
        decode = self._decode
        kinds = self._kinds
        last_seq = self._last_seq
        cap = self._max_frame_bytes
        recv = ws.recv_data_frame
        reason: str | None = None
        received = False
        try:
            while True:
                try:
                    opcode, frame = recv(True)
                except websocket.WebSocketTimeoutException:
                    break  # only part of a frame is here; the rest is read on the next round
                received = True
                if opcode == ABNF.OPCODE_TEXT:
                    data = frame.data
                    size = len(data)
                    self._bytes += size
                    if size > cap:  # only if the header check could not run
                        raise _FrameTooBig(size)
                    try:
                        f = decode(data)
                    except Exception as exc:
                        reason = self._bad_frame(batch, conn_id, exc, data)
                        if reason:
                            break
                        continue
                    cls = type(f)
                    kind = kinds.get(cls)
                    if kind is None:
                        kind = kinds[cls] = _kind_of(cls)
                    if kind == _REPLY:
                        self._flush(batch, conn_id)
                        self._on_reply(ws, conn_id, f)
                        continue
                    sid = getattr(f, "sid", None)
                    if sid is not None:
                        seq = getattr(f, "seq", None)
                        if seq is not None:
                            last = last_seq.get(sid)
                            if last is None or seq == last + 1:
                                last_seq[sid] = seq
                            elif kind == _SNAPSHOT and getattr(f, "id", None) is not None:
                                last_seq[sid] = seq  # get_snapshot reply: a fresh baseline
                            elif seq > last:
                                self._gaps += 1
                                last_seq[sid] = seq
                                self._flush(batch, conn_id)
                                self._seq_issue(conn_id, sid, "gap", last + 1, seq)
                            else:
                                self._flush(batch, conn_id)
                                self._seq_drop(conn_id, sid, last, seq)
                                continue
                    batch.append(f)
                    if len(batch) >= MAX_BATCH:
                        break
                elif opcode == ABNF.OPCODE_BINARY:
                    self._bytes += len(frame.data)
                    reason = self._bad_frame(batch, conn_id, None, frame.data)
                    if reason:
                        break
                elif opcode == ABNF.OPCODE_CLOSE:
                    code = struct.unpack("!H", frame.data[:2])[0] if len(frame.data) >= 2 else 1005
                    reason = f"closed_by_server:{code}"
                    break
                # Ping (already answered by websocket-client) and pong only prove liveness.
                if not self._buffered(ws) and not ws_poller.poll(0):
                    break
        except _FrameTooBig as exc:
            self._oversized += 1
            self._malformed += 1
            self._flush(batch, conn_id)
            log.warning("%s: frame of %d bytes > max %d: closing 1009", self._name, exc.size, cap)
            self._emit(WsMalformedFrame(conn_id, f"frame of {exc.size} bytes exceeds {cap}", ""))
            reason = "oversize"
        except websocket.WebSocketConnectionClosedException:
            reason = "connection_lost"
        except (websocket.WebSocketProtocolException, websocket.WebSocketPayloadException) as exc:
            self._malformed += 1
            log.warning("%s: WebSocket protocol error: %s", self._name, type(exc).__name__)
            reason = "protocol_error"
        except OSError as exc:
            log.info("%s: socket error: %s", self._name, type(exc).__name__)
            reason = "connection_lost"
        if received:
            self._last_rx = time.monotonic()
        self._flush(batch, conn_id)
        return reason

    def _flush(self, batch: list[Any], conn_id: int) -> None:
        if not batch:
            return
        frames = tuple(batch)
        batch.clear()
        self._frames += len(frames)
        self._batches += 1
        try:
            self._on_frames(conn_id, frames)
        except Exception:
            self._callback_failed("on_frames")

    def _emit(self, event: object) -> None:
        try:
            self._on_event(event)
        except Exception:
            self._callback_failed("on_event")

    def _callback_failed(self, which: str) -> None:
        self._callback_errors += 1
        suppressed = self._log_callback.take()
        if suppressed is not None:
            log.error("%s: %s callback raised (%d similar suppressed)", self._name, which, suppressed, exc_info=True)

    def _bad_frame(self, batch: list[Any], conn_id: int, exc: Exception | None, data: bytes) -> str | None:
        self._malformed += 1
        if exc is None:
            why = "binary frame"
        else:
            given = getattr(exc, "reason", None)  # WireError's short reason
            why = given if isinstance(given, str) and given else f"decoder raised {type(exc).__name__}"
        sample = getattr(exc, "sample", None)
        if not (isinstance(sample, str) and sample.isascii() and sample.isprintable()):
            sample = safe_repr(bytes(data[:120]), 120)
        sample = sample[:160]
        why = safe_repr(why, 120)[1:-1] if not why.isascii() or not why.isprintable() else why[:120]
        self._flush(batch, conn_id)
        suppressed = self._log_malformed.take()
        if suppressed is not None:
            log.warning("%s: malformed frame dropped: %s: %s (%d similar suppressed)",
                        self._name, why, sample, suppressed)
        self._emit(WsMalformedFrame(conn_id, why, sample))
        now = time.monotonic()
        times = self._bad_times
        times.append(now)
        while times and times[0] < now - self._bad_window:
            times.popleft()
        if len(times) > self._bad_limit:
            log.warning("%s: %d bad frames within %.0fs: reconnecting", self._name, len(times), self._bad_window)
            return "bad_frames"
        return None

    def _seq_issue(self, conn_id: int, sid: int, kind: str, expected: int, got: int) -> None:
        suppressed = self._log_seq.take()
        if suppressed is not None:
            log.warning("%s: seq %s on sid %d: expected %d got %d (%d similar suppressed)",
                        self._name, kind, sid, expected, got, suppressed)
        self._emit(WsSequenceIssue(conn_id, sid, kind, expected, got))

    def _seq_drop(self, conn_id: int, sid: int, last: int, seq: int) -> None:
        if seq == last:
            self._duplicates += 1
            self._seq_issue(conn_id, sid, "duplicate", last + 1, seq)
        else:
            self._backward += 1
            if self._backward_reported.get(sid) != last:  # once per watermark
                self._backward_reported[sid] = last
                self._seq_issue(conn_id, sid, "backward", last + 1, seq)

    # ------------------------------------------------------------------- replies and commands

    def _on_reply(self, ws: _CappedWebSocket, conn_id: int, f: Any) -> None:
        name = type(f).__name__
        cid = getattr(f, "id", None)
        sid = getattr(f, "sid", None)
        pending = self._pending.get(cid) if cid else None
        if name == "Subscribed" and sid is not None:
            self._last_seq.pop(sid, None)
            self._backward_reported.pop(sid, None)
            if pending is not None and pending.kind == "subscribe":
                self._subscribed(ws, conn_id, cid, pending, getattr(f, "channel", ""), sid)
        elif name == "Unsubscribed" and sid is not None:
            self._last_seq.pop(sid, None)
            self._backward_reported.pop(sid, None)
        elif name == "WsError":
            code = getattr(f, "code", None)
            if sid is not None and code in _RESUBSCRIBE_CODES:
                self._last_seq.pop(sid, None)
                dead = [s for s in self._subs.values() if s.sid_conn == conn_id and s.sid == sid]
                for sub in dead:
                    sub.sid_conn = None
                if dead:
                    log.warning("%s: sid %d ended by the server (code %s): resubscribing", self._name, sid, code)
                    self._replay(ws, dead)
            elif pending is not None and pending.kind == "subscribe" and code not in _TRANSIENT_CODES:
                # A permanent refusal: stop asking for the channels that got no sid.
                for channel in pending.tickers_sent or {}:
                    sub = self._subs.get((pending.handle, channel))
                    if sub is not None and sub.sid_conn != conn_id:
                        del self._subs[(pending.handle, channel)]
                        log.warning("%s: subscribe %s refused (code %s): dropped", self._name, channel, code)
        handle = pending.handle if pending is not None and pending.kind == "subscribe" else None
        self._emit(WsCommandReply(conn_id, cid, f, handle))

    def _subscribed(
        self, ws: _CappedWebSocket, conn_id: int, cid: int, pending: _Pending, channel: str, sid: int
    ) -> None:
        sub = self._subs.get((pending.handle, channel))
        if sub is None:
            # Unsubscribed while the request was in flight: the server subscription is unwanted.
            self._send(ws, {"id": self._new_id(), "cmd": "unsubscribe", "params": {"sids": [sid]}}, _Pending("cleanup"))
            return
        previous = sub.sid
        sub.sid, sub.sid_conn = sid, conn_id
        sub.known[conn_id] = sid
        while len(sub.known) > _HISTORY_CONNS:
            del sub.known[min(sub.known)]
        self._emit(WsSubscribed(conn_id, sub.handle, cid, channel, sid, previous))
        # Tickers changed while the request was in flight: bring the server in line.
        sent = (pending.tickers_sent or {}).get(channel)
        if sub.tickers is not None and sent is not None and sub.tickers != sent:
            for action, diff in (("add_markets", sub.tickers - sent), ("delete_markets", sent - sub.tickers)):
                if diff:
                    self._send_update(ws, sid, action, diff, self._new_id())

    def _new_id(self) -> int:
        return next(self._ids)

    def _send(self, ws: _CappedWebSocket, message: dict[str, Any], pending: _Pending) -> None:
        cid = message["id"]
        if len(self._pending) >= _PENDING_CAP:
            del self._pending[next(iter(self._pending))]
        self._pending[cid] = pending
        self._used_ids.add(cid)
        text = json.dumps(message, separators=(",", ":"))
        try:
            ws.send(text)
        except Exception as exc:
            log.warning("%s: sending %s %d failed: %s", self._name, message.get("cmd"), cid, type(exc).__name__)
            raise _SendFailed from None
        self._commands_sent += 1
        log.debug("%s: sent %s", self._name, safe_repr(text, 300))

    def _send_update(self, ws: _CappedWebSocket, sid: int, action: str, tickers: Iterable[str], cid: int) -> None:
        params = {"sid": sid, "market_tickers": sorted(tickers), "action": action}
        self._send(ws, {"id": cid, "cmd": "update_subscription", "params": params}, _Pending("update"))

    def _replay(self, ws: _CappedWebSocket, subs: list[_Sub]) -> None:
        """Send subscribe commands for ``subs``, one per (subscribe call, tickers, params) group."""
        groups: dict[tuple, list[_Sub]] = {}
        for sub in subs:
            if sub.tickers is not None and not sub.tickers:
                log.info("%s: %s subscription %d has no markets left: dropped", self._name, sub.channel, sub.handle)
                del self._subs[(sub.handle, sub.channel)]
                continue
            groups.setdefault((sub.handle, sub.tickers, sub.params), []).append(sub)
        for (handle, tickers, params), members in groups.items():
            fresh = not any(m.sent for m in members) and handle not in self._used_ids
            cid = handle if fresh else self._new_id()
            self._send_subscribe(ws, cid, handle, [m.channel for m in members], tickers, params)
            for m in members:
                m.sent = True

    def _send_subscribe(
        self, ws: _CappedWebSocket, cid: int, handle: int, channels: list[str],
        tickers: frozenset[str] | None, params: tuple[tuple[str, Any], ...],
    ) -> None:
        body: dict[str, Any] = {"channels": channels}
        if tickers is not None:
            body["market_tickers"] = sorted(tickers)
        for key, value in params:
            body[key] = list(value) if isinstance(value, tuple) else value
        self._send(
            ws,
            {"id": cid, "cmd": "subscribe", "params": body},
            _Pending("subscribe", handle, {c: tickers for c in channels}),
        )

    def _match(self, sid: int, conn_id: int | None) -> list[_Sub]:
        return [s for s in self._subs.values() if s.known.get(conn_id) == sid]

    def _live_sid(self, sub: _Sub) -> int | None:
        return sub.sid if self._connected and sub.sid_conn == self._conn_id else None

    def _process_commands(self, ws: _CappedWebSocket | None) -> None:
        """Apply queued commands to the desired state and send them (``ws`` None: disconnected)."""
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return
            current = self._connected and cmd.conn_id == self._conn_id
            if cmd.kind == "subscribe":
                for channel in cmd.channels:
                    self._subs[(cmd.cid, channel)] = _Sub(cmd.cid, channel, cmd.tickers, cmd.params)
                if ws is not None:
                    self._replay(ws, [self._subs[(cmd.cid, c)] for c in cmd.channels])
            elif cmd.kind == "unsubscribe":
                server_sids: list[int] = []
                for sid in cmd.sids:
                    matched = self._match(sid, cmd.conn_id)
                    for sub in matched:
                        self._subs.pop((sub.handle, sub.channel), None)
                        live = self._live_sid(sub)
                        if live is not None:
                            server_sids.append(live)
                    if not matched and current:
                        server_sids.append(sid)  # not one of ours, or already gone: pass it on
                server_sids = list(dict.fromkeys(server_sids))
                for sid in server_sids:
                    self._last_seq.pop(sid, None)
                    self._backward_reported.pop(sid, None)
                if ws is not None and server_sids:
                    msg = {"id": cmd.cid, "cmd": "unsubscribe", "params": {"sids": server_sids}}
                    self._send(ws, msg, _Pending("unsubscribe"))
            elif cmd.kind == "update":
                sid = cmd.sids[0]
                matched = self._match(sid, cmd.conn_id)
                tickers = cmd.tickers or frozenset()
                for sub in matched:
                    if sub.tickers is None:
                        continue  # all markets already
                    if cmd.action == "add_markets":
                        sub.tickers = sub.tickers | tickers
                    elif cmd.action == "delete_markets":
                        sub.tickers = sub.tickers - tickers
                lives = [x for x in (self._live_sid(s) for s in matched) if x is not None]
                target = lives[0] if lives else (sid if current and not matched else None)
                if ws is not None and target is not None:
                    self._send_update(ws, target, cmd.action, sorted(tickers), cmd.cid)
                elif cmd.action == "get_snapshot":
                    self._commands_dropped += 1
                    log.debug("%s: get_snapshot %d dropped: sid not live", self._name, cmd.cid)
            elif cmd.kind == "list":
                if ws is not None:
                    self._send(ws, {"id": cmd.cid, "cmd": "list_subscriptions"}, _Pending("list"))
                else:
                    self._commands_dropped += 1
