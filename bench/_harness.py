"""Bench-only replay server: streams pre-built Kalshi ``orderbook_delta`` and ``trade`` frames at a target rate.

Why: the local exchange's synthetic flow cannot push enough messages to find the client's limit, and its frames
do not say precisely when they were sent. This server speaks just enough of Kalshi's WebSocket v2 (the upgrade,
``subscribe`` → ``subscribed``, snapshots first, per-sid ``seq`` from 1, ``get_snapshot`` in paced mode) for
``kalshi.ws.KalshiWebSocket`` and a bare websocket-client loop to read the SAME stream. It does not check
signatures (nothing secret reaches it) and implements no matching: it is a wire replayer, not an exchange.

It runs in its own process (``ReplayServer.start()``; the bench talks to it over a pipe) so that its CPU does not
share the client's GIL. Two modes, chosen per phase with ``configure()``:

- ``blast``: ``n_frames`` frames are generated and WebSocket-framed in advance, then written as fast as the socket
  takes them (64 KiB writes, asyncio flow control). The server costs almost no CPU, so the reader is the limit.
- ``paced``: frames are generated just in time at ``rate`` messages/s (all channels together) for ``duration_s``;
  ``ts_ms`` is the real send time, and the send time of every frame is recorded in ns (per connection, by
  channel and seq) and returned by ``report()``, so the bench can compute send → applied/decided latencies.

Every connection that subscribes gets its snapshots at once and then waits for ``go()``, so the phases start all
connections together. Frames of one channel carry fixed sids (orderbook_delta = 1, trade = 2) and the same seq
numbers whatever subset a connection subscribed to, which is what lets one pre-built stream serve every client.

Stream shape (deterministic from ``seed``): every market has a book of YES and NO bids at 20..49 cents (so the YES
ask is 51 cents) whose sizes stay >= 100 contracts; deltas move sizes; ``trade_share`` of the frames are trades,
of which ``whale_share`` are whales (500 contracts at 52 cents, in ``whale_markets``) and the rest small prints.
Trade ids embed a per-phase nonce and the trade's seq: ``<nonce>-0000-4000-8000-<seq:012d>``.
"""

from __future__ import annotations

import array
import asyncio
import base64
import hashlib
import json
import multiprocessing
import random
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

OB, TRADE = 0, 1
SID = {OB: 1, TRADE: 2}
CHANNELS = {"orderbook_delta": OB, "trade": TRADE}
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_WRITE_CHUNK = 65536
_PAD_LOW, _PAD_HIGH = 20, 49  # book levels in cents, both sides


@dataclass(frozen=True)
class StreamConfig:
    markets: tuple[str, ...]
    whale_markets: tuple[str, ...]
    mode: str = "paced"  # paced | blast
    rate: int = 1000  # paced: messages/s over all channels
    duration_s: float = 10.0  # paced
    n_frames: int = 200_000  # blast
    trade_share: float = 0.1
    whale_share: float = 0.05  # of trades
    seed: int = 7
    nonce: int = 1

    def __post_init__(self) -> None:
        if not self.markets:
            raise ValueError("no markets")
        if self.mode not in ("paced", "blast"):
            raise ValueError(f"mode must be paced or blast, got {self.mode!r}")
        if not set(self.whale_markets) <= set(self.markets):
            raise ValueError("whale_markets must be among markets")


def ws_frame(payload: bytes) -> bytes:
    """An unmasked server text frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + struct.pack("!H", n) + payload
    return b"\x81\x7f" + struct.pack("!Q", n) + payload


class Stream:
    """The deterministic frame generator (one per connection, or one to pre-build a blast)."""

    def __init__(self, cfg: StreamConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        rng = self.rng
        self.markets = cfg.markets
        self.whales = cfg.whale_markets or cfg.markets
        self.ids = {m: f"{hashlib.md5(m.encode()).hexdigest()[:8]}-5b68-4f9f-9f02-9a2d1b8ac1a1" for m in cfg.markets}
        self.books: dict[str, list[dict[int, int]]] = {
            m: [{c: rng.randint(100, 5000) for c in range(_PAD_LOW, _PAD_HIGH + 1)} for _ in range(2)]
            for m in cfg.markets
        }
        self.seq = [0, 0]
        self.nonce = f"{cfg.nonce & 0xFFFFFFFF:08x}"
        self._sec = -1
        self._iso = ""

    def _ts(self, now_ms: int) -> str:
        sec = now_ms // 1000
        if sec != self._sec:
            self._sec = sec
            self._iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._iso}.{now_ms % 1000:03d}000Z"

    def snapshot(self, market: str, cmd_id: int | None = None) -> bytes:
        self.seq[OB] += 1
        yes, no = self.books[market]
        msg = {
            "market_ticker": market,
            "market_id": self.ids[market],
            "yes_dollars_fp": [[f"0.{c:02d}00", f"{s}.00"] for c, s in sorted(yes.items())],
            "no_dollars_fp": [[f"0.{c:02d}00", f"{s}.00"] for c, s in sorted(no.items())],
        }
        frame: dict[str, Any] = {"type": "orderbook_snapshot", "sid": SID[OB], "seq": self.seq[OB], "msg": msg}
        if cmd_id is not None:
            frame = {"type": "orderbook_snapshot", "id": cmd_id, "sid": SID[OB], "seq": self.seq[OB], "msg": msg}
        return json.dumps(frame, separators=(",", ":")).encode()

    def next(self, now_ms: int) -> tuple[int, int, bytes]:
        """(channel, seq, payload) of the next frame."""
        rng = self.rng
        r = rng.random()
        if r < self.cfg.trade_share:
            self.seq[TRADE] += 1
            seq = self.seq[TRADE]
            if r < self.cfg.trade_share * self.cfg.whale_share:
                market, count, price = rng.choice(self.whales), 500, 52
            else:
                market, count, price = rng.choice(self.markets), rng.randint(1, 20), rng.randint(50, 52)
            side = "yes" if rng.random() < 0.5 else "no"
            yes_price = price if side == "yes" else 100 - price
            body = (
                f'{{"type":"trade","sid":2,"seq":{seq},"msg":{{"trade_id":"{self.nonce}-0000-4000-8000-{seq:012d}",'
                f'"market_ticker":"{market}","yes_price_dollars":"0.{yes_price:02d}00",'
                f'"no_price_dollars":"0.{100 - yes_price:02d}00","count_fp":"{count}.00","taker_side":"{side}",'
                f'"taker_outcome_side":"{side}","taker_book_side":"bid","is_block_trade":false,'
                f'"ts":{now_ms // 1000},"ts_ms":{now_ms}}}}}'
            )
            return TRADE, seq, body.encode()
        self.seq[OB] += 1
        seq = self.seq[OB]
        market = rng.choice(self.markets)
        side = 0 if rng.random() < 0.5 else 1
        cents = rng.randint(_PAD_LOW, _PAD_HIGH)
        levels = self.books[market][side]
        have = levels[cents]
        delta = rng.randint(100 - have if have > 100 else 0, 500) or 1
        levels[cents] = have + delta
        body = (
            f'{{"type":"orderbook_delta","sid":1,"seq":{seq},"msg":{{"market_ticker":"{market}",'
            f'"market_id":"{self.ids[market]}","price_dollars":"0.{cents:02d}00","delta_fp":"{delta}.00",'
            f'"side":"{"yes" if side == 0 else "no"}","ts":"{self._ts(now_ms)}","ts_ms":{now_ms}}}}}'
        )
        return OB, seq, body.encode()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class _Blast:
    """A pre-built blast: the frames of each channel subset, already WebSocket-framed and joined."""

    buffers: dict[frozenset[int], bytes]
    snapshots: bytes  # WS-framed snapshots of every market (seq 1..M), sent on subscribe
    counts: dict[int, int]


def build_blast(cfg: StreamConfig) -> _Blast:
    s = Stream(cfg)
    snaps = b"".join(ws_frame(s.snapshot(m)) for m in cfg.markets)
    parts: dict[int, list[bytes]] = {OB: [], TRADE: []}
    both: list[bytes] = []
    now = _now_ms()
    for i in range(cfg.n_frames):
        chan, _, payload = s.next(now + i // 100)
        f = ws_frame(payload)
        parts[chan].append(f)
        both.append(f)
    return _Blast(
        buffers={
            frozenset({OB, TRADE}): b"".join(both),
            frozenset({OB}): b"".join(parts[OB]),
            frozenset({TRADE}): b"".join(parts[TRADE]),
        },
        snapshots=snaps,
        counts={OB: len(parts[OB]), TRADE: len(parts[TRADE])},
    )


@dataclass
class _Conn:
    cid: int
    writer: asyncio.StreamWriter
    channels: set[int] = field(default_factory=set)
    stream: Stream | None = None  # paced: this connection's generator
    waiting: bool = False  # subscribed, waiting for go
    sent: int = 0
    ignored_commands: int = 0
    # paced: per-frame (channel, seq, send ns), in write order
    rec_chan: array.array = field(default_factory=lambda: array.array("b"))
    rec_seq: array.array = field(default_factory=lambda: array.array("q"))
    rec_ns: array.array = field(default_factory=lambda: array.array("q"))
    done: bool = False
    closed: bool = False


class _Server:
    def __init__(self) -> None:
        self.cfg: StreamConfig | None = None
        self.blast: _Blast | None = None
        self.conns: list[_Conn] = []
        self.next_cid = 1
        self.go_event = asyncio.Event()
        self.go_ns = 0
        self.tasks: set[asyncio.Task] = set()

    # --- control (called on the loop) ---------------------------------------------------------

    async def configure(self, cfg: StreamConfig) -> dict:
        for c in self.conns:
            if not c.closed:
                c.writer.close()
        self.conns = []
        self.cfg = cfg
        self.go_event = asyncio.Event()
        self.go_ns = 0
        self.blast = None
        if cfg.mode == "blast":
            self.blast = await asyncio.get_running_loop().run_in_executor(None, build_blast, cfg)
            return {"ob_frames": self.blast.counts[OB], "trade_frames": self.blast.counts[TRADE],
                    "bytes": len(self.blast.buffers[frozenset({OB, TRADE})])}
        return {}

    def status(self) -> dict:
        return {"waiting": sum(1 for c in self.conns if c.waiting), "conns": len(self.conns),
                "done": sum(1 for c in self.conns if c.done), "channels": [sorted(c.channels) for c in self.conns]}

    def go(self) -> int:
        self.go_ns = time.time_ns()
        self.go_event.set()
        return self.go_ns

    def report(self) -> list[dict]:
        return [
            {"cid": c.cid, "channels": sorted(c.channels), "sent": c.sent, "ignored_commands": c.ignored_commands,
             "chan": c.rec_chan.tobytes(), "seq": c.rec_seq.tobytes(), "ns": c.rec_ns.tobytes(), "done": c.done}
            for c in self.conns
        ]

    # --- connections ----------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn: _Conn | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            key = b""
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-key":
                    key = value.strip()
            if not key or self.cfg is None:
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            conn = _Conn(self.next_cid, writer)
            self.next_cid += 1
            self.conns.append(conn)
            await self._read_loop(reader, conn)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            if conn is not None:
                conn.closed = True
            writer.close()

    async def _read_loop(self, reader: asyncio.StreamReader, conn: _Conn) -> None:
        while True:
            b0, b1 = await reader.readexactly(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await reader.readexactly(8))[0]
            mask = await reader.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
            data = await reader.readexactly(n)
            if mask != b"\0\0\0\0":
                m = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
                data = (int.from_bytes(data, "big") ^ m).to_bytes(n, "big")
            if opcode == 0x8:  # close: echo it and end
                conn.writer.write(b"\x88\x02" + (data[:2] or b"\x03\xe8"))
                return
            if opcode == 0x9:  # ping → pong
                conn.writer.write(bytes((0x8A, len(data))) + data)
                continue
            if opcode == 0x1:
                self._command(conn, data)

    def _command(self, conn: _Conn, data: bytes) -> None:
        try:
            cmd = json.loads(data)
            cid, name, params = cmd.get("id"), cmd.get("cmd"), cmd.get("params") or {}
        except (ValueError, AttributeError):
            conn.ignored_commands += 1
            return
        cfg = self.cfg
        assert cfg is not None
        if name == "subscribe":
            new = []
            for ch in params.get("channels") or ():
                chan = CHANNELS.get(ch)
                if chan is None:
                    self._send(conn, {"id": cid, "type": "error", "msg": {"code": 8, "msg": "Unknown channel"}})
                    continue
                self._send(conn, {"id": cid, "type": "subscribed", "msg": {"channel": ch, "sid": SID[chan]}})
                if chan not in conn.channels:
                    conn.channels.add(chan)
                    new.append(chan)
            if cfg.mode == "paced" and conn.stream is None:
                conn.stream = Stream(cfg)
            if OB in new:
                if cfg.mode == "blast":
                    assert self.blast is not None
                    conn.writer.write(self.blast.snapshots)
                else:
                    assert conn.stream is not None
                    # Snapshots are sent straight from the stream so later deltas continue its seq.
                    conn.writer.write(b"".join(ws_frame(conn.stream.snapshot(m)) for m in cfg.markets))
            if new and not conn.waiting:
                conn.waiting = True
                task = asyncio.get_running_loop().create_task(self._stream(conn))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        elif name == "update_subscription" and params.get("action") == "get_snapshot" and conn.stream is not None:
            # Paced mode knows the current books: answer with fresh snapshots carrying the command id.
            for m in params.get("market_tickers") or ():
                if m in conn.stream.books:
                    conn.writer.write(ws_frame(conn.stream.snapshot(m, cid)))
        else:
            conn.ignored_commands += 1

    def _send(self, conn: _Conn, obj: dict) -> None:
        conn.writer.write(ws_frame(json.dumps(obj, separators=(",", ":")).encode()))

    async def _stream(self, conn: _Conn) -> None:
        await self.go_event.wait()
        cfg = self.cfg
        assert cfg is not None
        try:
            if cfg.mode == "blast":
                await self._blast(conn)
            else:
                await self._paced(conn, cfg)
        except (ConnectionError, RuntimeError):
            pass
        conn.done = True

    async def _blast(self, conn: _Conn) -> None:
        assert self.blast is not None
        buf = memoryview(self.blast.buffers[frozenset(conn.channels)])
        w = conn.writer
        for i in range(0, len(buf), _WRITE_CHUNK):
            if conn.closed:
                return
            w.write(buf[i : i + _WRITE_CHUNK])
            await w.drain()
        conn.sent = self.blast.counts[OB] * (OB in conn.channels) + self.blast.counts[TRADE] * (TRADE in conn.channels)

    async def _paced(self, conn: _Conn, cfg: StreamConfig) -> None:
        s = conn.stream
        assert s is not None
        w = conn.writer
        chans = conn.channels
        start = time.monotonic()
        interval = 1.0 / cfg.rate
        total = int(cfg.duration_s * cfg.rate)
        i = 0
        rec_chan, rec_seq, rec_ns = conn.rec_chan, conn.rec_seq, conn.rec_ns
        time_ns = time.time_ns
        while i < total and not conn.closed:
            due = min(total, int((time.monotonic() - start) / interval) + 1)
            while i < due:
                i += 1
                now = time_ns()
                chan, seq, payload = s.next(now // 1_000_000)
                if chan in chans:
                    w.write(ws_frame(payload))
                    rec_chan.append(chan)
                    rec_seq.append(seq)
                    rec_ns.append(time_ns())
                    conn.sent += 1
            if w.transport.get_write_buffer_size() > 4 << 20:
                await w.drain()  # the client is far behind: do not buffer without bound
            await asyncio.sleep(max(0.0, start + i * interval - time.monotonic()))


def _serve(pipe: Any, host: str) -> None:
    """Child process: run the replay server; execute pipe commands on its loop."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = _Server()
    srv = loop.run_until_complete(asyncio.start_server(server.handle, host, 0, limit=1 << 22))
    port = srv.sockets[0].getsockname()[1]
    pipe.send(("port", port))

    def control() -> None:
        while True:
            try:
                cmd, arg = pipe.recv()
            except EOFError:
                cmd, arg = "stop", None
            if cmd == "stop":
                loop.call_soon_threadsafe(loop.stop)
                return

            async def run(cmd: str = cmd, arg: Any = arg) -> Any:
                if cmd == "configure":
                    return await server.configure(StreamConfig(**arg))
                if cmd == "status":
                    return server.status()
                if cmd == "go":
                    return server.go()
                if cmd == "report":
                    return server.report()
                raise ValueError(cmd)

            try:
                result = ("ok", asyncio.run_coroutine_threadsafe(run(), loop).result(120))
            except Exception as exc:  # reported to the bench, which raises it
                result = ("error", f"{type(exc).__name__}: {exc}")
            pipe.send(result)

    t = threading.Thread(target=control, name="replay-control", daemon=True)
    t.start()
    loop.run_forever()
    srv.close()
    pipe.send(("stopped", None))


def wait_until(pred: Any, timeout: float, what: str, poll: float = 0.02) -> None:
    """Poll ``pred`` (another thread's or process's state: the benches have nothing to wait on) until true."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(poll)


def pct(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))]


class ChildProcess:
    """A spawned bench helper process (its CPU and threads stay out of the measured process). ``target(pipe,
    *args)`` sends one start payload, then answers each message with ``("ok", value)`` or ``("error", text)``
    until it receives ``stop_message``. Every wait has a timeout; a child that does not stop is killed."""

    def __init__(self, target: Any, args: tuple, name: str, stop_message: Any = "stop") -> None:
        self._target, self._args, self._name, self._stop = target, args, name, stop_message
        self._proc: Any = None
        self._pipe: Any = None

    def start(self, timeout: float = 60.0) -> Any:
        ctx = multiprocessing.get_context("spawn")
        self._pipe, child = ctx.Pipe()
        self._proc = ctx.Process(target=self._target, args=(child, *self._args), name=self._name, daemon=True)
        self._proc.start()
        if not self._pipe.poll(timeout):
            self.stop()
            raise RuntimeError(f"{self._name} did not start")
        return self._pipe.recv()

    def call(self, message: Any, timeout: float) -> Any:
        self._pipe.send(message)
        if not self._pipe.poll(timeout):
            raise TimeoutError(f"{self._name} did not answer {message!r} within {timeout}s")
        status, value = self._pipe.recv()
        if status != "ok":
            raise RuntimeError(f"{self._name} {message!r} failed: {value}")
        return value

    def stop(self, timeout: float = 15.0) -> None:
        if self._proc is None:
            return
        try:
            self._pipe.send(self._stop)
            self._pipe.poll(timeout)  # its last word, once it has cleaned up
        except (OSError, BrokenPipeError):
            pass
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._pipe.close()
        self._proc = None


class ReplayServer:
    """The replay server in a child process. ``ws_url`` once started; every call has a timeout."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._child = ChildProcess(_serve, (host,), "bench-replay", stop_message=("stop", None))

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/trade-api/ws/v2"

    def start(self, timeout: float = 30.0) -> "ReplayServer":
        _, self.port = self._child.start(timeout)
        return self

    def _call(self, cmd: str, arg: Any = None, timeout: float = 120.0) -> Any:
        return self._child.call((cmd, arg), timeout)

    def configure(self, cfg: StreamConfig) -> dict:
        return self._call("configure", cfg.__dict__.copy())

    def status(self) -> dict:
        return self._call("status")

    def go(self) -> int:
        return self._call("go")

    def report(self) -> list[dict]:
        out = self._call("report")
        for r in out:
            r["chan"] = array.array("b", r["chan"])
            r["seq"] = array.array("q", r["seq"])
            r["ns"] = array.array("q", r["ns"])
        return out

    def wait_status(self, predicate: Any, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if predicate(st):
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"replay server: {what} (status {st})")
            time.sleep(0.02)  # polling another process; no event to wait on

    def stop(self) -> None:
        self._child.stop(timeout=10)
