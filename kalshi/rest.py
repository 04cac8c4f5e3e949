"""Kalshi REST client (``requests``): signed calls, hard deadlines, safe retries, typed results.

Rules it enforces (reliability.md rules 1, 2, 7, 9, 10; F06–F09, F19–F23):
- Every call has a total deadline covering connect, headers and body (streamed with a deadline
  check per read and a size cap), retries included — a server trickling bytes cannot hang a call.
- Reads (GET) retry on connection errors, timeouts, 429 and 5xx with full-jitter exponential backoff
  (``Retry-After`` honoured when present), bounded by ``read_retries`` and the deadline.
- Writes never retry blindly. A timeout, reset, 5xx, unparseable body or a 2xx without the expected
  object after the request may have reached the exchange is ``UnknownOutcomeError``: the caller
  must query (``find_order_by_client_order_id``) before any resend. A connection that could not be
  opened is ``NotSentError`` (nothing reached the exchange).
- A 401 ``header_timestamp_expired`` (a definitive rejection) re-estimates the clock offset from the
  response ``Date`` and retries the signed request once — also for writes.
- Error bodies in every shape Kalshi uses map to typed exceptions whose text is safe to log.
- One debug log line per attempt (method, path, status, ms); never headers or bodies.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import requests

from .auth import ClockOffset, Credentials, redact_text
from .units import PRICE_ONE, format_count, format_price, safe_repr
from .wire import bodies as B
from .wire.errors import WireError

__all__ = [
    "KalshiRest",
    "OrderRequest",
    "parse_error_body",
    "KalshiApiError",
    "AuthenticationError",
    "ClockSkewError",
    "NotFoundError",
    "DuplicateClientOrderIdError",
    "InsufficientBalanceError",
    "InvalidOrderError",
    "RateLimitedError",
    "ServerError",
    "UnknownOutcomeError",
    "TransportError",
    "NotSentError",
    "InvalidResponseError",
    "PaginationError",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
MiB = 1024 * 1024

# ---------------------------------------------------------------- exceptions


def _clean(text: object, limit: int = 300) -> str | None:
    """Server-provided text made safe for logs: no secrets, no control characters, bounded."""
    if text is None:
        return None
    text = redact_text(str(text))
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class KalshiApiError(Exception):
    """A Kalshi API call that did not succeed. ``status`` is None when no HTTP answer arrived."""

    retryable = False

    def __init__(
        self,
        status: int | None,
        code: str | None,
        message: str | None,
        details: str | None = None,
        *,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        self.status = status
        self.code = _clean(code, 120)
        self.message = _clean(message)
        self.details = _clean(details)
        self.method = method
        self.path = path
        super().__init__(self._text())

    def _text(self) -> str:
        parts = [f"HTTP {self.status}" if self.status is not None else "no HTTP response"]
        if self.code:
            parts.append(self.code)
        text = " ".join(parts)
        if self.message:
            text += f": {self.message}"
        if self.details:
            text += f" ({self.details})"
        if self.method and self.path:
            text += f" [{self.method} {self.path}]"
        return text

    def __str__(self) -> str:
        return self._text()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._text()!r})"


class AuthenticationError(KalshiApiError):
    """401/403: bad signature, unknown key, missing headers, forbidden."""


class ClockSkewError(AuthenticationError):
    """401 ``header_timestamp_expired``: our signing clock is outside the server's window."""


class NotFoundError(KalshiApiError):
    """404: unknown order/market, or cancel of an already canceled/executed order."""


class DuplicateClientOrderIdError(KalshiApiError):
    """409 ``order_already_exists``: the client_order_id was used before (even by a dead order)."""


class InsufficientBalanceError(KalshiApiError):
    pass


class InvalidOrderError(KalshiApiError):
    """400 order rejections: invalid_order (e.g. post only cross), invalid_price, bad_request, ..."""


class RateLimitedError(KalshiApiError):
    retryable = True

    def __init__(self, *args: Any, retry_after_s: float | None = None, **kwargs: Any) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(*args, **kwargs)


class ServerError(KalshiApiError):
    """5xx on a read (after retries)."""

    retryable = True


class UnknownOutcomeError(KalshiApiError):
    """A write whose outcome is unknown: the order may or may not exist. Query before resending."""

    def __init__(self, *args: Any, client_order_id: str | None = None, **kwargs: Any) -> None:
        self.client_order_id = client_order_id
        super().__init__(*args, **kwargs)


class TransportError(KalshiApiError):
    """No usable HTTP answer on a read: connection failure, timeout, deadline, truncated body."""

    retryable = True


class NotSentError(TransportError):
    """The connection could not be opened: the request never reached the exchange."""


class InvalidResponseError(KalshiApiError):
    """A read answered with a body that is not the expected JSON (HTML page, wrong shape, too big)."""


class PaginationError(KalshiApiError):
    """A cursor walk that would not end: a repeated cursor or more pages than allowed."""


_AUTH_CODES = frozenset({"authentication_error", "signature_is_missing_from_headers", "header_timestamp_expired"})
_BALANCE_CODES = frozenset({"insufficient_balance", "available_balance_too_low"})
_INVALID_ORDER_CODES = frozenset(
    {
        "invalid_order",
        "invalid_price",
        "invalid_order_size",
        "bad_request",
        "invalid_content_type",
        "invalid_parameters",
        "order_id_and_client_order_id_mismatch",
        "order_side_mismatch",
        "order_ticker_mismatch",
        "market_closed",
        "trading_is_paused",
    }
)


def _classify(status: int, code: str | None) -> type[KalshiApiError]:
    base = code.split(":", 1)[0].strip().lower() if code else None
    if base == "header_timestamp_expired":
        return ClockSkewError
    if status in (401, 403) or base in _AUTH_CODES:
        return AuthenticationError
    if status == 404 or base == "not_found":
        return NotFoundError
    if base == "order_already_exists":
        return DuplicateClientOrderIdError
    if base in _BALANCE_CODES:
        return InsufficientBalanceError
    if base in _INVALID_ORDER_CODES:
        return InvalidOrderError
    if status == 429:
        return RateLimitedError
    if status >= 500:
        return ServerError
    return KalshiApiError


def _loads(raw: bytes) -> Any:
    """Strict JSON: UTF-8 only, no NaN/Infinity."""

    def reject(name: str) -> Any:
        raise ValueError(f"non-finite number {name}")

    return json.loads(raw.decode("utf-8"), parse_constant=reject)


def parse_error_body(status: int, body: bytes | str, *, method: str | None = None, path: str | None = None,
                     retry_after_s: float | None = None) -> KalshiApiError:
    """Map an error response (any of Kalshi's body shapes, or an HTML page) to a typed exception."""
    raw = body.encode("utf-8", "replace") if isinstance(body, str) else bytes(body)
    info: B.ApiErrorInfo | None = None
    try:
        obj = _loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        obj = None
        details = _describe_non_json(raw)
        info = B.ApiErrorInfo(code=None, message="non-JSON error body", details=details)
    else:
        info = B.decode_error_info(obj)
        if info is None:
            info = B.ApiErrorInfo(code=None, message="error body of unknown shape" if raw.strip() else "empty body",
                                  details=safe_repr(obj, 120) if obj is not None else None)
    cls = _classify(status, info.code)
    kwargs: dict[str, Any] = {"method": method, "path": path}
    if cls is RateLimitedError:
        kwargs["retry_after_s"] = retry_after_s
    return cls(status, info.code, info.message, info.details, **kwargs)


def _describe_non_json(raw: bytes) -> str:
    text = raw[:2000].decode("utf-8", "replace")
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    if title:
        return "HTML page: " + " ".join(title.group(1).split())[:100]
    if "<html" in text.lower() or "<!doctype" in text.lower():
        return "HTML page"
    return safe_repr(text, 100)


# ---------------------------------------------------------------- requests


_TIME_IN_FORCE = frozenset({"good_till_canceled", "immediate_or_cancel", "fill_or_kill"})
_STP = frozenset({"taker_at_cross", "maker"})
_SEGMENT_RE = re.compile(r"[A-Za-z0-9._~:-]{1,200}")


def _segment(value: object, name: str) -> str:
    """A value used as one URL path segment (ticker, order id): refuse anything that could change
    the path (``/``, ``?``, ``..``)."""
    if not isinstance(value, str) or not _SEGMENT_RE.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"{name} is not a valid identifier: {safe_repr(value)}")
    return quote(value, safe="")


def _units(value: object, name: str, *, positive: bool = True) -> int:
    if type(value) is not int:
        raise TypeError(f"{name} must be an int in fixed-point units, got {type(value).__name__}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be positive")
    return value


def _price_units(value: object, name: str = "price") -> int:
    price = _units(value, name)
    if not 0 < price < PRICE_ONE:
        raise ValueError(f"{name} must be strictly between 0 and {PRICE_ONE} units ($1)")
    return price


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRequest:
    """A V2 create-order request. ``count`` in 0.01-contract units, ``price`` the YES price in
    $0.0001 units; ``side`` 'bid' (buy YES) or 'ask' (sell YES = buy NO at 1 − price)."""

    ticker: str
    side: str
    count: int
    price: int
    time_in_force: str
    client_order_id: str
    self_trade_prevention_type: str = "taker_at_cross"
    post_only: bool = False
    reduce_only: bool = False
    order_group_id: str | None = None
    expiration_time: int | None = None  # Unix seconds, GTC only
    cancel_order_on_pause: bool = False

    def __post_init__(self) -> None:
        _segment(self.ticker, "ticker")
        if self.side not in ("bid", "ask"):
            raise ValueError("side must be 'bid' or 'ask'")
        _units(self.count, "count")
        _price_units(self.price)
        if self.time_in_force not in _TIME_IN_FORCE:
            raise ValueError(f"time_in_force must be one of {sorted(_TIME_IN_FORCE)}")
        if not isinstance(self.client_order_id, str) or not self.client_order_id or len(self.client_order_id) > 128:
            raise ValueError("client_order_id must be a non-empty string (the order's idempotency key)")
        if self.self_trade_prevention_type not in _STP:
            raise ValueError(f"self_trade_prevention_type must be one of {sorted(_STP)}")
        if self.expiration_time is not None:
            _units(self.expiration_time, "expiration_time")
            if self.time_in_force != "good_till_canceled":
                raise ValueError("expiration_time is only allowed with good_till_canceled")
        if self.reduce_only and self.time_in_force != "immediate_or_cancel":
            raise ValueError("reduce_only requires immediate_or_cancel")
        if self.order_group_id is not None:
            _segment(self.order_group_id, "order_group_id")

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ticker": self.ticker,
            "client_order_id": self.client_order_id,
            "side": self.side,
            "count": format_count(self.count),
            "price": format_price(self.price),
            "time_in_force": self.time_in_force,
            "self_trade_prevention_type": self.self_trade_prevention_type,
            "post_only": self.post_only,
            "reduce_only": self.reduce_only,
            "cancel_order_on_pause": self.cancel_order_on_pause,
        }
        if self.order_group_id is not None:
            body["order_group_id"] = self.order_group_id
        if self.expiration_time is not None:
            body["expiration_time"] = self.expiration_time
        return body


# ---------------------------------------------------------------- the client


class _AttemptFailed(Exception):
    """Internal: an attempt got no usable HTTP answer."""

    def __init__(self, reason: str, *, sent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent


class _BodyTooLarge(Exception):
    pass


_NO_BODY = object()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(min(int(value), 86_400))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, min(when.timestamp() - time.time(), 86_400.0))


def _was_connect_failure(exc: BaseException) -> bool:
    """True when the exception chain shows the TCP connection never opened (nothing was sent)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    seen = 0
    stack: list[BaseException | None] = [exc]
    while stack and seen < 20:
        e = stack.pop()
        if e is None:
            continue
        seen += 1
        name = type(e).__name__
        if name in ("NewConnectionError", "NameResolutionError", "ConnectTimeoutError", "ConnectionRefusedError"):
            return True
        stack.extend([getattr(e, "reason", None), e.__cause__, e.__context__])
        stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
    return False


def _socket_of(resp: requests.Response) -> socket.socket | None:
    conn = getattr(resp.raw, "_connection", None) or getattr(resp.raw, "connection", None)
    sock = getattr(conn, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _no_netrc_auth(request: Any) -> Any:
    """An auth hook that adds nothing, so requests never falls back to ~/.netrc."""
    return request


class KalshiRest:
    """Blocking Kalshi REST client. Thread-safe enough to share: requests' connection pool is
    thread-safe and the only shared mutable state (the clock offset) is locked. Call ``close()``
    (or use ``with``) to release pooled connections."""

    def __init__(
        self,
        base_url: str,
        credentials: Credentials | None,
        *,
        connect_timeout: float = 3.05,
        total_timeout: float = 10.0,
        read_retries: int = 3,
        backoff_base: float = 0.2,
        backoff_cap: float = 5.0,
        session: requests.Session | None = None,
        clock_offset: ClockOffset | None = None,
        max_body_bytes: int = 16 * MiB,
        max_pages: int = 1000,
        max_clock_offset_ms: int = 600_000,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("base_url must be an http(s) URL like https://host/trade-api/v2")
        if parts.query or parts.fragment:
            raise ValueError("base_url must not contain a query or fragment")
        if parts.username or parts.password:
            raise ValueError("base_url must not contain credentials")
        if total_timeout <= 0 or connect_timeout <= 0 or max_body_bytes <= 0 or max_pages <= 0 or read_retries < 0:
            raise ValueError("timeouts, max_body_bytes and max_pages must be positive, read_retries >= 0")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._prefix = parts.path.rstrip("/")
        self._creds = credentials
        self._connect_timeout = connect_timeout
        self._total_timeout = total_timeout
        self._read_retries = read_retries
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._own_session = session is None
        self._session = session if session is not None else requests.Session()
        if self._own_session:
            # requests would add ~/.netrc credentials as an Authorization header; Kalshi auth is the signature only.
            self._session.auth = _no_netrc_auth
            # Nor do *_PROXY / REQUESTS_CA_BUNDLE variables reroute signed requests: the WebSocket client connects
            # directly too, so both paths go where the settings say and nowhere else (and requests skips its
            # per-request environment lookups).
            self._session.trust_env = False
        self._clock = clock_offset or (credentials.clock_offset if credentials else None) or ClockOffset()
        self._max_body = max_body_bytes
        self._max_pages = max_pages
        self._max_offset_ms = max_clock_offset_ms
        self._sleep = sleep
        self._rng = rng or random.Random()

    # -- lifecycle

    def close(self) -> None:
        if self._own_session:
            self._session.close()

    def __enter__(self) -> KalshiRest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        who = self._creds.key_id_masked if self._creds else "public"
        return f"KalshiRest({self._origin}{self._prefix}, key={who})"

    @property
    def clock_offset(self) -> ClockOffset:
        return self._clock

    # -- core

    def _backoff(self, attempt: int) -> float:
        return self._rng.uniform(0.0, min(self._backoff_cap, self._backoff_base * (2**attempt)))

    def _request(
        self,
        method: str,
        endpoint: str,
        decode: Callable[[Any], T],
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = _NO_BODY,
        client_order_id: str | None = None,
    ) -> T:
        write = method != "GET"
        path = self._prefix + endpoint
        query = urlencode({k: v for k, v in (params or {}).items() if v is not None})
        url = self._origin + path + ("?" + query if query else "")
        data: bytes | None = None
        if body is not _NO_BODY or method in ("POST", "PUT"):
            # Kalshi answers 400 invalid_content_type to a body-less JSON POST: always send {}.
            data = json.dumps({} if body is _NO_BODY else body, separators=(",", ":")).encode("utf-8")
        deadline = time.monotonic() + self._total_timeout
        attempt = 0
        skew_retried = False
        while True:
            try:
                status, headers, raw = self._attempt(method, path, url, data, deadline, attempt)
            except _AttemptFailed as exc:
                if write:
                    if not exc.sent:
                        raise NotSentError(None, "not_sent", exc.reason, method=method, path=path) from None
                    raise UnknownOutcomeError(None, "no_response", exc.reason, method=method, path=path,
                                              client_order_id=client_order_id) from None
                if attempt < self._read_retries and self._pause(self._backoff(attempt), deadline):
                    attempt += 1
                    continue
                cls = NotSentError if not exc.sent else TransportError
                raise cls(None, "no_response", exc.reason, method=method, path=path) from None
            except _BodyTooLarge:
                if write:
                    raise UnknownOutcomeError(None, "body_too_large",
                                              f"response body over {self._max_body} bytes", method=method,
                                              path=path, client_order_id=client_order_id) from None
                raise InvalidResponseError(None, "body_too_large", f"response body over {self._max_body} bytes",
                                           method=method, path=path) from None

            if 200 <= status < 300:
                try:
                    return self._success(status, raw, decode, write, method, path, client_order_id)
                except InvalidResponseError:
                    if attempt < self._read_retries and self._pause(self._backoff(attempt), deadline):
                        attempt += 1
                        continue
                    raise

            retry_after = _retry_after(headers.get("Retry-After"))
            error = parse_error_body(status, raw, method=method, path=path, retry_after_s=retry_after)
            if isinstance(error, ClockSkewError) and not skew_retried and self._reestimate(headers):
                skew_retried = True
                continue
            if write:
                if status >= 500 or 300 <= status < 400:
                    raise UnknownOutcomeError(status, error.code, error.message, error.details, method=method,
                                              path=path, client_order_id=client_order_id)
                raise error
            if (status == 429 or status >= 500) and attempt < self._read_retries:
                delay = self._backoff(attempt)
                if retry_after is not None:
                    delay = max(delay, retry_after)
                if self._pause(delay, deadline):
                    attempt += 1
                    continue
            raise error

    def _pause(self, delay: float, deadline: float) -> bool:
        """Sleep ``delay`` if the next attempt would still have time before the deadline."""
        if time.monotonic() + delay >= deadline - 0.05:
            return False
        if delay > 0:
            self._sleep(delay)
        return True

    def _reestimate(self, headers: Mapping[str, str]) -> bool:
        """After a timestamp rejection: rebuild the offset from this response's Date."""
        now = self._clock.wall_ms()
        offset = self._clock.observe(headers.get("Date", ""), now, now, reset=True)
        if offset is None:
            log.warning("clock skew rejection without a usable Date header; not retrying")
            return False
        if abs(offset) > self._max_offset_ms:
            log.error("server clock differs by %d ms (max %d); not retrying", offset, self._max_offset_ms)
            return False
        log.warning("request timestamp rejected; clock offset re-estimated at %d ms, retrying once", offset)
        return True

    def _success(self, status: int, raw: bytes, decode: Callable[[Any], T], write: bool, method: str, path: str,
                 client_order_id: str | None) -> T:
        def bad(code: str, message: str, details: str | None = None) -> KalshiApiError:
            if write:
                return UnknownOutcomeError(status, code, message, details, method=method, path=path,
                                           client_order_id=client_order_id)
            return InvalidResponseError(status, code, message, details, method=method, path=path)

        if not raw.strip():
            obj: Any = {}
        else:
            try:
                obj = _loads(raw)
            except (ValueError, UnicodeDecodeError, RecursionError):
                raise bad("invalid_response", "2xx body is not JSON", _describe_non_json(raw)) from None
        if type(obj) is dict and obj.get("error") not in (None, "", {}):
            # A success status carrying an error: never a success (Auramaur trap, F20).
            info = B.decode_error_info(obj) or B.ApiErrorInfo(code=None, message="error in 2xx body")
            if write:
                raise UnknownOutcomeError(status, info.code, info.message, info.details, method=method, path=path,
                                          client_order_id=client_order_id)
            cls = _classify(status, info.code)
            raise cls(status, info.code, info.message, info.details, method=method, path=path)
        try:
            return decode(obj)
        except WireError as exc:
            raise bad("invalid_response", "unexpected body shape", exc.reason) from None

    def _attempt(self, method: str, path: str, url: str, data: bytes | None, deadline: float,
                 attempt: int) -> tuple[int, Mapping[str, str], bytes]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _AttemptFailed("deadline exceeded before sending", sent=False)
        headers = {"Accept": "application/json", "Accept-Encoding": "identity", "User-Agent": "trader-v3"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self._creds is not None:
            headers.update(self._creds.sign_headers(method, path, now_ms=self._clock.now_ms()))
        started = time.monotonic()
        sent_ms = self._clock.wall_ms()
        try:
            resp = self._session.request(
                method, url, data=data, headers=headers, stream=True, allow_redirects=False,
                timeout=(min(self._connect_timeout, remaining), remaining),
            )
        except requests.RequestException as exc:
            sent = not _was_connect_failure(exc)
            reason = "timeout" if isinstance(exc, requests.Timeout) else "connection error"
            log.debug("%s %s -> %s after %.0f ms (attempt %d)", method, path, reason,
                      (time.monotonic() - started) * 1000, attempt + 1)
            raise _AttemptFailed(f"{reason}: {type(exc).__name__}", sent=sent) from None
        try:
            raw = self._read_body(resp, deadline)
        finally:
            resp.close()
        received_ms = self._clock.wall_ms()
        date = resp.headers.get("Date")
        if date:
            self._clock.observe(date, sent_ms, received_ms)
        log.debug("%s %s -> %d in %.0f ms (attempt %d)", method, path, resp.status_code,
                  (time.monotonic() - started) * 1000, attempt + 1)
        return resp.status_code, resp.headers, raw

    def _read_body(self, resp: requests.Response, deadline: float) -> bytes:
        length = resp.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self._max_body:
            raise _BodyTooLarge()
        chunks: list[bytes] = []
        total = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _AttemptFailed("deadline exceeded while reading the response body", sent=True)
            sock = _socket_of(resp)
            if sock is not None:
                try:
                    sock.settimeout(remaining)  # one read never outlives the call's deadline
                except OSError:
                    pass
            try:
                chunk = resp.raw.read1(65536, decode_content=True)
            except Exception as exc:  # noqa: BLE001 - urllib3/http.client/socket errors alike
                raise _AttemptFailed(f"body read failed: {type(exc).__name__}", sent=True) from None
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > self._max_body:
                raise _BodyTooLarge()
            chunks.append(chunk)

    def _get(self, endpoint: str, decode: Callable[[Any], T], params: Mapping[str, Any] | None = None) -> T:
        return self._request("GET", endpoint, decode, params=params)

    def _paginate(self, fetch: Callable[[str | None], Any], attr: str) -> Iterator[Any]:
        seen: set[str] = set()
        cursor: str | None = None
        pages = 0
        while True:
            if pages >= self._max_pages:
                raise PaginationError(None, "page_cap", f"more than {self._max_pages} pages; stopping")
            page = fetch(cursor)
            pages += 1
            yield from getattr(page, attr)
            cursor_next = page.cursor
            if not cursor_next:
                return
            if cursor_next in seen:
                raise PaginationError(None, "cursor_loop", "server returned a cursor already seen; stopping")
            seen.add(cursor_next)
            cursor = cursor_next

    # -- exchange and market data

    def get_exchange_status(self) -> B.ExchangeStatus:
        return self._get("/exchange/status", B.decode_exchange_status)

    def get_markets(self, status: str | None = None, tickers: Sequence[str] | None = None,
                    event_ticker: str | None = None, series_ticker: str | None = None, limit: int | None = None,
                    cursor: str | None = None, *, min_close_ts: int | None = None,
                    max_close_ts: int | None = None) -> B.MarketsPage:
        if isinstance(tickers, str):
            tickers = [tickers]
        params = {"status": status, "tickers": ",".join(tickers) if tickers else None, "event_ticker": event_ticker,
                  "series_ticker": series_ticker, "limit": limit, "cursor": cursor or None,
                  "min_close_ts": min_close_ts, "max_close_ts": max_close_ts}
        return self._get("/markets", B.decode_markets_page, params)

    def iter_markets(self, **filters: Any) -> Iterator[B.Market]:
        return self._paginate(lambda c: self.get_markets(cursor=c, **filters), "markets")

    def get_market(self, ticker: str) -> B.Market:
        return self._get(f"/markets/{_segment(ticker, 'ticker')}", B.decode_market_response)

    def get_orderbook(self, ticker: str, depth: int | None = None) -> B.Orderbook:
        seg = _segment(ticker, "ticker")
        return self._get(f"/markets/{seg}/orderbook", lambda o: B.decode_orderbook(o, ticker), {"depth": depth})

    def get_trades(self, ticker: str | None = None, min_ts: int | None = None, max_ts: int | None = None,
                   limit: int | None = None, cursor: str | None = None) -> B.TradesPage:
        params = {"ticker": ticker, "min_ts": min_ts, "max_ts": max_ts, "limit": limit, "cursor": cursor or None}
        return self._get("/markets/trades", B.decode_trades_page, params)

    def iter_trades(self, **filters: Any) -> Iterator[B.PublicTrade]:
        return self._paginate(lambda c: self.get_trades(cursor=c, **filters), "trades")

    def get_series(self, series_ticker: str) -> B.Series:
        return self._get(f"/series/{_segment(series_ticker, 'series_ticker')}", B.decode_series)

    def get_series_fee_changes(self) -> tuple[B.SeriesFeeChange, ...]:
        return self._get("/series/fee_changes", B.decode_series_fee_changes)

    # -- portfolio reads

    def get_balance(self) -> B.Balance:
        return self._get("/portfolio/balance", B.decode_balance)

    def get_positions(self, ticker: str | None = None, event_ticker: str | None = None,
                      count_filter: str | None = None, settlement_status: str | None = None,
                      limit: int | None = None, cursor: str | None = None) -> B.PositionsPage:
        params = {"ticker": ticker, "event_ticker": event_ticker, "count_filter": count_filter,
                  "settlement_status": settlement_status, "limit": limit, "cursor": cursor or None}
        return self._get("/portfolio/positions", B.decode_positions_page, params)

    def iter_positions(self, **filters: Any) -> Iterator[B.Position]:
        return self._paginate(lambda c: self.get_positions(cursor=c, **filters), "positions")

    def get_orders(self, status: str | None = None, ticker: str | None = None, event_ticker: str | None = None,
                   min_ts: int | None = None, max_ts: int | None = None, limit: int | None = None,
                   cursor: str | None = None) -> B.OrdersPage:
        params = {"status": status, "ticker": ticker, "event_ticker": event_ticker, "min_ts": min_ts,
                  "max_ts": max_ts, "limit": limit, "cursor": cursor or None}
        return self._get("/portfolio/orders", B.decode_orders_page, params)

    def iter_orders(self, **filters: Any) -> Iterator[B.Order]:
        return self._paginate(lambda c: self.get_orders(cursor=c, **filters), "orders")

    def get_order(self, order_id: str) -> B.Order:
        return self._get(f"/portfolio/orders/{_segment(order_id, 'order_id')}", B.decode_order_response)

    def find_order_by_client_order_id(self, client_order_id: str, ticker: str | None = None,
                                      min_ts: int | None = None) -> B.Order | None:
        """Resolve an unknown outcome: page through orders of any status (Kalshi has no
        client_order_id filter) and return the one carrying ``client_order_id``, or None."""
        if not client_order_id:
            raise ValueError("client_order_id is required")
        for order in self.iter_orders(ticker=ticker, min_ts=min_ts, limit=200):
            if order.client_order_id == client_order_id:
                return order
        return None

    def get_fills(self, ticker: str | None = None, order_id: str | None = None, min_ts: int | None = None,
                  max_ts: int | None = None, limit: int | None = None, cursor: str | None = None) -> B.FillsPage:
        params = {"ticker": ticker, "order_id": order_id, "min_ts": min_ts, "max_ts": max_ts, "limit": limit,
                  "cursor": cursor or None}
        return self._get("/portfolio/fills", B.decode_fills_page, params)

    def iter_fills(self, **filters: Any) -> Iterator[B.Fill]:
        return self._paginate(lambda c: self.get_fills(cursor=c, **filters), "fills")

    def get_settlements(self, ticker: str | None = None, event_ticker: str | None = None,
                        min_ts: int | None = None, max_ts: int | None = None, limit: int | None = None,
                        cursor: str | None = None) -> B.SettlementsPage:
        params = {"ticker": ticker, "event_ticker": event_ticker, "min_ts": min_ts, "max_ts": max_ts,
                  "limit": limit, "cursor": cursor or None}
        return self._get("/portfolio/settlements", B.decode_settlements_page, params)

    def iter_settlements(self, **filters: Any) -> Iterator[B.Settlement]:
        return self._paginate(lambda c: self.get_settlements(cursor=c, **filters), "settlements")

    def get_account_limits(self) -> B.AccountLimits:
        return self._get("/account/limits", B.decode_account_limits)

    def get_endpoint_costs(self) -> B.EndpointCosts:
        return self._get("/account/endpoint_costs", B.decode_endpoint_costs)

    # -- order writes (V2). Never retried; see UnknownOutcomeError.

    def create_order(self, ticker: str, side: str, count: int, price: int, time_in_force: str,
                     client_order_id: str, self_trade_prevention_type: str = "taker_at_cross",
                     post_only: bool = False, reduce_only: bool = False, order_group_id: str | None = None,
                     expiration_time: int | None = None, cancel_order_on_pause: bool = False) -> B.CreateOrderResult:
        request = OrderRequest(ticker=ticker, side=side, count=count, price=price, time_in_force=time_in_force,
                               client_order_id=client_order_id,
                               self_trade_prevention_type=self_trade_prevention_type, post_only=post_only,
                               reduce_only=reduce_only, order_group_id=order_group_id,
                               expiration_time=expiration_time, cancel_order_on_pause=cancel_order_on_pause)
        return self.submit_order(request)

    def submit_order(self, request: OrderRequest) -> B.CreateOrderResult:
        return self._request("POST", "/portfolio/events/orders", B.decode_create_order, body=request.to_json(),
                             client_order_id=request.client_order_id)

    def cancel_order(self, order_id: str, ticker: str | None = None) -> B.CancelOrderResult:
        endpoint = f"/portfolio/events/orders/{_segment(order_id, 'order_id')}"
        params = {"market_ticker": ticker}
        return self._request("DELETE", endpoint, B.decode_cancel_order, params=params)

    def amend_order(self, order_id: str, *, ticker: str, side: str, price: int, count: int,
                    client_order_id: str | None = None, updated_client_order_id: str | None = None,
                    expiration_time: int | None = None) -> B.AmendResult:
        """``count`` is the new total (filled + desired remaining), as on Kalshi."""
        if side not in ("bid", "ask"):
            raise ValueError("side must be 'bid' or 'ask'")
        body: dict[str, Any] = {"ticker": ticker, "side": side, "price": format_price(_price_units(price)),
                                "count": format_count(_units(count, "count"))}
        if client_order_id is not None:
            body["client_order_id"] = client_order_id
        if updated_client_order_id is not None:
            body["updated_client_order_id"] = updated_client_order_id
        if expiration_time is not None:
            body["expiration_time"] = _units(expiration_time, "expiration_time", positive=False)
        endpoint = f"/portfolio/events/orders/{_segment(order_id, 'order_id')}/amend"
        return self._request("POST", endpoint, B.decode_amend_order, body=body,
                             client_order_id=updated_client_order_id or client_order_id)

    def decrease_order(self, order_id: str, *, reduce_by: int | None = None, reduce_to: int | None = None,
                       ticker: str | None = None) -> B.DecreaseResult:
        if (reduce_by is None) == (reduce_to is None):
            raise ValueError("pass exactly one of reduce_by and reduce_to")
        body: dict[str, Any] = {}
        if reduce_by is not None:
            body["reduce_by"] = format_count(_units(reduce_by, "reduce_by"))
        else:
            body["reduce_to"] = format_count(_units(reduce_to, "reduce_to", positive=False))
        if ticker is not None:
            body["market_ticker"] = ticker
        endpoint = f"/portfolio/events/orders/{_segment(order_id, 'order_id')}/decrease"
        return self._request("POST", endpoint, B.decode_decrease_order, body=body)

    def batch_create_orders(self, orders: Sequence[OrderRequest]) -> B.BatchCreateResult:
        if not orders or not all(isinstance(o, OrderRequest) for o in orders):
            raise ValueError("orders must be a non-empty sequence of OrderRequest")
        body = {"orders": [o.to_json() for o in orders]}
        return self._request("POST", "/portfolio/events/orders/batched", B.decode_batch_create, body=body)

    def batch_cancel_orders(self, order_ids: Sequence[str]) -> B.BatchCancelResult:
        if not order_ids:
            raise ValueError("order_ids must not be empty")
        body = {"orders": [{"order_id": _segment(o, "order_id")} for o in order_ids]}
        return self._request("DELETE", "/portfolio/events/orders/batched", B.decode_batch_cancel, body=body)

    def cancel_all_orders(self) -> None:
        self._request("DELETE", "/portfolio/events/orders", B.decode_empty)

    # -- order groups

    def create_order_group(self, contracts_limit: int) -> B.OrderGroupCreated:
        body = {"contracts_limit_fp": format_count(_units(contracts_limit, "contracts_limit"))}
        return self._request("POST", "/portfolio/order_groups/create", B.decode_order_group_created, body=body)

    def get_order_group(self, order_group_id: str) -> B.OrderGroup:
        seg = _segment(order_group_id, "order_group_id")
        return self._get(f"/portfolio/order_groups/{seg}", lambda o: B.decode_order_group(o, order_group_id))

    def list_order_groups(self) -> tuple[B.OrderGroup, ...]:
        return self._get("/portfolio/order_groups", B.decode_order_groups)

    def reset_order_group(self, order_group_id: str) -> None:
        seg = _segment(order_group_id, "order_group_id")
        self._request("PUT", f"/portfolio/order_groups/{seg}/reset", B.decode_empty)

    def trigger_order_group(self, order_group_id: str) -> None:
        seg = _segment(order_group_id, "order_group_id")
        self._request("PUT", f"/portfolio/order_groups/{seg}/trigger", B.decode_empty)

    def set_order_group_limit(self, order_group_id: str, contracts_limit: int) -> None:
        seg = _segment(order_group_id, "order_group_id")
        body = {"contracts_limit_fp": format_count(_units(contracts_limit, "contracts_limit"))}
        self._request("PUT", f"/portfolio/order_groups/{seg}/limit", B.decode_empty, body=body)

    def delete_order_group(self, order_group_id: str) -> None:
        seg = _segment(order_group_id, "order_group_id")
        self._request("DELETE", f"/portfolio/order_groups/{seg}", B.decode_empty)
