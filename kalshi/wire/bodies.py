"""Kalshi REST response bodies → immutable typed values in integer units.

One ``decode_*`` function per endpoint shape. Each takes the already-parsed JSON object and returns
frozen ``msgspec.Struct`` values; prices and money are ints in $0.0001, counts ints in 0.01 contract
(see ``kalshi.units``), times are Unix milliseconds. A wrong shape (missing required field, wrong
type, bad number) raises ``WireError`` naming the field, e.g. ``order.fill_count_fp: ...``.
Unknown extra fields are ignored.

Era C (fixed-point strings) is primary. Legacy integer forms (era A/B: cents prices, integer
counts, cents money) are accepted when the modern field is absent; every such fallback is counted
in a schema-drift counter (``deprecated_fields_seen()``) so drift shows up in status, not in P&L.
"""

from __future__ import annotations

import re
from datetime import date
from fractions import Fraction
from typing import Any, Callable

import msgspec

from ..fees import FEE_TYPES, parse_fee_multiplier
from ..units import (
    PRICE_ONE,
    UnitError,
    cents_to_price,
    contracts_to_count,
    parse_count,
    parse_money,
    parse_price,
    parse_signed_count,
)
from .errors import WireError
from .legacy import DriftCounter, direction, legacy_cents_money, legacy_count

__all__ = [
    "ApiErrorInfo",
    "ExchangeStatus",
    "Market",
    "MarketsPage",
    "Orderbook",
    "PublicTrade",
    "TradesPage",
    "Series",
    "SeriesFeeChange",
    "Balance",
    "Position",
    "EventPosition",
    "PositionsPage",
    "Order",
    "OrdersPage",
    "CreateOrderResult",
    "CancelOrderResult",
    "AmendResult",
    "DecreaseResult",
    "BatchCreateItem",
    "BatchCreateResult",
    "BatchCancelItem",
    "BatchCancelResult",
    "Fill",
    "FillsPage",
    "Settlement",
    "SettlementsPage",
    "OrderGroup",
    "OrderGroupCreated",
    "AccountLimits",
    "EndpointCost",
    "EndpointCosts",
    "deprecated_fields_seen",
    "reset_deprecated_fields",
    "parse_time_ms",
    "decode_error_info",
    "decode_exchange_status",
    "decode_market",
    "decode_market_response",
    "decode_markets_page",
    "decode_orderbook",
    "decode_trades_page",
    "decode_series",
    "decode_series_fee_changes",
    "decode_balance",
    "decode_positions_page",
    "decode_order",
    "decode_order_response",
    "decode_orders_page",
    "decode_create_order",
    "decode_cancel_order",
    "decode_amend_order",
    "decode_decrease_order",
    "decode_batch_create",
    "decode_batch_cancel",
    "decode_fills_page",
    "decode_settlements_page",
    "decode_order_group",
    "decode_order_groups",
    "decode_order_group_created",
    "decode_account_limits",
    "decode_endpoint_costs",
    "decode_empty",
]

# ---------------------------------------------------------------- schema drift counter

_DRIFT = DriftCounter()
_deprecated = _DRIFT.note
deprecated_fields_seen = _DRIFT.seen  # {"<where>.<field>": times used because the modern twin was missing}
reset_deprecated_fields = _DRIFT.reset


# ---------------------------------------------------------------- field helpers

_MISSING = object()


def _obj(value: object, where: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise WireError(f"{where}: expected an object, got {type(value).__name__}", value)
    return value


def _list(value: object, where: str) -> list[Any]:
    if type(value) is not list:
        raise WireError(f"{where}: expected an array, got {type(value).__name__}", value)
    return value


def _check_ticker(value: str, key: str, where: str) -> str:
    """Tickers reach logs and URLs: printable ASCII without spaces, 1..200 characters (as on the WebSocket)."""
    if not value or len(value) > 200 or not (value.isascii() and value.isprintable()) or " " in value:
        raise WireError(f"{where}.{key}: not a printable ASCII ticker of at most 200 characters", value)
    return value


def _str(d: dict[str, Any], key: str, where: str) -> str:
    value = d.get(key, _MISSING)
    if value is _MISSING or value is None:
        raise WireError(f"{where}.{key}: required field missing")
    if type(value) is not str:
        raise WireError(f"{where}.{key}: expected a string, got {type(value).__name__}", value)
    return _check_ticker(value, key, where) if key.endswith("ticker") else value


def _opt_str(d: dict[str, Any], key: str, where: str) -> str | None:
    value = d.get(key)
    if value is None:
        return None
    if type(value) is not str:
        raise WireError(f"{where}.{key}: expected a string, got {type(value).__name__}", value)
    if key.endswith("ticker") and value:  # Kalshi sends "" for an absent optional ticker
        return _check_ticker(value, key, where)
    return value


def _bool(d: dict[str, Any], key: str, where: str, default: bool | None = None) -> bool:
    value = d.get(key)
    if value is None:
        if default is None:
            raise WireError(f"{where}.{key}: required field missing")
        return default
    if type(value) is not bool:
        raise WireError(f"{where}.{key}: expected true/false, got {type(value).__name__}", value)
    return value


def _opt_bool(d: dict[str, Any], key: str, where: str) -> bool | None:
    value = d.get(key)
    if value is None:
        return None
    if type(value) is not bool:
        raise WireError(f"{where}.{key}: expected true/false, got {type(value).__name__}", value)
    return value


def _int(d: dict[str, Any], key: str, where: str, required: bool = True) -> int | None:
    value = d.get(key)
    if value is None:
        if required:
            raise WireError(f"{where}.{key}: required field missing")
        return None
    if type(value) is not int:
        raise WireError(f"{where}.{key}: expected an integer, got {type(value).__name__}", value)
    if abs(value) > 2**62:
        raise WireError(f"{where}.{key}: integer out of range", value)
    return value


def _unit(parse: Callable[[object, str], int], value: object, where: str, key: str) -> int:
    try:
        return parse(value, f"{where}.{key}")
    except UnitError as exc:
        raise WireError(str(exc)) from None


def _fixed(
    d: dict[str, Any],
    key: str,
    where: str,
    parse: Callable[[object, str], int],
    legacy: str | None = None,
    legacy_parse: Callable[[object, str], int] | None = None,
    required: bool = True,
) -> int | None:
    """A fixed-point string field, falling back to a legacy integer field (counted as drift)."""
    value = d.get(key)
    if value is not None:
        return _unit(parse, value, where, key)
    if legacy is not None:
        old = d.get(legacy)
        if old is not None:
            _deprecated(f"{_group(where)}.{legacy}")
            return _unit(legacy_parse, old, where, legacy)  # type: ignore[arg-type]
    if required:
        raise WireError(f"{where}.{key}: required field missing")
    return None


def _group(where: str) -> str:
    """``orders[3]`` → ``orders``: drift is counted per field, not per list position."""
    return re.sub(r"\[\d+\]", "", where)


def _price(d, key, where, legacy=None, required=True):
    return _fixed(d, key, where, parse_price, legacy, cents_to_price, required)


def _count(d, key, where, legacy=None, required=True):
    return _fixed(d, key, where, parse_count, legacy, legacy_count, required)


def _money(d, key, where, legacy=None, required=True):
    return _fixed(d, key, where, parse_money, legacy, legacy_cents_money, required)


def _lenient_avg(d: dict[str, Any], key: str, where: str, parse: Callable[[object, str], int]) -> int | None:
    """Averages (``average_fill_price``) may carry more decimals than a tick; round half-up to $0.0001."""
    value = d.get(key)
    if value is None:
        return None
    try:
        return parse(value, f"{where}.{key}")
    except UnitError:
        pass
    if type(value) is not str:
        raise WireError(f"{where}.{key}: expected a decimal string, got {type(value).__name__}", value)
    m = re.fullmatch(r"(\d{1,12})\.(\d{5,18})", value)
    if not m:
        raise WireError(f"{where}.{key}: not a plain decimal number", value)
    whole, frac = m.groups()
    scaled = int(whole + frac)  # value × 10**len(frac)
    shift = 10 ** (len(frac) - 4)
    return (scaled + shift // 2) // shift


_TIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:?\d{2})\Z"
)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def parse_time_ms(value: object, field: str = "time") -> int:
    """RFC 3339 (``2026-06-11T06:29:30.164956Z``) → Unix milliseconds (truncated), exact ints."""
    if type(value) is not str:
        raise WireError(f"{field}: expected an RFC 3339 time string, got {type(value).__name__}", value)
    m = _TIME_RE.match(value)
    if not m:
        raise WireError(f"{field}: not an RFC 3339 time", value)
    y, mo, d, h, mi, s, frac, tz = m.groups()
    try:
        days = date(int(y), int(mo), int(d)).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise WireError(f"{field}: invalid date", value) from None
    if int(h) > 23 or int(mi) > 59 or int(s) > 60:
        raise WireError(f"{field}: invalid time of day", value)
    ms = ((days * 24 + int(h)) * 60 + int(mi)) * 60_000 + int(s) * 1000
    if frac:
        ms += int(frac[:3].ljust(3, "0"))
    if tz not in ("Z", "z"):
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        ms -= sign * (int(digits[:2]) * 60 + int(digits[2:])) * 60_000
    return ms


def _time(d: dict[str, Any], key: str, where: str, required: bool = True) -> int | None:
    value = d.get(key)
    if value is None or value == "":
        if required:
            raise WireError(f"{where}.{key}: required field missing")
        return None
    return parse_time_ms(value, f"{where}.{key}")


def _cursor(d: dict[str, Any], where: str) -> str:
    # The last page carries "" (sometimes the key is absent or null): all mean "no more pages".
    value = d.get("cursor")
    if value is None:
        return ""
    if type(value) is not str:
        raise WireError(f"{where}.cursor: expected a string, got {type(value).__name__}", value)
    return value


def _items(
    d: dict[str, Any], key: str, where: str, decode: Callable[[Any, str], Any], required: bool = True
) -> tuple:
    if key not in d:
        if required:
            raise WireError(f"{where}.{key}: required field missing")
        return ()
    value = d[key]
    if value is None:  # Kalshi sends null for an empty list on some endpoints
        return ()
    # Items of a page are named after their list ("orders[3]"), nested lists after their parent.
    base = key if where.endswith("_page") else f"{where}.{key}"
    return tuple(decode(item, f"{base}[{i}]") for i, item in enumerate(_list(value, f"{where}.{key}")))


class _Frozen(msgspec.Struct, frozen=True, kw_only=True):
    pass


# ---------------------------------------------------------------- errors


class ApiErrorInfo(_Frozen):
    """The inner error object: nested ``{"error":{...}}``, flat ``{code,...}``, bare ``{"msg":...}``,
    or the 429 string form ``{"error":"too many requests"}``."""

    code: str | None
    message: str | None
    details: str | None = None
    service: str | None = None


def _short_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value[:500]
    return repr(value)[:500]


def decode_error_info(obj: object) -> ApiErrorInfo | None:
    """The error carried by a body, or None when the body is not an error shape."""
    if type(obj) is not dict:
        return None
    inner = obj.get("error")
    if type(inner) is dict:
        return ApiErrorInfo(
            code=_short_text(inner.get("code")),
            message=_short_text(inner.get("message") if inner.get("message") is not None else inner.get("msg")),
            details=_short_text(inner.get("details")),
            service=_short_text(inner.get("service")),
        )
    if isinstance(inner, str) and inner:
        return ApiErrorInfo(code=None, message=inner[:500])
    if isinstance(obj.get("code"), str) and ("message" in obj or "details" in obj):
        return ApiErrorInfo(
            code=_short_text(obj.get("code")),
            message=_short_text(obj.get("message")),
            details=_short_text(obj.get("details")),
            service=_short_text(obj.get("service")),
        )
    if isinstance(obj.get("msg"), str) and len(obj) <= 3:
        return ApiErrorInfo(code=None, message=obj["msg"][:500])
    return None


# ---------------------------------------------------------------- exchange, markets, book, trades


class ExchangeStatus(_Frozen):
    exchange_active: bool
    trading_active: bool
    estimated_resume_time_ms: int | None = None


def decode_exchange_status(obj: object) -> ExchangeStatus:
    d = _obj(obj, "exchange_status")
    return ExchangeStatus(
        exchange_active=_bool(d, "exchange_active", "exchange_status"),
        trading_active=_bool(d, "trading_active", "exchange_status"),
        estimated_resume_time_ms=_time(d, "exchange_estimated_resume_time", "exchange_status", False),
    )


class Market(_Frozen):
    """A market. Kalshi sends 0.0000 (and the complement 1.0000) for a side without quotes."""

    ticker: str
    event_ticker: str
    series_ticker: str | None
    status: str
    market_type: str | None
    title: str | None
    yes_bid: int | None
    yes_ask: int | None
    no_bid: int | None
    no_ask: int | None
    last_price: int | None
    yes_bid_size: int | None
    yes_ask_size: int | None
    volume: int | None
    volume_24h: int | None
    open_interest: int | None
    open_time_ms: int | None
    close_time_ms: int | None
    expected_expiration_time_ms: int | None
    result: str
    settlement_value: int | None
    can_close_early: bool | None
    price_level_structure: str | None
    price_ranges: tuple[tuple[int, int, int], ...]


def _price_range(item: object, where: str) -> tuple[int, int, int]:
    d = _obj(item, where)
    start = _unit(parse_price, d.get("start"), where, "start")
    end = _unit(parse_price, d.get("end"), where, "end")
    step = _unit(parse_price, d.get("step"), where, "step")
    if step <= 0 or end < start:
        raise WireError(f"{where}: invalid price range", item)
    return (start, end, step)


def _quote_size(d: dict[str, Any], key: str, where: str) -> int | None:
    """Top-of-book size. Real captures of determined markets carry negative sizes ("-3.00"):
    they are reported as unknown (None) and counted, never passed on as a size."""
    size = _fixed(d, key, where, parse_signed_count, None, None, False)
    if size is not None and size < 0:
        _deprecated(f"{_group(where)}.{key}<0")
        return None
    return size


def decode_market(obj: object, where: str = "market") -> Market:
    d = _obj(obj, where)
    ranges = _items(d, "price_ranges", where, _price_range, False)
    if not ranges and d.get("tick_size") is not None:
        # Era A/B: a uniform tick in cents over the whole range.
        _deprecated(f"{where}.tick_size")
        tick = _unit(cents_to_price, d.get("tick_size"), where, "tick_size")
        if tick <= 0:
            raise WireError(f"{where}.tick_size: must be positive", d.get("tick_size"))
        ranges = ((0, PRICE_ONE, tick),)
    result = d.get("result")
    if result is not None and type(result) is not str:
        raise WireError(f"{where}.result: expected a string", result)
    return Market(
        ticker=_str(d, "ticker", where),
        event_ticker=_str(d, "event_ticker", where),
        series_ticker=_opt_str(d, "series_ticker", where),
        status=_str(d, "status", where),
        market_type=_opt_str(d, "market_type", where),
        title=_opt_str(d, "title", where),
        yes_bid=_price(d, "yes_bid_dollars", where, "yes_bid", False),
        yes_ask=_price(d, "yes_ask_dollars", where, "yes_ask", False),
        no_bid=_price(d, "no_bid_dollars", where, "no_bid", False),
        no_ask=_price(d, "no_ask_dollars", where, "no_ask", False),
        last_price=_price(d, "last_price_dollars", where, "last_price", False),
        yes_bid_size=_quote_size(d, "yes_bid_size_fp", where),
        yes_ask_size=_quote_size(d, "yes_ask_size_fp", where),
        volume=_count(d, "volume_fp", where, "volume", False),
        volume_24h=_count(d, "volume_24h_fp", where, "volume_24h", False),
        open_interest=_count(d, "open_interest_fp", where, "open_interest", False),
        open_time_ms=_time(d, "open_time", where, False),
        close_time_ms=_time(d, "close_time", where, False),
        expected_expiration_time_ms=_time(d, "expected_expiration_time", where, False),
        result=result or "",
        settlement_value=_price(d, "settlement_value_dollars", where, None, False),
        can_close_early=_opt_bool(d, "can_close_early", where),
        price_level_structure=_opt_str(d, "price_level_structure", where),
        price_ranges=ranges,
    )


def decode_market_response(obj: object) -> Market:
    """``GET /markets/{ticker}`` → ``{"market": {...}}``."""
    d = _obj(obj, "body")
    if "market" not in d:
        raise WireError("body.market: required field missing")
    return decode_market(d["market"])


class MarketsPage(_Frozen):
    markets: tuple[Market, ...]
    cursor: str


def decode_markets_page(obj: object) -> MarketsPage:
    d = _obj(obj, "markets_page")
    return MarketsPage(markets=_items(d, "markets", "markets_page", decode_market), cursor=_cursor(d, "markets_page"))


class Orderbook(_Frozen):
    """REST book: bids only on both legs, ascending by price (best bid last). NO levels are NO-leg
    prices: a NO bid at q is a YES ask at 1 − q."""

    ticker: str | None
    yes: tuple[tuple[int, int], ...]
    no: tuple[tuple[int, int], ...]


def _levels(value: object, where: str) -> tuple[tuple[int, int], ...]:
    """``[[price, count], ...]`` → sorted ((price_units, count_units), ...). Era C sends strings;
    era A/B integer cents and integer contracts (counted as drift). Zero-size levels are dropped."""
    if value is None:
        return ()
    levels: dict[int, int] = {}
    for i, item in enumerate(_list(value, where)):
        at = f"{where}[{i}]"
        pair = _list(item, at)
        if len(pair) != 2:
            raise WireError(f"{at}: expected [price, count]", item)
        raw_price, raw_count = pair
        if type(raw_price) is int:
            _deprecated(f"{_group(where)}.int_price")
            price = _unit(cents_to_price, raw_price, at, "price")
        else:
            price = _unit(parse_price, raw_price, at, "price")
        if type(raw_count) is int:
            _deprecated(f"{_group(where)}.int_count")
            count = _unit(legacy_count, raw_count, at, "count")
        else:
            count = _unit(parse_count, raw_count, at, "count")
        if price <= 0 or price >= PRICE_ONE:
            raise WireError(f"{at}.price: outside (0, 1)", raw_price)
        if price in levels:
            raise WireError(f"{at}.price: duplicate level", raw_price)
        if count:
            levels[price] = count
    return tuple(sorted(levels.items()))


def decode_orderbook(obj: object, ticker: str | None = None) -> Orderbook:
    """``GET /markets/{ticker}/orderbook``: era C ``orderbook_fp`` or legacy ``orderbook``."""
    d = _obj(obj, "orderbook_body")
    if "orderbook_fp" in d:
        book = _obj(d["orderbook_fp"], "orderbook_fp")
        yes = _levels(book.get("yes_dollars"), "orderbook_fp.yes_dollars")
        no = _levels(book.get("no_dollars"), "orderbook_fp.no_dollars")
    elif "orderbook" in d:
        book = _obj(d["orderbook"], "orderbook")
        _deprecated("orderbook")
        # Era B carried both: prefer the dollar strings over the integer cents.
        yes_key = "yes_dollars" if book.get("yes_dollars") is not None else "yes"
        no_key = "no_dollars" if book.get("no_dollars") is not None else "no"
        yes = _levels(book.get(yes_key), f"orderbook.{yes_key}")
        no = _levels(book.get(no_key), f"orderbook.{no_key}")
    else:
        raise WireError("orderbook_body.orderbook_fp: required field missing")
    if ticker is None:
        ticker = _opt_str(d, "ticker", "orderbook_body")
    return Orderbook(ticker=ticker, yes=yes, no=no)


_TAKER_SIDES = frozenset({"yes", "no"})


class PublicTrade(_Frozen):
    trade_id: str
    ticker: str
    count: int
    yes_price: int
    no_price: int
    taker_side: str  # 'yes' | 'no': the taker's exposure
    created_time_ms: int
    is_block_trade: bool


def _trade(obj: object, where: str) -> PublicTrade:
    d = _obj(obj, where)
    side = d.get("taker_outcome_side")
    if side is None:
        side = d.get("taker_side")
        if side is not None:
            _deprecated(f"{_group(where)}.taker_side")
    if side is None:
        raise WireError(f"{where}.taker_outcome_side: required field missing")
    if type(side) is not str or side not in _TAKER_SIDES:
        raise WireError(f"{where}.taker_outcome_side: expected 'yes' or 'no'", side)
    yes_price = _price(d, "yes_price_dollars", where, "yes_price")
    no_price = _price(d, "no_price_dollars", where, "no_price", False)
    if no_price is None:
        no_price = PRICE_ONE - yes_price  # type: ignore[operator]
    return PublicTrade(
        trade_id=_str(d, "trade_id", where),
        ticker=_str(d, "ticker", where),
        count=_count(d, "count_fp", where, "count"),  # type: ignore[arg-type]
        yes_price=yes_price,  # type: ignore[arg-type]
        no_price=no_price,
        taker_side=side,
        created_time_ms=_time(d, "created_time", where),  # type: ignore[arg-type]
        is_block_trade=_bool(d, "is_block_trade", where, False),
    )


class TradesPage(_Frozen):
    trades: tuple[PublicTrade, ...]
    cursor: str


def decode_trades_page(obj: object) -> TradesPage:
    d = _obj(obj, "trades_page")
    return TradesPage(trades=_items(d, "trades", "trades_page", _trade), cursor=_cursor(d, "trades_page"))


class Series(_Frozen):
    ticker: str
    title: str | None
    fee_type: str
    fee_multiplier: Fraction


def decode_series(obj: object) -> Series:
    """``GET /series/{series_ticker}`` → ``{"series": {...}}``."""
    d = _obj(obj, "body")
    s = _obj(d.get("series"), "series")
    fee_type = _str(s, "fee_type", "series")
    if fee_type not in FEE_TYPES:
        raise WireError("series.fee_type: unknown fee type", fee_type)
    if s.get("fee_multiplier") is None:
        raise WireError("series.fee_multiplier: required field missing")
    try:
        multiplier = parse_fee_multiplier(s["fee_multiplier"], "series.fee_multiplier")
    except UnitError as exc:
        raise WireError(str(exc)) from None
    return Series(ticker=_str(s, "ticker", "series"), title=_opt_str(s, "title", "series"), fee_type=fee_type,
                  fee_multiplier=multiplier)


class SeriesFeeChange(_Frozen):
    id: str | None
    series_ticker: str
    fee_type: str | None
    fee_multiplier: Fraction | None
    scheduled_ts_ms: int | None


def _fee_change(obj: object, where: str) -> SeriesFeeChange:
    d = _obj(obj, where)
    multiplier = None
    if d.get("fee_multiplier") is not None:
        try:
            multiplier = parse_fee_multiplier(d["fee_multiplier"], f"{where}.fee_multiplier")
        except UnitError as exc:
            raise WireError(str(exc)) from None
    scheduled = d.get("scheduled_ts")
    if type(scheduled) is int:
        scheduled_ms: int | None = scheduled * 1000
    else:
        scheduled_ms = _time(d, "scheduled_ts", where, False)
    return SeriesFeeChange(id=_opt_str(d, "id", where), series_ticker=_str(d, "series_ticker", where),
                           fee_type=_opt_str(d, "fee_type", where), fee_multiplier=multiplier,
                           scheduled_ts_ms=scheduled_ms)


def decode_series_fee_changes(obj: object) -> tuple[SeriesFeeChange, ...]:
    """``GET /series/fee_changes`` → ``{"series_fee_change_arr": [...]}``."""
    d = _obj(obj, "fee_changes")
    return _items(d, "series_fee_change_arr", "fee_changes", _fee_change)


# ---------------------------------------------------------------- portfolio: balance, positions


class Balance(_Frozen):
    balance: int  # available cash, money units
    portfolio_value: int | None  # money units (Kalshi sends integer cents)
    updated_ts_ms: int | None


def decode_balance(obj: object) -> Balance:
    d = _obj(obj, "balance")
    if d.get("balance_dollars") is not None:
        balance = _unit(parse_money, d["balance_dollars"], "balance", "balance_dollars")
    elif d.get("balance") is not None:
        # Integer cents, truncated: exact for cent-precision accounts, the only form before 2026-05-28.
        _deprecated("balance.balance")
        balance = _unit(legacy_cents_money, d["balance"], "balance", "balance")
    else:
        raise WireError("balance.balance_dollars: required field missing")
    portfolio = _money(d, "portfolio_value_dollars", "balance", None, False)
    if portfolio is None and d.get("portfolio_value") is not None:
        portfolio = _unit(legacy_cents_money, d["portfolio_value"], "balance", "portfolio_value")
    updated = _int(d, "updated_ts", "balance", False)
    return Balance(balance=balance, portfolio_value=portfolio, updated_ts_ms=None if updated is None else updated * 1000)


class Position(_Frozen):
    ticker: str
    position: int  # signed count units: + YES, − NO
    market_exposure: int
    realized_pnl: int
    fees_paid: int
    total_traded: int
    resting_orders_count: int | None
    last_updated_ms: int | None


def _position(obj: object, where: str) -> Position:
    d = _obj(obj, where)
    return Position(
        ticker=_str(d, "ticker", where),
        position=_fixed(d, "position_fp", where, parse_signed_count, "position", contracts_to_count),  # type: ignore[arg-type]
        market_exposure=_money(d, "market_exposure_dollars", where, "market_exposure", False) or 0,
        realized_pnl=_money(d, "realized_pnl_dollars", where, "realized_pnl", False) or 0,
        fees_paid=_money(d, "fees_paid_dollars", where, "fees_paid", False) or 0,
        total_traded=_money(d, "total_traded_dollars", where, "total_traded", False) or 0,
        resting_orders_count=_int(d, "resting_orders_count", where, False),
        last_updated_ms=_time(d, "last_updated_ts", where, False) if type(d.get("last_updated_ts")) is str else None,
    )


class EventPosition(_Frozen):
    event_ticker: str
    total_cost: int
    total_cost_shares: int | None
    event_exposure: int
    realized_pnl: int
    fees_paid: int


def _event_position(obj: object, where: str) -> EventPosition:
    d = _obj(obj, where)
    return EventPosition(
        event_ticker=_str(d, "event_ticker", where),
        total_cost=_money(d, "total_cost_dollars", where, "total_cost", False) or 0,
        total_cost_shares=_count(d, "total_cost_shares_fp", where, "total_cost_shares", False),
        event_exposure=_money(d, "event_exposure_dollars", where, "event_exposure", False) or 0,
        realized_pnl=_money(d, "realized_pnl_dollars", where, "realized_pnl", False) or 0,
        fees_paid=_money(d, "fees_paid_dollars", where, "fees_paid", False) or 0,
    )


class PositionsPage(_Frozen):
    positions: tuple[Position, ...]
    event_positions: tuple[EventPosition, ...]
    cursor: str


def decode_positions_page(obj: object) -> PositionsPage:
    d = _obj(obj, "positions_page")
    return PositionsPage(
        positions=_items(d, "market_positions", "positions_page", _position),
        event_positions=_items(d, "event_positions", "positions_page", _event_position, False),
        cursor=_cursor(d, "positions_page"),
    )


# ---------------------------------------------------------------- orders

ORDER_STATUSES = frozenset({"resting", "canceled", "executed", "pending"})


class Order(_Frozen):
    order_id: str
    client_order_id: str | None
    ticker: str
    status: str  # resting | canceled | executed (| pending, era A)
    book_side: str  # 'bid' (buy YES) | 'ask' (sell YES = buy NO)
    outcome_side: str  # 'yes' | 'no': the exposure the order buys
    yes_price: int
    no_price: int
    initial_count: int
    fill_count: int
    remaining_count: int
    taker_fees: int
    maker_fees: int
    taker_fill_cost: int
    maker_fill_cost: int
    order_group_id: str | None
    self_trade_prevention_type: str | None
    created_time_ms: int | None
    last_update_time_ms: int | None
    expiration_time_ms: int | None


def _direction(d: dict[str, Any], where: str) -> tuple[str, str]:
    """(book_side, outcome_side) from V2 fields, else from legacy action/side (counted when used)."""
    book, outcome = d.get("book_side"), d.get("outcome_side")
    try:
        resolved = direction(book, outcome, d.get("side"), d.get("action"))
    except UnitError as exc:
        raise WireError(f"{where}.{exc}") from None
    if book is None and outcome is None:
        _deprecated(f"{_group(where)}.action")
    return resolved


def decode_order(obj: object, where: str = "order") -> Order:
    d = _obj(obj, where)
    book, outcome = _direction(d, where)
    status = _str(d, "status", where)
    if status not in ORDER_STATUSES:
        raise WireError(f"{where}.status: unknown order status", status)
    yes_price = _price(d, "yes_price_dollars", where, "yes_price", False)
    no_price = _price(d, "no_price_dollars", where, "no_price", False)
    if yes_price is None and no_price is None:
        raise WireError(f"{where}.yes_price_dollars: required field missing")
    if yes_price is None:
        yes_price = PRICE_ONE - no_price  # type: ignore[operator]
    if no_price is None:
        no_price = PRICE_ONE - yes_price
    initial = _count(d, "initial_count_fp", where, "initial_count", False)
    if initial is None:
        initial = _count(d, "count_fp", where, "count")
    fill = _count(d, "fill_count_fp", where, "fill_count", False)
    remaining = _count(d, "remaining_count_fp", where, "remaining_count", False)
    if fill is None and remaining is None:
        raise WireError(f"{where}.fill_count_fp: required field missing")
    if fill is None:
        fill = max(0, initial - remaining)  # type: ignore[operator]
    if remaining is None:
        remaining = 0 if status != "resting" else max(0, initial - fill)  # type: ignore[operator]
    return Order(
        order_id=_str(d, "order_id", where),
        client_order_id=_opt_str(d, "client_order_id", where) or None,
        ticker=_str(d, "ticker", where),
        status=status,
        book_side=book,
        outcome_side=outcome,
        yes_price=yes_price,
        no_price=no_price,
        initial_count=initial,  # type: ignore[arg-type]
        fill_count=fill,
        remaining_count=remaining,  # type: ignore[arg-type]
        taker_fees=_money(d, "taker_fees_dollars", where, "taker_fees", False) or 0,
        maker_fees=_money(d, "maker_fees_dollars", where, "maker_fees", False) or 0,
        taker_fill_cost=_money(d, "taker_fill_cost_dollars", where, "taker_fill_cost", False) or 0,
        maker_fill_cost=_money(d, "maker_fill_cost_dollars", where, "maker_fill_cost", False) or 0,
        order_group_id=_opt_str(d, "order_group_id", where) or None,
        self_trade_prevention_type=_opt_str(d, "self_trade_prevention_type", where),
        created_time_ms=_time(d, "created_time", where, False),
        last_update_time_ms=_time(d, "last_update_time", where, False),
        expiration_time_ms=_time(d, "expiration_time", where, False) if type(d.get("expiration_time")) is str else None,
    )


def decode_order_response(obj: object) -> Order:
    """``{"order": Order}``: GET /portfolio/orders/{id}, legacy V1 create/decrease."""
    d = _obj(obj, "body")
    if d.get("order") is None:
        raise WireError("body.order: required field missing")
    return decode_order(d["order"])


class OrdersPage(_Frozen):
    orders: tuple[Order, ...]
    cursor: str


def decode_orders_page(obj: object) -> OrdersPage:
    d = _obj(obj, "orders_page")
    return OrdersPage(orders=_items(d, "orders", "orders_page", decode_order), cursor=_cursor(d, "orders_page"))


class CreateOrderResult(_Frozen):
    order_id: str
    client_order_id: str | None
    fill_count: int
    remaining_count: int
    average_fill_price: int | None
    average_fee_paid: int | None  # money units per contract
    ts_ms: int | None


def _create_result(obj: object, where: str) -> CreateOrderResult:
    d = _obj(obj, where)
    if d.get("order") is not None and "order_id" not in d:
        # Legacy V1 create: {"order": Order}.
        order = decode_order(d["order"], f"{where}.order")
        _deprecated("create_order.order")
        return CreateOrderResult(order_id=order.order_id, client_order_id=order.client_order_id,
                                 fill_count=order.fill_count, remaining_count=order.remaining_count,
                                 average_fill_price=None, average_fee_paid=None, ts_ms=order.created_time_ms)
    return CreateOrderResult(
        order_id=_str(d, "order_id", where),
        client_order_id=_opt_str(d, "client_order_id", where) or None,
        fill_count=_count(d, "fill_count", where, None),  # type: ignore[arg-type]
        remaining_count=_count(d, "remaining_count", where, None),  # type: ignore[arg-type]
        average_fill_price=_lenient_avg(d, "average_fill_price", where, parse_price),
        average_fee_paid=_lenient_avg(d, "average_fee_paid", where, parse_money),
        ts_ms=_int(d, "ts_ms", where, False),
    )


def decode_create_order(obj: object) -> CreateOrderResult:
    """``POST /portfolio/events/orders`` (201). A body without ``order_id`` is a WireError."""
    return _create_result(obj, "create_order")


class CancelOrderResult(_Frozen):
    order_id: str
    client_order_id: str | None
    reduced_by: int | None
    ts_ms: int | None
    order: Order | None = None  # legacy V1 cancel returns the full order


def _cancel_result(obj: object, where: str) -> CancelOrderResult:
    d = _obj(obj, where)
    if d.get("order") is not None and "order_id" not in d:
        order = decode_order(d["order"], f"{where}.order")
        reduced = _count(d, "reduced_by_fp", where, "reduced_by", False)
        return CancelOrderResult(order_id=order.order_id, client_order_id=order.client_order_id,
                                 reduced_by=reduced, ts_ms=order.last_update_time_ms, order=order)
    reduced = d.get("reduced_by")
    if type(reduced) is int:
        _deprecated(f"{_group(where)}.reduced_by")
        reduced_units = _unit(legacy_count, reduced, where, "reduced_by")
    elif reduced is not None:
        reduced_units = _unit(parse_count, reduced, where, "reduced_by")
    else:
        reduced_units = _count(d, "reduced_by_fp", where, None, False)
    return CancelOrderResult(
        order_id=_str(d, "order_id", where),
        client_order_id=_opt_str(d, "client_order_id", where) or None,
        reduced_by=reduced_units,
        ts_ms=_int(d, "ts_ms", where, False),
    )


def decode_cancel_order(obj: object) -> CancelOrderResult:
    """``DELETE /portfolio/events/orders/{id}`` (V2) or legacy ``DELETE /portfolio/orders/{id}``."""
    return _cancel_result(obj, "cancel_order")


class AmendResult(_Frozen):
    order_id: str
    client_order_id: str | None
    fill_count: int | None
    remaining_count: int
    average_fill_price: int | None
    average_fee_paid: int | None
    ts_ms: int | None
    order: Order | None = None


def decode_amend_order(obj: object) -> AmendResult:
    d = _obj(obj, "amend_order")
    if d.get("order") is not None and "order_id" not in d:
        order = decode_order(d["order"], "amend_order.order")
        return AmendResult(order_id=order.order_id, client_order_id=order.client_order_id,
                           fill_count=order.fill_count, remaining_count=order.remaining_count,
                           average_fill_price=None, average_fee_paid=None, ts_ms=order.last_update_time_ms,
                           order=order)
    return AmendResult(
        order_id=_str(d, "order_id", "amend_order"),
        client_order_id=_opt_str(d, "client_order_id", "amend_order") or None,
        fill_count=_count(d, "fill_count", "amend_order", None, False),
        remaining_count=_count(d, "remaining_count", "amend_order"),  # type: ignore[arg-type]
        average_fill_price=_lenient_avg(d, "average_fill_price", "amend_order", parse_price),
        average_fee_paid=_lenient_avg(d, "average_fee_paid", "amend_order", parse_money),
        ts_ms=_int(d, "ts_ms", "amend_order", False),
    )


class DecreaseResult(_Frozen):
    order_id: str
    client_order_id: str | None
    remaining_count: int
    ts_ms: int | None
    order: Order | None = None


def decode_decrease_order(obj: object) -> DecreaseResult:
    d = _obj(obj, "decrease_order")
    if d.get("order") is not None and "order_id" not in d:
        order = decode_order(d["order"], "decrease_order.order")
        return DecreaseResult(order_id=order.order_id, client_order_id=order.client_order_id,
                              remaining_count=order.remaining_count, ts_ms=order.last_update_time_ms, order=order)
    return DecreaseResult(
        order_id=_str(d, "order_id", "decrease_order"),
        client_order_id=_opt_str(d, "client_order_id", "decrease_order") or None,
        remaining_count=_count(d, "remaining_count", "decrease_order"),  # type: ignore[arg-type]
        ts_ms=_int(d, "ts_ms", "decrease_order", False),
    )


class BatchCreateItem(_Frozen):
    """One batch item: exactly one of ``result`` and ``error`` is set."""

    client_order_id: str | None
    result: CreateOrderResult | None
    error: ApiErrorInfo | None


class BatchCreateResult(_Frozen):
    items: tuple[BatchCreateItem, ...]


def _batch_error(d: dict[str, Any], where: str) -> ApiErrorInfo | None:
    err = d.get("error")
    if err is None:
        return None
    if type(err) is dict:
        return decode_error_info({"error": err})
    if isinstance(err, str):
        return ApiErrorInfo(code=None, message=err[:500])
    raise WireError(f"{where}.error: expected an object", err)


def _batch_create_item(obj: object, where: str) -> BatchCreateItem:
    d = _obj(obj, where)
    error = _batch_error(d, where)
    cid = _opt_str(d, "client_order_id", where) or None
    if error is not None:
        return BatchCreateItem(client_order_id=cid, result=None, error=error)
    return BatchCreateItem(client_order_id=cid, result=_create_result(d, where), error=None)


def decode_batch_create(obj: object) -> BatchCreateResult:
    """``POST /portfolio/events/orders/batched`` (201)."""
    d = _obj(obj, "batch_create")
    if d.get("orders") is None:
        raise WireError("batch_create.orders: required field missing")
    return BatchCreateResult(items=_items(d, "orders", "batch_create", _batch_create_item))


class BatchCancelItem(_Frozen):
    order_id: str | None
    result: CancelOrderResult | None
    error: ApiErrorInfo | None


class BatchCancelResult(_Frozen):
    items: tuple[BatchCancelItem, ...]


def _batch_cancel_item(obj: object, where: str) -> BatchCancelItem:
    d = _obj(obj, where)
    error = _batch_error(d, where)
    order_id = _opt_str(d, "order_id", where)
    if error is not None:
        return BatchCancelItem(order_id=order_id, result=None, error=error)
    return BatchCancelItem(order_id=order_id, result=_cancel_result(d, where), error=None)


def decode_batch_cancel(obj: object) -> BatchCancelResult:
    """``DELETE /portfolio/events/orders/batched`` (200)."""
    d = _obj(obj, "batch_cancel")
    if d.get("orders") is None:
        raise WireError("batch_cancel.orders: required field missing")
    return BatchCancelResult(items=_items(d, "orders", "batch_cancel", _batch_cancel_item))


# ---------------------------------------------------------------- fills, settlements


class Fill(_Frozen):
    fill_id: str
    trade_id: str
    order_id: str
    ticker: str
    book_side: str
    outcome_side: str
    count: int
    yes_price: int
    no_price: int
    is_taker: bool
    fee_cost: int | None  # money units; absent before 2026-01-28
    created_time_ms: int | None
    ts_ms: int | None
    client_order_id: str | None


def _fill(obj: object, where: str) -> Fill:
    d = _obj(obj, where)
    book, outcome = _direction(d, where)
    yes_price = _price(d, "yes_price_dollars", where, "yes_price", False)
    if yes_price is None and d.get("yes_price_fixed") is not None:
        _deprecated(f"{_group(where)}.yes_price_fixed")
        yes_price = _unit(parse_price, d["yes_price_fixed"], where, "yes_price_fixed")
    if yes_price is None:
        raise WireError(f"{where}.yes_price_dollars: required field missing")
    no_price = _price(d, "no_price_dollars", where, "no_price", False)
    if no_price is None:
        no_price = PRICE_ONE - yes_price
    fill_id = _opt_str(d, "fill_id", where)
    trade_id = _opt_str(d, "trade_id", where)
    if fill_id is None and trade_id is None:
        raise WireError(f"{where}.trade_id: required field missing")
    ticker = _opt_str(d, "ticker", where) or _str(d, "market_ticker", where)
    ts = _int(d, "ts", where, False)
    return Fill(
        fill_id=fill_id or trade_id,  # type: ignore[arg-type]
        trade_id=trade_id or fill_id,  # type: ignore[arg-type]
        order_id=_str(d, "order_id", where),
        ticker=ticker,
        book_side=book,
        outcome_side=outcome,
        count=_count(d, "count_fp", where, "count"),  # type: ignore[arg-type]
        yes_price=yes_price,
        no_price=no_price,
        is_taker=_bool(d, "is_taker", where),
        fee_cost=_money(d, "fee_cost", where, None, False),
        created_time_ms=_time(d, "created_time", where, False),
        ts_ms=None if ts is None else ts * 1000,
        client_order_id=_opt_str(d, "client_order_id", where) or None,
    )


class FillsPage(_Frozen):
    fills: tuple[Fill, ...]
    cursor: str


def decode_fills_page(obj: object) -> FillsPage:
    d = _obj(obj, "fills_page")
    return FillsPage(fills=_items(d, "fills", "fills_page", _fill), cursor=_cursor(d, "fills_page"))


class Settlement(_Frozen):
    ticker: str
    event_ticker: str | None
    market_result: str
    yes_count: int
    no_count: int
    yes_total_cost: int | None
    no_total_cost: int | None
    revenue: int  # money units (Kalshi sends integer cents)
    value: int | None  # payout per YES contract, price units (Kalshi sends cents)
    fee_cost: int | None
    settled_time_ms: int | None


def _settlement(obj: object, where: str) -> Settlement:
    d = _obj(obj, where)
    value = d.get("value")
    if value is not None:
        value = _unit(cents_to_price, value, where, "value")
    revenue = d.get("revenue")
    if revenue is None:
        revenue_units = _money(d, "revenue_dollars", where, None)
    else:
        revenue_units = _unit(legacy_cents_money, revenue, where, "revenue")
    return Settlement(
        ticker=_str(d, "ticker", where),
        event_ticker=_opt_str(d, "event_ticker", where),
        market_result=_str(d, "market_result", where),
        yes_count=_count(d, "yes_count_fp", where, "yes_count", False) or 0,
        no_count=_count(d, "no_count_fp", where, "no_count", False) or 0,
        yes_total_cost=_money(d, "yes_total_cost_dollars", where, "yes_total_cost", False),
        no_total_cost=_money(d, "no_total_cost_dollars", where, "no_total_cost", False),
        revenue=revenue_units,  # type: ignore[arg-type]
        value=value,
        fee_cost=_money(d, "fee_cost", where, None, False),
        settled_time_ms=_time(d, "settled_time", where, False),
    )


class SettlementsPage(_Frozen):
    settlements: tuple[Settlement, ...]
    cursor: str


def decode_settlements_page(obj: object) -> SettlementsPage:
    d = _obj(obj, "settlements_page")
    return SettlementsPage(settlements=_items(d, "settlements", "settlements_page", _settlement),
                           cursor=_cursor(d, "settlements_page"))


# ---------------------------------------------------------------- order groups, account


class OrderGroup(_Frozen):
    order_group_id: str
    contracts_limit: int | None
    is_auto_cancel_enabled: bool | None
    order_ids: tuple[str, ...]


def _order_group(d: dict[str, Any], where: str, order_group_id: str) -> OrderGroup:
    limit = _count(d, "contracts_limit_fp", where, "contracts_limit", False)
    ids = d.get("orders")
    order_ids: tuple[str, ...] = ()
    if ids is not None:
        items = _list(ids, f"{where}.orders")
        if not all(type(i) is str for i in items):
            raise WireError(f"{where}.orders: expected order id strings", ids)
        order_ids = tuple(items)
    return OrderGroup(order_group_id=order_group_id, contracts_limit=limit,
                      is_auto_cancel_enabled=_opt_bool(d, "is_auto_cancel_enabled", where), order_ids=order_ids)


def decode_order_group(obj: object, order_group_id: str) -> OrderGroup:
    """``GET /portfolio/order_groups/{id}`` (the body has no id: pass the one requested)."""
    return _order_group(_obj(obj, "order_group"), "order_group", order_group_id)


def decode_order_groups(obj: object) -> tuple[OrderGroup, ...]:
    """``GET /portfolio/order_groups`` → ``{"order_groups": [{"id": ..., ...}]}``."""
    d = _obj(obj, "order_groups")

    def one(item: object, where: str) -> OrderGroup:
        g = _obj(item, where)
        gid = _opt_str(g, "id", where) or _str(g, "order_group_id", where)
        return _order_group(g, where, gid)

    return _items(d, "order_groups", "order_groups", one)


class OrderGroupCreated(_Frozen):
    order_group_id: str


def decode_order_group_created(obj: object) -> OrderGroupCreated:
    d = _obj(obj, "order_group_created")
    return OrderGroupCreated(order_group_id=_str(d, "order_group_id", "order_group_created"))


class AccountLimits(_Frozen):
    usage_tier: str | None
    read_refill_rate: int
    read_bucket_capacity: int
    write_refill_rate: int
    write_bucket_capacity: int


def decode_account_limits(obj: object) -> AccountLimits:
    d = _obj(obj, "account_limits")
    read = _obj(d.get("read"), "account_limits.read")
    write = _obj(d.get("write"), "account_limits.write")
    return AccountLimits(
        usage_tier=_opt_str(d, "usage_tier", "account_limits"),
        read_refill_rate=_int(read, "refill_rate", "account_limits.read"),  # type: ignore[arg-type]
        read_bucket_capacity=_int(read, "bucket_capacity", "account_limits.read"),  # type: ignore[arg-type]
        write_refill_rate=_int(write, "refill_rate", "account_limits.write"),  # type: ignore[arg-type]
        write_bucket_capacity=_int(write, "bucket_capacity", "account_limits.write"),  # type: ignore[arg-type]
    )


class EndpointCost(_Frozen):
    method: str
    path: str
    cost: int


class EndpointCosts(_Frozen):
    default_cost: int
    costs: tuple[EndpointCost, ...]


def decode_endpoint_costs(obj: object) -> EndpointCosts:
    """``GET /account/endpoint_costs``."""
    d = _obj(obj, "endpoint_costs")

    def one(item: object, where: str) -> EndpointCost:
        e = _obj(item, where)
        return EndpointCost(method=_str(e, "method", where), path=_str(e, "path", where),
                            cost=_int(e, "cost", where))  # type: ignore[arg-type]

    return EndpointCosts(default_cost=_int(d, "default_cost", "endpoint_costs"),  # type: ignore[arg-type]
                         costs=_items(d, "endpoint_costs", "endpoint_costs", one))


def decode_empty(obj: object) -> None:
    """Endpoints answering ``{}`` (order-group reset/trigger/limit/delete). Anything but an object
    is a wrong shape; an error object is caught before this by the client."""
    _obj(obj, "body")
    return None
