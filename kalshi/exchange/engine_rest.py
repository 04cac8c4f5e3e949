"""REST routing for the engine: request validation (Kalshi's order and error shapes), filters,
cursor pagination, and the bodies of every endpoint of protocol §2 a bot uses.

Paths are relative to /trade-api/v2. Cursors are opaque base64 of the last item's key; a cursor that
does not decode is accepted and read as "from the start" (Kalshi answers 200 to garbage cursors).
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from kalshi.units import COUNT_ONE, PRICE_ONE, UnitError, format_count, format_money, parse_count, parse_price

from . import engine_shapes as shapes
from .engine_model import ExchangeError, Market, Order

if TYPE_CHECKING:
    from .engine import Engine

Query = dict[str, list[str]]
MAX_LIMIT = 1000
MAX_BATCH = 20
ORDERBOOK_MAX_DEPTH = 100
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # Go's int64: anything outside fails to unmarshal
MAX_EXPIRATION_S = 253_402_300_799  # 9999-12-31T23:59:59Z

TIFS = ("good_till_canceled", "immediate_or_cancel", "fill_or_kill")
STPS = ("taker_at_cross", "maker")
# filter vocabulary → response statuses (protocol §2.3)
STATUS_FILTER = {
    "unopened": ("initialized",),
    "open": ("active",),
    "paused": ("inactive",),
    "closed": ("closed", "determined", "disputed", "amended"),
    "settled": ("finalized",),
}


# ---- small helpers ----------------------------------------------------------------------------


def _one(query: Query, name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _many(query: Query, name: str) -> list[str]:
    out: list[str] = []
    for v in query.get(name, []):
        out.extend(x for x in v.split(",") if x)
    return out


def _bare(op: str, field: str, tag: str) -> ExchangeError:
    return ExchangeError(
        400, "bad_request",
        f"Parameter validation failed for {op}: Key: '{op}Params.{field}' Error:Field validation for '{field}' failed on the '{tag}' tag",
        shape="bare",
    )


def _int_param(query: Query, name: str, op: str, field: str) -> int | None:
    raw = _one(query, name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ExchangeError(400, "bad_request", f"Parameter validation failed for {op}: invalid {name}", shape="bare") from None


def _limit(query: Query, op: str, default: int = 100, maximum: int = MAX_LIMIT) -> int:
    value = _int_param(query, "limit", op, "Limit")
    if value is None:
        return default
    if value > maximum:
        raise _bare(op, "Limit", "lte")
    if value < 1:
        raise _bare(op, "Limit", "gte")
    return value


def _cursor_key(query: Query) -> Any:
    raw = _one(query, "cursor")
    if not raw:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    kind, _, key = text.partition(":")
    if kind == "i":
        try:
            return int(key)
        except ValueError:
            return None
    if kind == "s":
        return key
    return None


def _encode_cursor(key: Any) -> str:
    text = f"i:{key}" if isinstance(key, int) else f"s:{key}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _page(items: Iterable[tuple[Any, Any]], after: Any, descending: bool, limit: int) -> tuple[list, str]:
    """Items arrive as (key, value) in output order; skip up to and including the cursor key."""
    out: list = []
    last_key = None
    for key, value in items:
        if after is not None and type(key) is type(after):
            if (descending and key >= after) or (not descending and key <= after):
                continue
        if len(out) == limit:
            return out, _encode_cursor(last_key)
        out.append(value)
        last_key = key
    return out, ""


def _ts_filter(query: Query, op: str) -> tuple[int | None, int | None]:
    lo = _int_param(query, "min_ts", op, "MinTs")
    hi = _int_param(query, "max_ts", op, "MaxTs")
    return (lo * 1000 if lo is not None else None), (hi * 1000 + 999 if hi is not None else None)


def _in_range(ts_ms: int, lo: int | None, hi: int | None) -> bool:
    return (lo is None or ts_ms >= lo) and (hi is None or ts_ms <= hi)


def _require_user(user: str | None) -> str:
    if user is None:
        raise ExchangeError(401, "authentication_error", "authentication_error", details="NOT_FOUND")
    return user


# ---- body decoding (Go-unmarshal-like type checks) ---------------------------------------------


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _typecheck(body: object, struct: str, fields: dict[str, str]) -> dict:
    """Mimic Go's JSON decode errors (flat 400 bad_request) for fields of the wrong JSON type."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ExchangeError(400, "bad_request", "bad request", shape="flat",
                            details=f"json: cannot unmarshal {_json_kind(body)} into Go value of type {struct}")
    for name, want in fields.items():
        if name not in body or body[name] is None:
            continue
        value = body[name]
        ok = (
            (want == "string" and isinstance(value, str))
            or (want == "bool" and isinstance(value, bool))
            or (want == "int64" and isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX)
            or (want == "array" and isinstance(value, list))
        )
        if not ok:
            go_type = {"string": "string", "bool": "bool", "int64": "int64", "array": "[]"}[want]
            raise ExchangeError(
                400, "bad_request", "bad request", shape="flat",
                details=f"json: cannot unmarshal {_json_kind(value)} into Go struct field {struct}.{name} of type {go_type}",
            )
    return body


CREATE_FIELDS = {
    "ticker": "string", "client_order_id": "string", "side": "string", "count": "string", "price": "string",
    "time_in_force": "string", "expiration_time": "int64", "self_trade_prevention_type": "string",
    "post_only": "bool", "reduce_only": "bool", "cancel_order_on_pause": "bool", "order_group_id": "string",
    "subaccount": "int64", "exchange_index": "int64",
}
AMEND_FIELDS = {
    "ticker": "string", "side": "string", "price": "string", "count": "string", "client_order_id": "string",
    "updated_client_order_id": "string", "expiration_time": "int64", "subaccount": "int64", "exchange_index": "int64",
}
DECREASE_FIELDS = {"reduce_by": "string", "reduce_to": "string", "market_ticker": "string", "exchange_index": "int64"}


def _invalid(details: str) -> ExchangeError:
    return ExchangeError(400, "invalid_order", details=details)


def _expiration_ms(eng: "Engine", seconds: int) -> int:
    """``expiration_time`` (Unix seconds) in ms; in the past or past year 9999 is invalid (an order that
    can never be shown as a timestamp would break every later listing of it)."""
    if seconds > MAX_EXPIRATION_S:
        raise _invalid("expiration_time is too far in the future")
    exp_ms = seconds * 1000
    if exp_ms <= eng.now_ms:
        raise _invalid("expiration_time is in the past")
    return exp_ms


def _price(m: Market, text: object) -> int:
    try:
        price = parse_price(text)
    except UnitError:
        raise ExchangeError(400, "invalid_price") from None
    if price not in m.grid.valid:
        raise ExchangeError(400, "invalid_price")
    return price


def _count(text: object, field: str = "count") -> int:
    try:
        count = parse_count(text, field)
    except UnitError:
        raise ExchangeError(400, "invalid_order_size", details=f"invalid {field}") from None
    return count


def _check_cid(eng: "Engine", user: str, cid: str | None) -> None:
    if cid is None:
        return
    acct = eng.accounts[user]
    if eng.config.dedupe_client_order_ids == "all":
        if cid in acct.used_cids:
            raise ExchangeError(409, "order_already_exists")
    elif cid in acct.open_cids:
        raise ExchangeError(409, "order_already_exists")


def create_order(eng: "Engine", user: str, body: object) -> Order:
    """Validate a V2 create in Kalshi's order (§6.1): types, fields, price, size, duplicate id, then
    balance / market state / post-only inside Engine.place."""
    b = _typecheck(body, "CreateOrderV2Request", CREATE_FIELDS)
    for name in ("ticker", "side", "count", "price", "time_in_force", "self_trade_prevention_type"):
        if not b.get(name):
            raise _invalid(f"{name} is required")
    m = eng.markets.get(b["ticker"])
    if m is None:
        raise ExchangeError(404, "not_found", details="market not found", service=None)
    side = b["side"]
    if side not in ("bid", "ask"):
        raise _invalid("side must be bid or ask")
    tif = b["time_in_force"]
    if tif not in TIFS:
        raise _invalid("invalid time_in_force")
    stp = b["self_trade_prevention_type"]
    if stp not in STPS:
        raise _invalid("invalid self_trade_prevention_type")
    price = _price(m, b["price"])
    count = _count(b["count"])
    if count < 1:
        raise ExchangeError(400, "invalid_order_size", details="count must be at least 0.01")
    exp = b.get("expiration_time")
    exp_ms = None
    if exp:
        if tif != "good_till_canceled":
            raise _invalid("expiration_time is only allowed with good_till_canceled")
        exp_ms = _expiration_ms(eng, exp)
    reduce_only = bool(b.get("reduce_only"))
    if reduce_only and tif != "immediate_or_cancel":
        raise _invalid("reduce_only requires immediate_or_cancel")
    group = b.get("order_group_id") or None
    if group is not None:
        g = eng.accounts[user].groups.get(group)
        if g is None:
            raise ExchangeError(404, "not_found", details="order group not found", service=None)
        if g.blocked:
            raise _invalid("order group is triggered; reset it to place orders")
    cid = b.get("client_order_id") or None
    _check_cid(eng, user, cid)
    return eng.place(
        user, m.ticker, side == "bid", price, count, tif, stp, cid=cid, group=group, exp_ms=exp_ms,
        post_only=bool(b.get("post_only")), reduce_only=reduce_only,
        cancel_on_pause=bool(b.get("cancel_order_on_pause")),
    )


# ---- routes -----------------------------------------------------------------------------------

Handler = Callable[..., tuple[int, dict | None]]
ROUTES: list[tuple[str, tuple[str, ...], str, bool]] = []  # (method, pattern, handler name, private)


def _route(method: str, pattern: str, private: bool) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        ROUTES.append((method, tuple(p for p in pattern.split("/") if p), fn.__name__, private))
        _HANDLERS[fn.__name__] = fn
        return fn

    return deco


_HANDLERS: dict[str, Handler] = {}


API_PREFIX = "/trade-api/v2"


def _parts(path: str) -> list[str]:
    """Path segments relative to /trade-api/v2 (a full path is accepted too), query string dropped."""
    path = path.split("?")[0]
    if path.startswith(API_PREFIX):
        path = path[len(API_PREFIX):]
    return [p for p in path.split("/") if p]


def _find(method: str, path: str) -> tuple[Handler, list[str], bool] | None:
    parts = _parts(path)
    for m, pattern, name, private in ROUTES:
        if m != method or len(pattern) != len(parts):
            continue
        args = []
        for pat, part in zip(pattern, parts):
            if pat == "*":
                args.append(part)
            elif pat != part:
                break
        else:
            return _HANDLERS[name], args, private
    return None


def is_private(method: str, path: str) -> bool:
    found = _find(method.upper(), path)
    if found is not None:
        return found[2]
    parts = _parts(path)
    return bool(parts) and parts[0] in ("portfolio", "account")


def _is_v1_write(method: str, parts: list[str]) -> bool:
    return method in ("POST", "DELETE", "PUT") and len(parts) >= 2 and parts[0] == "portfolio" and parts[1] == "orders"


def request_cost(method: str, path: str, body: object) -> tuple[str, int]:
    """(bucket, tokens) per Kalshi's token costs (protocol §2.14, demo endpoint_costs)."""
    method = method.upper()
    parts = _parts(path)
    if method == "GET":
        if len(parts) == 3 and parts[:2] == ["portfolio", "orders"] and parts[2] != "queue_positions":
            return "read", 2
        return "read", 10
    if parts[:3] == ["portfolio", "events", "orders"]:
        if method == "DELETE" and len(parts) == 4:
            return "write", 2
        if parts[3:] == ["batched"]:
            if method == "DELETE":
                return "write", 2
            n = len(body["orders"]) if isinstance(body, dict) and isinstance(body.get("orders"), list) else 1
            return "write", 10 * max(n, 1)
        return "write", 10
    if _is_v1_write(method, parts):
        return "write", 4 if method == "DELETE" else 20
    return "write", 10


def dispatch(eng: "Engine", method: str, path: str, query: Query, body: object, user: str | None) -> tuple[int, dict | None]:
    parts = _parts(path)
    if _is_v1_write(method, parts):
        raise ExchangeError(410, "deprecated_v1_order_endpoint", "Please switch to the V2 endpoints")
    found = _find(method, path)
    if found is None:
        raise ExchangeError(404, "not_found")
    handler, args, private = found
    if private:
        _require_user(user)
    return handler(eng, query, body, user, *args)


# exchange ---------------------------------------------------------------------------------------


@_route("GET", "exchange/status", False)
def get_status(eng, query, body, user):
    return 200, {"exchange_active": True, "trading_active": True, "exchange_estimated_resume_time": None,
                 "intra_exchange_transfers_active": True}


@_route("GET", "exchange/schedule", False)
def get_schedule(eng, query, body, user):
    day = [{"open_time": "00:00", "close_time": "23:59"}]
    week = {d: day for d in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")}
    week.update({"start_time": "2026-01-01T00:00:00Z", "end_time": "2099-01-01T00:00:00Z"})
    return 200, {"schedule": {"standard_hours": [week], "maintenance_windows": []}}


@_route("GET", "exchange/user_data_timestamp", False)
def get_user_data_ts(eng, query, body, user):
    return 200, {"as_of_time": shapes.rfc3339(eng.now_ms)}


# series and events ------------------------------------------------------------------------------


def _series_json(eng: "Engine", ticker: str) -> dict:
    from .engine import SERIES

    fee_type, fee_mult, structure, title = SERIES[ticker]
    return {
        "ticker": ticker, "frequency": "hourly", "title": title, "category": "Simulated", "tags": [],
        "settlement_sources": [], "contract_url": "", "contract_terms_url": "", "fee_type": fee_type,
        "fee_multiplier": fee_mult, "additional_prohibitions": [], "product_metadata": None,
    }


@_route("GET", "series", False)
def get_series_list(eng, query, body, user):
    from .engine import SERIES

    return 200, {"series": [_series_json(eng, t) for t in SERIES]}


@_route("GET", "series/fee_changes", False)
def get_series_fee_changes(eng, query, body, user):
    return 200, {"series_fee_change_arr": []}


@_route("GET", "series/*", False)
def get_series(eng, query, body, user, ticker):
    from .engine import SERIES

    if ticker not in SERIES:
        raise ExchangeError(404, "not_found")
    return 200, {"series": _series_json(eng, ticker)}


def _event_status(eng: "Engine", ev: dict) -> str:
    statuses = {eng.markets[t].status for t in ev["markets"]}
    if "active" in statuses:
        return "open"
    if statuses == {"finalized"}:
        return "settled"
    return "closed"


def _event_json(eng: "Engine", ev: dict, nested: bool) -> dict:
    out = {
        "event_ticker": ev["event_ticker"], "series_ticker": ev["series_ticker"], "title": ev["title"],
        "sub_title": ev["sub_title"], "collateral_return_type": "", "mutually_exclusive": False,
        "strike_date": shapes.rfc3339(ev["strike_ms"]), "strike_period": "", "available_on_brokers": False,
        "last_updated_ts": shapes.rfc3339(max(eng.markets[t].updated_ms for t in ev["markets"])),
    }
    if nested:
        out["markets"] = [_market(eng, eng.markets[t]) for t in ev["markets"]]
    return out


def _market(eng: "Engine", m: Market) -> dict:
    return shapes.market_json(m, {}, eng.config.settlement_timer_s, eng.now_ms)


@_route("GET", "events", False)
def get_events(eng, query, body, user):
    limit = _limit(query, "GetEvents", default=100, maximum=200)
    nested = _one(query, "with_nested_markets") == "true"
    series = _one(query, "series_ticker")
    status = _one(query, "status")
    if status is not None and status not in ("open", "closed", "settled", "unopened"):
        raise _bare("GetEvents", "Status", "oneof")

    def items() -> Iterator[tuple[int, dict]]:
        for i, ev in enumerate(eng.events.values()):
            if series and ev["series_ticker"] != series:
                continue
            if status and _event_status(eng, ev) != status:
                continue
            yield i, ev

    evs, cursor = _page(items(), _cursor_key(query), False, limit)
    return 200, {"events": [_event_json(eng, ev, nested) for ev in evs], "cursor": cursor, "milestones": []}


@_route("GET", "events/*", False)
def get_event(eng, query, body, user, event_ticker):
    ev = eng.events.get(event_ticker)
    if ev is None:
        raise ExchangeError(404, "not_found")
    return 200, {"event": _event_json(eng, ev, False), "markets": [_market(eng, eng.markets[t]) for t in ev["markets"]]}


# markets ----------------------------------------------------------------------------------------


@_route("GET", "markets", False)
def get_markets(eng, query, body, user):
    op = "GetMarkets"
    limit = _limit(query, op)
    statuses: set[str] | None = None
    wanted = _many(query, "status")
    if wanted:
        statuses = set()
        for s in wanted:
            if s not in STATUS_FILTER:
                raise _bare(op, "Status", "oneof")
            statuses.update(STATUS_FILTER[s])
    tickers = set(_many(query, "tickers"))
    event = _one(query, "event_ticker")
    series = _one(query, "series_ticker")
    ranges = {}
    for fam, attr in (("close", "close_ms"), ("created", "created_ms"), ("settled", "settled_ms"), ("updated", "updated_ms")):
        lo = _int_param(query, f"min_{fam}_ts", op, "Min")
        hi = _int_param(query, f"max_{fam}_ts", op, "Max")
        if lo is not None or hi is not None:
            ranges[attr] = (lo * 1000 if lo is not None else None, hi * 1000 + 999 if hi is not None else None)
    mve = _one(query, "mve_filter")
    if mve is not None and mve not in ("only", "exclude"):
        raise _bare(op, "MveFilter", "oneof")
    if len(ranges) > 1:
        raise ExchangeError(400, "bad_request", f"Parameter validation failed for {op}: timestamp filters are mutually exclusive", shape="bare")

    def items() -> Iterator[tuple[int, Market]]:
        if mve == "only":  # the simulator lists no multivariate (combo) markets
            return
        for m in eng.markets.values():
            if statuses is not None and m.status not in statuses:
                continue
            if tickers and m.ticker not in tickers:
                continue
            if event and m.event_ticker != event:
                continue
            if series and m.series_ticker != series:
                continue
            skip = False
            for attr, (lo, hi) in ranges.items():
                value = getattr(m, attr)
                if value is None or not _in_range(value, lo, hi):
                    skip = True
            if not skip:
                yield m.seq, m

    markets, cursor = _page(items(), _cursor_key(query), False, limit)
    return 200, {"cursor": cursor, "markets": [_market(eng, m) for m in markets]}


@_route("GET", "markets/trades", False)
def get_trades(eng, query, body, user):
    op = "GetTrades"
    limit = _limit(query, op)
    lo, hi = _ts_filter(query, op)
    ticker = _one(query, "ticker")
    if ticker:
        source = eng.market_trades.get(ticker, ())
    else:
        source = eng.trades

    def items() -> Iterator[tuple[int, tuple]]:
        for t in reversed(source):  # newest first
            if _in_range(t[6], lo, hi):
                yield t[0], t

    trades, cursor = _page(items(), _cursor_key(query), True, limit)
    return 200, {"cursor": cursor, "trades": [shapes.trade_json(t) for t in trades]}


@_route("GET", "markets/orderbooks", False)
def get_orderbooks(eng, query, body, user):
    tickers = _many(query, "tickers")
    if not tickers or len(tickers) > 100:
        raise _bare("GetMarketOrderbooks", "Tickers", "max" if tickers else "required")
    out = []
    for t in tickers:
        m = eng._market(t)
        out.append({"ticker": t, **shapes.orderbook_json(m, 0)})
    return 200, {"orderbooks": out}


@_route("GET", "markets/*", False)
def get_market(eng, query, body, user, ticker):
    return 200, {"market": _market(eng, eng._market(ticker))}


@_route("GET", "markets/*/orderbook", False)
def get_orderbook(eng, query, body, user, ticker):
    depth = _int_param(query, "depth", "GetMarketOrderbook", "Depth") or 0
    if depth < 0 or depth > ORDERBOOK_MAX_DEPTH:
        raise _bare("GetMarketOrderbook", "Depth", "lte" if depth > 0 else "gte")
    return 200, shapes.orderbook_json(eng._market(ticker), depth)


# portfolio reads --------------------------------------------------------------------------------


@_route("GET", "portfolio/balance", True)
def get_balance(eng, query, body, user):
    acct = eng.accounts[user]
    available = acct.available
    value = 0
    for p in acct.positions.values():
        if p.q and not p.settled:
            m = eng.markets[p.ticker]
            mark = m.last_price if p.q > 0 else PRICE_ONE - m.last_price
            value += abs(p.q) * mark // COUNT_ONE if m.last_price else p.exposure
    return 200, {
        "balance": available // 100,  # integer cents, truncated
        "balance_breakdown": [{"balance": format_money(available, 4), "exchange_index": 0}],
        "balance_dollars": format_money(available, 4),
        "portfolio_value": value // 100,
        "updated_ts": eng.now_ms // 1000,
    }


@_route("GET", "portfolio/summary/total_resting_order_value", True)
def get_resting_value(eng, query, body, user):
    return 200, {"total_resting_order_value": eng.accounts[user].reserved // 100}


@_route("GET", "portfolio/positions", True)
def get_positions(eng, query, body, user):
    op = "GetPositions"
    limit = _limit(query, op)
    acct = eng.accounts[user]
    settlement = _one(query, "settlement_status") or "unsettled"
    if settlement not in ("unsettled", "settled", "all"):
        raise _bare(op, "SettlementStatus", "oneof")
    count_filter = set(_many(query, "count_filter"))
    if count_filter - {"position", "total_traded"}:
        raise _bare(op, "CountFilter", "oneof")
    ticker = _one(query, "ticker")
    events = set(_many(query, "event_ticker"))
    chosen = []
    for p in sorted(acct.positions.values(), key=lambda p: p.ticker):
        if settlement == "unsettled" and p.settled or settlement == "settled" and not p.settled:
            continue
        if ticker and p.ticker != ticker or events and p.event_ticker not in events:
            continue
        if "position" in count_filter and not p.q or "total_traded" in count_filter and not p.traded:
            continue
        chosen.append(p)
    page, cursor = _page(((p.ticker, p) for p in chosen), _cursor_key(query), False, limit)
    by_event: dict[str, dict] = {}
    for p in chosen:
        e = by_event.setdefault(p.event_ticker, {"cost": 0, "shares": 0, "pnl": 0, "fees": 0})
        e["cost"] += p.exposure
        e["shares"] += abs(p.q)
        e["pnl"] += p.realized
        e["fees"] += p.fees
    return 200, {
        "cursor": cursor,
        "market_positions": [shapes.position_json(p) for p in page],
        "event_positions": [
            {"event_ticker": et, "total_cost_dollars": shapes._money(e["cost"]),
             "total_cost_shares_fp": format_count(e["shares"]), "event_exposure_dollars": shapes._money(e["cost"]),
             "realized_pnl_dollars": shapes._money(e["pnl"]), "fees_paid_dollars": shapes._money(e["fees"])}
            for et, e in by_event.items()
        ],
    }


@_route("GET", "portfolio/orders", True)
def get_orders(eng, query, body, user):
    op = "GetOrders"
    limit = _limit(query, op)
    acct = eng.accounts[user]
    status = _one(query, "status")
    if status is not None and status not in ("resting", "canceled", "executed"):
        raise _bare(op, "Status", "oneof")
    ticker = _one(query, "ticker")
    events = set(_many(query, "event_ticker"))
    lo, hi = _ts_filter(query, op)

    def items() -> Iterator[tuple[int, Order]]:
        for oid in reversed(acct.order_ids):  # newest first
            o = eng.orders[oid]
            if status and o.status != status or ticker and o.ticker != ticker:
                continue
            if events and eng.event_of(o.ticker) not in events:
                continue
            if not _in_range(o.created_ms, lo, hi):
                continue
            yield o.seq, o

    orders, cursor = _page(items(), _cursor_key(query), True, limit)
    return 200, {"cursor": cursor, "orders": [shapes.order_json(o) for o in orders]}


@_route("GET", "portfolio/orders/queue_positions", True)
def get_queue_positions(eng, query, body, user):
    tickers = set(_many(query, "market_tickers"))
    out = []
    for oid in eng.accounts[user].order_ids:
        o = eng.orders[oid]
        if o.status == "resting" and (not tickers or o.ticker in tickers):
            out.append({"order_id": oid, "market_ticker": o.ticker, "queue_position_fp": format_count(_queue_ahead(eng, o))})
    return 200, {"queue_positions": out}


def _own_order(eng: "Engine", user: str, order_id: str) -> Order:
    o = eng.orders.get(order_id)
    if o is None or o.user != user:
        raise ExchangeError(404, "not_found")
    return o


def _queue_ahead(eng: "Engine", o: Order) -> int:
    book = eng.markets[o.ticker].book
    level = (book.yes if o.is_bid else book.no).levels.get(o.book_price, ())
    ahead = 0
    for other in level:
        if other is o:
            break
        ahead += other.remaining
    return ahead


@_route("GET", "portfolio/orders/*", True)
def get_order(eng, query, body, user, order_id):
    return 200, {"order": shapes.order_json(_own_order(eng, user, order_id))}


@_route("GET", "portfolio/orders/*/queue_position", True)
def get_queue_position(eng, query, body, user, order_id):
    o = _own_order(eng, user, order_id)
    if o.status != "resting":
        raise ExchangeError(404, "not_found")
    return 200, {"queue_position_fp": format_count(_queue_ahead(eng, o))}


@_route("GET", "portfolio/fills", True)
def get_fills(eng, query, body, user):
    op = "GetFills"
    limit = _limit(query, op)
    acct = eng.accounts[user]
    tickers = set(_many(query, "ticker"))
    order_id = _one(query, "order_id")
    lo, hi = _ts_filter(query, op)

    def items() -> Iterator[tuple[int, list]]:
        for f in reversed(acct.fills):
            if tickers and f[3] not in tickers or order_id and f[2] != order_id:
                continue
            if _in_range(f[9], lo, hi):
                yield f[0], f

    fills, cursor = _page(items(), _cursor_key(query), True, limit)
    return 200, {"cursor": cursor, "fills": [shapes.fill_json(f) for f in fills]}


@_route("GET", "portfolio/settlements", True)
def get_settlements(eng, query, body, user):
    op = "GetPortfolioSettlements"
    limit = _limit(query, op)
    acct = eng.accounts[user]
    ticker = _one(query, "ticker")
    event = _one(query, "event_ticker")
    lo, hi = _ts_filter(query, op)

    def items() -> Iterator[tuple[int, dict]]:
        for s in reversed(acct.settlements):
            if ticker and s["row"]["ticker"] != ticker or event and s["event_ticker"] != event:
                continue
            if _in_range(s["ts_ms"], lo, hi):
                yield s["seq"], s["row"]

    rows, cursor = _page(items(), _cursor_key(query), True, limit)
    return 200, {"cursor": cursor, "settlements": rows}


# V2 order writes --------------------------------------------------------------------------------


@_route("POST", "portfolio/events/orders", True)
def post_order(eng, query, body, user):
    o = create_order(eng, user, body)
    return 201, shapes.create_response(o, eng.now_ms)


@_route("DELETE", "portfolio/events/orders", True)
def delete_all_orders(eng, query, body, user):
    eng.cancel_all(user, _one(query, "ticker") or _one(query, "market_ticker"))
    return 204, None


@_route("POST", "portfolio/events/orders/batched", True)
def post_batch(eng, query, body, user):
    b = _typecheck(body, "BatchCreateOrdersV2Request", {"orders": "array"})
    orders = b.get("orders") or []
    if not orders:
        raise _invalid("orders is required")
    if len(orders) > MAX_BATCH:
        raise _invalid(f"at most {MAX_BATCH} orders per batch")
    out = []
    for item in orders:
        cid = item.get("client_order_id") if isinstance(item, dict) else None
        try:
            o = create_order(eng, user, item)
        except ExchangeError as exc:
            out.append({"order_id": None, "client_order_id": cid if isinstance(cid, str) else None, "error": exc.inner()})
            continue
        row = shapes.create_response(o, eng.now_ms)
        row["error"] = None
        out.append(row)
    return 201, {"orders": out}


@_route("DELETE", "portfolio/events/orders/batched", True)
def delete_batch(eng, query, body, user):
    b = _typecheck(body, "BatchCancelOrdersV2Request", {"orders": "array", "ids": "array"})
    items = b.get("orders") or [{"order_id": i} for i in (b.get("ids") or [])]
    if not items:
        raise _invalid("orders is required")
    out = []
    for item in items:
        oid = item.get("order_id") if isinstance(item, dict) else None
        if not isinstance(oid, str):
            out.append({"order_id": None, "error": ExchangeError(400, "invalid_order", details="order_id is required").inner()})
            continue
        try:
            o, reduced = eng.cancel(user, oid)
        except ExchangeError as exc:
            out.append({"order_id": oid, "error": exc.inner()})
            continue
        out.append({"order_id": oid, "client_order_id": o.cid or "", "reduced_by": format_count(reduced),
                    "ts_ms": eng.now_ms, "error": None})
    return 200, {"orders": out}


@_route("DELETE", "portfolio/events/orders/*", True)
def delete_order(eng, query, body, user, order_id):
    o, reduced = eng.cancel(user, order_id)
    return 200, {"order_id": o.order_id, "reduced_by": format_count(reduced), "ts_ms": eng.now_ms}


@_route("POST", "portfolio/events/orders/*/amend", True)
def amend_order(eng, query, body, user, order_id):
    b = _typecheck(body, "AmendOrderV2Request", AMEND_FIELDS)
    o = _own_order(eng, user, order_id)
    if o.status != "resting":
        raise ExchangeError(404, "not_found")
    for name in ("ticker", "side", "price", "count"):
        if not b.get(name):
            raise _invalid(f"{name} is required")
    if b["ticker"] != o.ticker:
        raise ExchangeError(400, "order_ticker_mismatch")
    if b["side"] not in ("bid", "ask") or (b["side"] == "bid") != o.is_bid:
        raise ExchangeError(400, "order_side_mismatch")
    if b.get("client_order_id") and b["client_order_id"] != (o.cid or ""):
        raise ExchangeError(400, "order_id_and_client_order_id_mismatch")
    m = eng.markets[o.ticker]
    price = _price(m, b["price"])
    total = _count(b["count"])
    new_cid = b.get("updated_client_order_id") or None
    if new_cid is not None and new_cid != o.cid:
        _check_cid(eng, user, new_cid)
    exp: Any = False
    if "expiration_time" in b:
        raw = b["expiration_time"]
        if not raw:
            exp = None
        else:
            exp = _expiration_ms(eng, raw)
    o = eng.amend(user, order_id, price, total, new_cid, exp)
    out = shapes.create_response(o, eng.now_ms)
    out.setdefault("client_order_id", "")
    return 200, out


@_route("POST", "portfolio/events/orders/*/decrease", True)
def decrease_order(eng, query, body, user, order_id):
    b = _typecheck(body, "DecreaseOrderV2Request", DECREASE_FIELDS)
    has_by, has_to = b.get("reduce_by") is not None, b.get("reduce_to") is not None
    if has_by == has_to:
        raise _invalid("exactly one of reduce_by and reduce_to is required")
    _own_order(eng, user, order_id)
    by = _count(b["reduce_by"], "reduce_by") if has_by else None
    to = _count(b["reduce_to"], "reduce_to") if has_to else None
    if by is not None and by < 1:
        raise ExchangeError(400, "invalid_order_size", details="reduce_by must be at least 0.01")
    o = eng.decrease(user, order_id, by, to)
    return 200, {"order_id": o.order_id, "client_order_id": o.cid or "", "remaining_count": format_count(o.remaining),
                 "ts_ms": eng.now_ms}


# order groups -----------------------------------------------------------------------------------


def _group_limit(b: dict, op: str) -> int:
    if b.get("contracts_limit_fp") is not None:
        try:
            limit = parse_count(b["contracts_limit_fp"], "contracts_limit_fp")
        except UnitError as exc:
            raise _invalid(str(exc)) from None
    elif b.get("contracts_limit") is not None:
        raw = b["contracts_limit"]
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ExchangeError(400, "bad_request", "bad request", shape="flat",
                                details=f"json: cannot unmarshal {_json_kind(raw)} into Go struct field {op}.contracts_limit of type int64")
        limit = raw * COUNT_ONE
    else:
        raise _invalid("contracts_limit is required")
    if limit < 1:
        raise _invalid("contracts_limit must be positive")
    return limit


@_route("POST", "portfolio/order_groups/create", True)
def create_group(eng, query, body, user):
    b = _typecheck(body, "CreateOrderGroupRequest", {"contracts_limit_fp": "string"})
    g = eng.create_group(user, _group_limit(b, "CreateOrderGroupRequest"))
    return 201, {"order_group_id": g.group_id, "subaccount": 0, "exchange_index": 0}


@_route("GET", "portfolio/order_groups", True)
def list_groups(eng, query, body, user):
    groups = eng.accounts[user].groups.values()
    return 200, {"order_groups": [
        {"id": g.group_id, "contracts_limit_fp": format_count(g.limit), "is_auto_cancel_enabled": g.blocked,
         "exchange_index": 0} for g in groups
    ]}


@_route("GET", "portfolio/order_groups/*", True)
def get_group(eng, query, body, user, gid):
    g = eng.group(user, gid)
    return 200, {"is_auto_cancel_enabled": g.blocked, "contracts_limit_fp": format_count(g.limit),
                 "orders": [oid for oid in g.members if oid in eng.orders and eng.orders[oid].status == "resting"],
                 "exchange_index": 0}


@_route("PUT", "portfolio/order_groups/*/reset", True)
def reset_group(eng, query, body, user, gid):
    eng.reset_group(user, gid)
    return 200, {}


@_route("PUT", "portfolio/order_groups/*/trigger", True)
def trigger_group(eng, query, body, user, gid):
    eng.trigger_group(user, gid)
    return 200, {}


@_route("PUT", "portfolio/order_groups/*/limit", True)
def limit_group(eng, query, body, user, gid):
    b = _typecheck(body, "UpdateOrderGroupLimitRequest", {"contracts_limit_fp": "string"})
    eng.group(user, gid)
    eng.set_group_limit(user, gid, _group_limit(b, "UpdateOrderGroupLimitRequest"))
    return 200, {}


@_route("DELETE", "portfolio/order_groups/*", True)
def delete_group(eng, query, body, user, gid):
    eng.delete_group(user, gid)
    return 200, {}


# account ----------------------------------------------------------------------------------------


@_route("GET", "account/limits", True)
def get_limits(eng, query, body, user):
    return 200, {"grants": [], "read": {"bucket_capacity": 200, "refill_rate": 200}, "usage_tier": "basic",
                 "write": {"bucket_capacity": 100, "refill_rate": 100}}


@_route("GET", "account/endpoint_costs", True)
def get_endpoint_costs(eng, query, body, user):
    prefix = "/trade-api/v2"
    costs = [
        ("DELETE", "/portfolio/events/orders/:order_id", 2),
        ("DELETE", "/portfolio/events/orders/batched", 2),
        ("POST", "/portfolio/orders", 20),
        ("DELETE", "/portfolio/orders/:order_id", 4),
        ("GET", "/portfolio/orders/:order_id", 2),
        ("POST", "/portfolio/orders/:order_id/amend", 20),
        ("POST", "/portfolio/orders/:order_id/decrease", 20),
        ("DELETE", "/portfolio/orders/batched", 4),
        ("POST", "/portfolio/orders/batched", 20),
    ]
    return 200, {"default_cost": 10, "endpoint_costs": [
        {"cost": c, "method": m, "path": prefix + p} for m, p, c in costs
    ]}


__all__ = ["dispatch", "is_private", "request_cost", "create_order", "ROUTES"]
