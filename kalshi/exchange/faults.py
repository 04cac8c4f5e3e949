"""Fault injection for the local exchange: a Python API and a loopback-only control endpoint.

``FaultInjector`` holds the fault state the server consults on every REST request and drives the
WebSocket faults through the server's hub. It lives on the exchange's event-loop thread;
``LocalExchange.faults`` is a ``ThreadSafeFaults`` that runs each call on that thread, so tests can
call it from anywhere. Every injected fault is counted (``snapshot()["applied"]``).

REST paths given as ``path_prefix`` may include the ``/trade-api/v2`` prefix or not.

Control endpoint (HTTP on the exchange port; 403 unless the TCP peer is 127.0.0.1 or ::1; JSON
bodies, every field optional unless marked; answers ``{"ok": true, ...}`` or 400 with
``{"error": "..."}``):

=============================================  ==========================================================
``GET  /_control/faults``                       counters of applied faults and the pending/armed ones
``POST /_control/reset``                        clear every pending fault (counters are kept)
``POST /_control/save``                         write the state file now (if one is configured)
``POST /_control/rest/fail``                    ``{"count":1,"status":500|503,"method":"POST","path_prefix":"/portfolio"}``
                                                the next matching REST calls answer the status WITHOUT running
``POST /_control/rest/lost_response``           ``{"count":1,"method":"POST","path_prefix":"/portfolio/events/orders",
                                                "mode":"drop"|"delay","delay_ms":30000}``: run the call, then drop the
                                                connection unanswered (``drop``) or answer only after ``delay_ms``
``POST /_control/rest/flood_429``               ``{"seconds":30,"writes_only":false}``: every REST call (every write, reads
                                                still served, if ``writes_only``) answers 429 for that long (0 stops)
``POST /_control/rest/slow``                    ``{"delay_ms":500}``: delay every REST answer (0 stops)
``POST /_control/rest/trickle``                 ``{"count":1,"chunk_bytes":8,"interval_ms":200,"method":..,"path_prefix":..}``
                                                send the next matching answers a few bytes at a time (slowloris)
``POST /_control/rest/error_2xx``               F20 ``{"count":1,"status":201,"method":"POST","path_prefix":"/portfolio/events/orders",
                                                "execute":false}``: the next matching calls answer ``status`` (200/201) with
                                                ``{"error": {...}}`` and no payload; the call runs only if ``execute``
``POST /_control/rest/pagination_loop``         F21 ``{"count":null|N,"path_prefix":null}``: list GETs (answers with a
                                                ``cursor``) return the same non-empty cursor, for N answers or until reset
``POST /_control/clock``                        ``{"skew_ms":90000}``: shift the exchange clock (Date header, auth window)
``POST /_control/ws/drop``                      ``{"after_snapshots":null|N}``: drop every WS connection now, or the next
                                                connection that has sent N orderbook snapshots (mid-snapshot drop)
``POST /_control/ws/seq``                       ``{"kind":"skip"|"duplicate"|"reorder","sid":null|N}``: on the next message
                                                of that sid (every seq'd sid if null) skip a seq / send it twice /
                                                send k+1 after k+2
``POST /_control/ws/stall``                     stop sending anything on every socket (pings and pongs too), keep TCP open
``POST /_control/ws/resume``                    end the stall
``POST /_control/ws/bad_frame``                 ``{"kind":"malformed"|"binary"|"invalid_utf8"|"oversized"}`` (oversized = 2 MiB
                                                text frame) to every connection
``POST /_control/ws/error25``                   ``{"sid":null|N}``: send error 25 and end that subscription (all if null)
``POST /_control/ws/duplicate``                 F04/F05 ``{"channel":"trade"|"fill"|...,"count":1}``: the next ``count`` events
                                                of that channel are sent twice to every subscriber (a seq'd channel
                                                gives the copy the next seq: a genuine re-send, not a seq fault)
``POST /_control/flow``                         ``{"flow":"off"|"calm"|"firehose"}``: pause / resume / retune the synthetic
                                                flow (added by the server: not a fault, same loopback rule)
=============================================  ==========================================================

The cursor F21 returns (``LOOP_CURSOR``) does not decode, so the engine reads it as "from the start":
a client that follows it gets the first page again, forever.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from aiohttp import web

__all__ = [
    "FaultInjector", "ThreadSafeFaults", "control_routes", "control_route", "only", "is_loopback_peer", "REST_PREFIX",
    "ERROR_2XX_BODY", "LOOP_CURSOR",
]

log = logging.getLogger("kalshi.exchange.faults")

REST_PREFIX = "/trade-api/v2"
SEQ_FAULTS = ("skip", "duplicate", "reorder")
BAD_FRAMES = ("malformed", "binary", "invalid_utf8", "oversized")
# F20: what a success status carrying an error looks like (the Auramaur trap): no order in it.
ERROR_2XX_BODY = {"error": {"code": "internal_server_error", "message": "order could not be confirmed",
                            "service": "exchange"}}
LOOP_CURSOR = "cGFnaW5hdGlvbi1sb29w"  # F21: non-empty, never advances


class WsHub(Protocol):
    """What the injector needs from the server's WebSocket side."""

    def drop_connections(self, after_snapshots: int | None) -> int: ...
    def set_seq_fault(self, kind: str, sid: int | None) -> int: ...
    def set_stalled(self, stalled: bool) -> None: ...
    def send_bad_frame(self, kind: str) -> int: ...
    def overflow_subscriptions(self, sid: int | None) -> int: ...
    def duplicate_events(self, channel: str, count: int) -> None: ...
    def save_state(self) -> bool: ...
    def clear_faults(self) -> None: ...


def _norm_prefix(prefix: str | None) -> str | None:
    if prefix is None:
        return None
    if not isinstance(prefix, str) or not prefix.startswith("/"):
        raise ValueError("path_prefix must be a string starting with '/'")
    if prefix.startswith(REST_PREFIX):
        prefix = prefix[len(REST_PREFIX) :] or "/"
    return prefix


@dataclass(slots=True)
class _Rule:
    """Applies to the next ``remaining`` REST calls matching method and path prefix (None: until reset)."""

    remaining: int | None
    method: str | None = None
    path_prefix: str | None = None
    status: int = 500
    mode: str = "drop"
    delay_ms: int = 0
    chunk_bytes: int = 8
    interval_ms: int = 200
    execute: bool = False

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return self.path_prefix is None or path.startswith(self.path_prefix)

    def describe(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}


def _positive_int(value: Any, name: str, allow_zero: bool = False) -> int:
    if type(value) is not int or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} integer")
    return value


def _method(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.isalpha():
        raise ValueError("method must be an HTTP method name")
    return value.upper()


class FaultInjector:
    """Fault state and actions. Not thread-safe: call it on the exchange loop (or via ThreadSafeFaults)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._hub: WsHub | None = None
        self.applied: Counter[str] = Counter()
        self._fail: list[_Rule] = []
        self._lost: list[_Rule] = []
        self._trickle: list[_Rule] = []
        self._error_2xx: list[_Rule] = []
        self._pagination: list[_Rule] = []
        self._flood_until = 0.0
        self._flood_writes_only = False
        self.slow_ms = 0
        self.clock_skew_ms = 0

    def attach(self, hub: WsHub) -> None:
        self._hub = hub

    def _need_hub(self) -> WsHub:
        if self._hub is None:
            raise RuntimeError("the exchange is not running")
        return self._hub

    # ---- REST faults (the server asks these on every request) ------------------------------
    def fail_rest(self, count: int = 1, status: int = 500, method: str | None = None, path_prefix: str | None = None) -> None:
        """Answer the next ``count`` matching REST calls with ``status`` (500/503) without running them."""
        if status not in (500, 502, 503, 504):
            raise ValueError("status must be 500, 502, 503 or 504")
        self._fail.append(_Rule(_positive_int(count, "count"), _method(method), _norm_prefix(path_prefix), status=status))

    def lose_response(
        self,
        count: int = 1,
        method: str | None = "POST",
        path_prefix: str | None = "/portfolio/events/orders",
        mode: str = "drop",
        delay_ms: int = 30_000,
    ) -> None:
        """Run the next matching calls, then drop the connection unanswered or answer after ``delay_ms``."""
        if mode not in ("drop", "delay"):
            raise ValueError("mode must be 'drop' or 'delay'")
        self._lost.append(
            _Rule(_positive_int(count, "count"), _method(method), _norm_prefix(path_prefix), mode=mode,
                  delay_ms=_positive_int(delay_ms, "delay_ms", allow_zero=True))
        )

    def flood_429(self, seconds: float, writes_only: bool = False) -> None:
        """Answer every REST call (only writes if ``writes_only``: F08) with 429 for ``seconds`` (0 ends a flood)."""
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 <= seconds <= 3600:
            raise ValueError("seconds must be a number in [0, 3600]")
        if type(writes_only) is not bool:
            raise ValueError("writes_only must be a boolean")
        self._flood_until = self._clock() + seconds if seconds else 0.0
        self._flood_writes_only = writes_only

    def slow_responses(self, delay_ms: int) -> None:
        """Delay every REST answer by ``delay_ms`` (0 ends it)."""
        self.slow_ms = _positive_int(delay_ms, "delay_ms", allow_zero=True)

    def trickle(
        self, count: int = 1, chunk_bytes: int = 8, interval_ms: int = 200,
        method: str | None = None, path_prefix: str | None = None,
    ) -> None:
        """Send the next matching answers ``chunk_bytes`` at a time, one chunk per ``interval_ms``."""
        self._trickle.append(
            _Rule(_positive_int(count, "count"), _method(method), _norm_prefix(path_prefix),
                  chunk_bytes=_positive_int(chunk_bytes, "chunk_bytes"), interval_ms=_positive_int(interval_ms, "interval_ms", True))
        )

    def error_2xx(
        self, count: int = 1, status: int = 201, method: str | None = "POST",
        path_prefix: str | None = "/portfolio/events/orders", execute: bool = False,
    ) -> None:
        """F20: the next ``count`` matching calls answer ``status`` (200/201) with an error object and no
        payload. The call itself runs only when ``execute`` (the order then exists but was never reported)."""
        if status not in (200, 201):
            raise ValueError("status must be 200 or 201")
        if type(execute) is not bool:
            raise ValueError("execute must be a boolean")
        self._error_2xx.append(
            _Rule(_positive_int(count, "count"), _method(method), _norm_prefix(path_prefix), status=status, execute=execute)
        )

    def pagination_loop(self, count: int | None = None, path_prefix: str | None = None) -> None:
        """F21: list GETs matching ``path_prefix`` answer the same non-empty cursor (``LOOP_CURSOR``) for the
        next ``count`` list answers, or until ``reset()`` when ``count`` is None."""
        remaining = None if count is None else _positive_int(count, "count")
        self._pagination.append(_Rule(remaining, "GET", _norm_prefix(path_prefix)))

    def skew_clock(self, skew_ms: int) -> None:
        """Shift the exchange clock by ``skew_ms`` on top of the configured skew (replaces an earlier fault skew)."""
        if type(skew_ms) is not int or abs(skew_ms) > 10 * 365 * 86_400_000:
            raise ValueError("skew_ms must be an integer number of milliseconds")
        self.clock_skew_ms = skew_ms
        if skew_ms:
            self.applied["clock_skew"] += 1

    def take_rest_failure(self, method: str, path: str) -> int | None:
        rule = self._take(self._fail, method, path)
        if rule is None:
            return None
        self.applied[f"rest_{rule.status}"] += 1
        return rule.status

    def take_lost_response(self, method: str, path: str) -> _Rule | None:
        rule = self._take(self._lost, method, path)
        if rule is not None:
            self.applied[f"lost_response_{rule.mode}"] += 1
        return rule

    def take_trickle(self, method: str, path: str) -> _Rule | None:
        rule = self._take(self._trickle, method, path)
        if rule is not None:
            self.applied["trickle"] += 1
        return rule

    def take_error_2xx(self, method: str, path: str) -> _Rule | None:
        rule = self._take(self._error_2xx, method, path)
        if rule is not None:
            self.applied["error_2xx"] += 1
        return rule

    def take_pagination_loop(self, method: str, path: str) -> bool:
        """Asked only for answers that carry a cursor, so a count counts list pages."""
        if self._take(self._pagination, method, path) is None:
            return False
        self.applied["pagination_loop"] += 1
        return True

    def flooding(self, method: str = "POST") -> bool:
        if self._flood_writes_only and method == "GET":
            return False
        if self._flood_until and self._clock() < self._flood_until:
            self.applied["flood_429"] += 1
            return True
        return False

    def note_slow(self) -> None:
        self.applied["slow"] += 1

    @staticmethod
    def _take(rules: list[_Rule], method: str, path: str) -> _Rule | None:
        for i, rule in enumerate(rules):
            if rule.matches(method, path):
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        del rules[i]
                return rule
        return None

    # ---- WebSocket faults (delegated to the server's hub) ------------------------------------
    def drop_ws(self, after_snapshots: int | None = None) -> int:
        """Drop every WS connection now (returns how many), or arm a drop after N snapshots (returns 0)."""
        if after_snapshots is not None:
            _positive_int(after_snapshots, "after_snapshots")
        n = self._need_hub().drop_connections(after_snapshots)
        if after_snapshots is None:
            self.applied["ws_drop"] += n
        return n

    def seq_fault(self, kind: str, sid: int | None = None) -> int:
        """Arm a skip/duplicate/reorder on the next message of ``sid`` (every seq'd sid if None)."""
        if kind not in SEQ_FAULTS:
            raise ValueError(f"kind must be one of {SEQ_FAULTS}")
        if sid is not None:
            _positive_int(sid, "sid")
        return self._need_hub().set_seq_fault(kind, sid)

    def stall_ws(self) -> None:
        """Stop sending anything (data, pings, pongs) on every socket; the TCP connections stay open."""
        self._need_hub().set_stalled(True)
        self.applied["ws_stall"] += 1

    def resume_ws(self) -> None:
        self._need_hub().set_stalled(False)

    def send_bad_frame(self, kind: str) -> int:
        """Send a malformed / binary / invalid-UTF-8 / 2 MiB frame to every connection."""
        if kind not in BAD_FRAMES:
            raise ValueError(f"kind must be one of {BAD_FRAMES}")
        n = self._need_hub().send_bad_frame(kind)
        self.applied[f"bad_frame_{kind}"] += n
        return n

    def send_error25(self, sid: int | None = None) -> int:
        """Send error 25 (buffer overflow, terminal) and end subscription ``sid`` (every one if None)."""
        if sid is not None:
            _positive_int(sid, "sid")
        n = self._need_hub().overflow_subscriptions(sid)
        self.applied["error25"] += n
        return n

    def duplicate_ws_events(self, channel: str, count: int = 1) -> None:
        """F04/F05: send each of the next ``count`` events of ``channel`` twice to every subscriber."""
        self._need_hub().duplicate_events(channel, _positive_int(count, "count"))

    def save_state(self) -> bool:
        return self._need_hub().save_state()

    # ---- bookkeeping ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Clear every pending fault; counters are kept."""
        self._fail.clear()
        self._lost.clear()
        self._trickle.clear()
        self._error_2xx.clear()
        self._pagination.clear()
        self._flood_until = 0.0
        self._flood_writes_only = False
        self.slow_ms = 0
        self.clock_skew_ms = 0
        if self._hub is not None:
            self._hub.clear_faults()

    def count(self, name: str) -> int:
        return self.applied[name]

    def snapshot(self) -> dict:
        return {
            "applied": dict(self.applied),
            "pending": {
                "fail": [r.describe() for r in self._fail],
                "lost_response": [r.describe() for r in self._lost],
                "trickle": [r.describe() for r in self._trickle],
                "error_2xx": [r.describe() for r in self._error_2xx],
                "pagination_loop": [r.describe() for r in self._pagination],
                "flood_429_s": max(0.0, self._flood_until - self._clock()) if self._flood_until else 0.0,
                "flood_429_writes_only": self._flood_writes_only,
                "slow_ms": self.slow_ms,
                "clock_skew_ms": self.clock_skew_ms,
            },
        }


class ThreadSafeFaults:
    """``FaultInjector``'s public methods, each run on the exchange loop thread via ``runner``."""

    def __init__(self, injector: FaultInjector, runner: Callable[[Callable[[], Any]], Any]) -> None:
        self._injector = injector
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        attr = getattr(self._injector, name)
        if not callable(attr):
            return self._runner(lambda: getattr(self._injector, name))

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._runner(lambda: attr(*args, **kwargs))

        call.__name__ = name
        call.__doc__ = attr.__doc__
        return call

    def __dir__(self) -> list[str]:
        return [n for n in dir(self._injector) if not n.startswith("_")]


# ---- control endpoint ------------------------------------------------------------------------
def is_loopback_peer(remote: str | None) -> bool:
    """True only for a TCP peer on 127.0.0.0/8 or ::1 (X-Forwarded-For and friends are ignored)."""
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _ok(**extra: Any) -> web.Response:
    return web.json_response({"ok": True, **extra})


def control_route(method: str, path: str, action: Callable[[dict], dict | None]) -> web.RouteDef:
    """One loopback-only ``/_control`` route: JSON object body in, ``{"ok": true, **result}`` or 400 out."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if not is_loopback_peer(request.remote):
            return web.json_response({"error": "control endpoint is loopback-only"}, status=403)
        params: dict = {}
        if request.can_read_body:
            raw = await request.read()
            if raw.strip():
                try:
                    params = json.loads(raw, parse_constant=_reject_constant)
                except (ValueError, RecursionError):
                    return web.json_response({"error": "body is not JSON"}, status=400)
                if not isinstance(params, dict):
                    return web.json_response({"error": "body must be a JSON object"}, status=400)
        try:
            result = action(params)
        except (ValueError, TypeError, RuntimeError) as exc:
            return web.json_response({"error": str(exc)[:300]}, status=400)
        return _ok(**(result or {}))

    return web.route(method, path, handler)


def only(params: dict, *names: str) -> dict:
    """``params`` when it holds no field outside ``names`` (a typo must not silently do nothing)."""
    unknown = set(params) - set(names)
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(map(str, unknown)))[:200]}")
    return params


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def control_routes(injector: FaultInjector) -> list[web.RouteDef]:
    """aiohttp routes for ``/_control/...`` (see the module docstring)."""
    body_route = control_route
    return [
        body_route("GET", "/_control/faults", lambda p: {"faults": injector.snapshot()}),
        body_route("POST", "/_control/reset", lambda p: injector.reset()),
        body_route("POST", "/_control/save", lambda p: {"saved": injector.save_state()}),
        body_route("POST", "/_control/rest/fail",
                   lambda p: injector.fail_rest(**only(p, "count", "status", "method", "path_prefix"))),
        body_route("POST", "/_control/rest/lost_response",
                   lambda p: injector.lose_response(**only(p, "count", "method", "path_prefix", "mode", "delay_ms"))),
        body_route("POST", "/_control/rest/flood_429",
                   lambda p: injector.flood_429(**only(p, "seconds", "writes_only"))),
        body_route("POST", "/_control/rest/slow", lambda p: injector.slow_responses(**only(p, "delay_ms"))),
        body_route("POST", "/_control/rest/trickle",
                   lambda p: injector.trickle(**only(p, "count", "chunk_bytes", "interval_ms", "method", "path_prefix"))),
        body_route("POST", "/_control/rest/error_2xx",
                   lambda p: injector.error_2xx(**only(p, "count", "status", "method", "path_prefix", "execute"))),
        body_route("POST", "/_control/rest/pagination_loop",
                   lambda p: injector.pagination_loop(**only(p, "count", "path_prefix"))),
        body_route("POST", "/_control/clock", lambda p: injector.skew_clock(**only(p, "skew_ms"))),
        body_route("POST", "/_control/ws/drop",
                   lambda p: {"dropped": injector.drop_ws(**only(p, "after_snapshots"))}),
        body_route("POST", "/_control/ws/seq", lambda p: {"armed": injector.seq_fault(**only(p, "kind", "sid"))}),
        body_route("POST", "/_control/ws/stall", lambda p: injector.stall_ws()),
        body_route("POST", "/_control/ws/resume", lambda p: injector.resume_ws()),
        body_route("POST", "/_control/ws/bad_frame", lambda p: {"sent": injector.send_bad_frame(**only(p, "kind"))}),
        body_route("POST", "/_control/ws/error25", lambda p: {"ended": injector.send_error25(**only(p, "sid"))}),
        body_route("POST", "/_control/ws/duplicate",
                   lambda p: injector.duplicate_ws_events(**only(p, "channel", "count"))),
    ]
