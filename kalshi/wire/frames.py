"""Kalshi WebSocket v2 text frames → typed, immutable values in integer units (the feed hot path).

``decode_frame(data)`` returns one ``Frame`` subclass per message type (protocol doc §4) or raises
``WireError`` with a short reason. It never raises anything else.

How: one msgspec pass decodes the whole frame into a tagged union of private *wire* structs (tag
``type``) whose fields carry the wire names and the cheap checks (ints in range, string lengths,
``yes``/``no`` literals, array caps). ``to_frame()`` on the wire struct then turns dollar/contract
strings into integer units (memoized: a feed repeats a few hundred price and size strings) and
picks between the era-C fields and the legacy era-A/B ones. Frames of an unknown ``type`` become
``UnknownFrame`` for the caller to count.

Choices worth knowing:
- Prices on book levels, deltas, trades, fills and orders must lie strictly inside (0, 1); ticker
  and settlement prices may be 0 or 1 (no bid, no ask, settled NO/YES).
- Snapshot levels are returned sorted ascending; a duplicate price in one side is a WireError
  (corrupt snapshot). Zero-size levels are passed through; ``OrderBook`` drops them.
- A delta of ``"0.00"`` is passed through (the book treats it as a no-op).
- Duplicate JSON keys: the last one wins (msgspec behaviour). Out-of-range numbers such as
  ``1e999`` are rejected in every field we read; fields we do not read are skipped unvalidated.
- Legacy and deprecated fields seen are counted in ``deprecated_fields_seen()`` (schema-drift
  signal; the converters and the counter are shared with ``bodies``, see ``wire.legacy``).
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

import msgspec
from msgspec import Meta, Struct

from ..units import (
    PRICE_ONE,
    UnitError,
    cents_to_price,
    centicents_to_money,
    contracts_to_count,
    parse_count,
    parse_money,
    parse_price,
    parse_signed_count,
)
from .errors import WireError
from .legacy import DriftCounter, direction, legacy_count, modern_or_legacy

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_LEVELS",
    "KNOWN_TYPES",
    "Frame",
    "Subscribed",
    "Unsubscribed",
    "Ok",
    "WsError",
    "OrderbookSnapshot",
    "OrderbookDelta",
    "Trade",
    "Fill",
    "MarketPosition",
    "UserOrder",
    "Ticker",
    "MarketLifecycle",
    "EventLifecycle",
    "OrderGroupUpdate",
    "UnknownFrame",
    "decode_frame",
    "deprecated_fields_seen",
    "reset_deprecated_fields",
]

MAX_FRAME_BYTES = 4 * 1024 * 1024  # a full 10,000-level snapshot is ~0.5 MB
MAX_LEVELS = 10_000  # per snapshot side
MAX_TICKER_LEN = 200

# ---------------------------------------------------------------------------------------------
# Public frames. Positional field order follows the project's interface list; every frame has
# ``sid`` and ``seq`` (None when the wire frame has none).


class Frame(Struct, frozen=True, gc=False):
    """Base class of every decoded frame (no fields of its own)."""


class Subscribed(Frame, frozen=True, gc=False):
    id: int | None
    channel: str
    sid: int
    seq: None = None


class Unsubscribed(Frame, frozen=True, gc=False):
    id: int | None
    sid: int | None
    seq: int | None


class Ok(Frame, frozen=True, gc=False):
    id: int | None
    sid: int | None
    seq: int | None
    market_tickers: tuple[str, ...] | None
    subscriptions: tuple[tuple[str, int], ...] | None  # list_subscriptions reply: (channel, sid)


class WsError(Frame, frozen=True, gc=False):
    id: int | None
    sid: int | None
    seq: int | None
    code: int
    msg: str
    market_tickers: tuple[str, ...] | None = None


class OrderbookSnapshot(Frame, frozen=True, gc=False):
    """Bid levels (price units, count units) ascending by price; ``no`` in NO-leg prices exactly as
    sent (use_yes_price=false); an absent side is empty."""

    sid: int
    seq: int
    market_ticker: str
    yes: tuple[tuple[int, int], ...]
    no: tuple[tuple[int, int], ...]
    id: int | None = None


class OrderbookDelta(Frame, frozen=True, gc=False):
    sid: int
    seq: int
    market_ticker: str
    price: int
    delta: int  # signed count units
    side: str  # 'yes' | 'no': which bid book
    ts_ms: int | None = None
    client_order_id: str | None = None


class Trade(Frame, frozen=True, gc=False):
    sid: int
    seq: int | None
    trade_id: str
    market_ticker: str
    yes_price: int
    no_price: int
    count: int
    taker_side: str  # 'yes' | 'no': the taker's outcome side
    ts_ms: int
    is_block_trade: bool = False


class Fill(Frame, frozen=True, gc=False):
    sid: int
    seq: int | None
    trade_id: str
    order_id: str
    client_order_id: str | None
    market_ticker: str
    is_taker: bool
    outcome_side: str  # 'yes' | 'no'
    book_side: str  # 'bid' | 'ask'
    yes_price: int
    count: int
    fee: int | None  # money units
    post_position: int | None  # signed count units
    ts_ms: int


class MarketPosition(Frame, frozen=True, gc=False):
    sid: int
    seq: int | None
    market_ticker: str
    position: int  # signed count units
    position_cost: int  # money units
    realized_pnl: int
    fees_paid: int
    volume: int  # count units


class UserOrder(Frame, frozen=True, gc=False):
    sid: int
    seq: int | None
    order_id: str
    client_order_id: str | None
    ticker: str
    status: str
    book_side: str
    outcome_side: str
    yes_price: int
    fill_count: int
    remaining_count: int
    initial_count: int
    order_group_id: str | None
    last_update_reason: str | None
    ts_ms: int


class Ticker(Frame, frozen=True, gc=False):
    sid: int
    seq: int | None
    market_ticker: str
    price: int | None  # last trade
    yes_bid: int | None
    yes_ask: int | None
    volume: int | None
    open_interest: int | None
    ts_ms: int
    yes_bid_size: int | None = None
    yes_ask_size: int | None = None
    last_trade_size: int | None = None


class MarketLifecycle(Frame, frozen=True, gc=False):
    sid: int
    seq: int | None
    market_ticker: str
    event_type: str
    result: str | None = None
    close_ts: int | None = None  # Unix seconds, like the wire
    open_ts: int | None = None
    determination_ts: int | None = None
    settled_ts: int | None = None
    settlement_value: int | None = None  # price units
    is_deactivated: bool | None = None
    price_level_structure: str | None = None
    price_ranges: tuple[tuple[int, int, int], ...] | None = None  # (start, end, step) price units
    event_ticker: str | None = None


class EventLifecycle(Frame, frozen=True, gc=False):
    sid: int
    seq: int | None
    event_ticker: str
    series_ticker: str | None = None
    title: str | None = None
    strike_date: int | None = None


class OrderGroupUpdate(Frame, frozen=True, gc=False):
    sid: int
    seq: int | None
    event_type: str
    order_group_id: str
    contracts_limit: int | None
    ts_ms: int


class UnknownFrame(Frame, frozen=True, gc=False):
    """Well-formed JSON with a ``type`` we do not decode (counted by the caller, not an error)."""

    type: str
    sid: int | None
    seq: int | None


# ---------------------------------------------------------------------------------------------
# Schema-drift counter: every legacy/deprecated field present in a frame is counted.

_DRIFT = DriftCounter()
_seen = _DRIFT.note
deprecated_fields_seen = _DRIFT.seen  # {"<type>.<field>": times present in a decoded frame}
reset_deprecated_fields = _DRIFT.reset


# ---------------------------------------------------------------------------------------------
# Field checks, memoized where the feed repeats values.

_MEMO_CAP = 65_536
_TICKERS: dict[str, str] = {}
_BOOK_PRICES: dict[str, int] = {}
_COUNTS: dict[str, int] = {}
_SIGNED: dict[str, int] = {}


def _ticker(text: str, field: str = "market_ticker") -> str:
    """Printable ASCII without spaces, 1..200 chars; returns an interned copy."""
    try:
        return _TICKERS[text]
    except KeyError:
        pass
    if not (text.isascii() and text.isprintable()) or " " in text or not text:
        raise UnitError(field, text, "not a printable ASCII ticker")
    if len(_TICKERS) < _MEMO_CAP:
        _TICKERS[text] = text
    return text


def _key(text: str, field: str) -> str:
    """Ids and enum-like words: printable ASCII (no control characters to forge log lines)."""
    if not (text.isascii() and text.isprintable()):
        raise UnitError(field, text, "not printable ASCII")
    return text


def _opt_key(text: str | None, field: str) -> str | None:
    return None if text is None else _key(text, field)


def _book_price(text: str, field: str) -> int:
    """A price that can rest in a book or trade: strictly between 0 and 1."""
    try:
        return _BOOK_PRICES[text]
    except KeyError:
        pass
    value = parse_price(text, field)
    if not 0 < value < PRICE_ONE:
        raise UnitError(field, text, "price must be strictly between 0 and 1")
    if len(_BOOK_PRICES) < _MEMO_CAP:
        _BOOK_PRICES[text] = value
    return value


def _book_cents(cents: int, field: str) -> int:
    value = cents_to_price(cents, field)
    if not 0 < value < PRICE_ONE:
        raise UnitError(field, cents, "price must be strictly between 0 and 1")
    return value


def _count(text: str, field: str) -> int:
    try:
        return _COUNTS[text]
    except KeyError:
        pass
    value = parse_count(text, field)
    if len(_COUNTS) < _MEMO_CAP:
        _COUNTS[text] = value
    return value


def _signed(text: str, field: str) -> int:
    try:
        return _SIGNED[text]
    except KeyError:
        pass
    value = parse_signed_count(text, field)
    if len(_SIGNED) < _MEMO_CAP:
        _SIGNED[text] = value
    return value


def _pick(modern, legacy, parse, legacy_parse, modern_field: str, field: str, where: str):
    """Era-C field, else its legacy integer twin; the legacy field is counted whenever present."""
    if legacy is not None:
        _seen(f"{where}.{field}")
    return modern_or_legacy(modern, legacy, parse, legacy_parse, modern_field, field)


def _pick_count(fp: str | None, legacy: int | None, field: str, where: str) -> int | None:
    """``<field>_fp`` contracts, else legacy integer contracts (non-negative)."""
    return _pick(fp, legacy, _count, legacy_count, field + "_fp", field, where)


def _pick_signed(fp: str | None, legacy: int | None, field: str, where: str) -> int | None:
    """Signed ``<field>_fp`` (positions, deltas), else legacy signed integer contracts."""
    return _pick(fp, legacy, _signed, contracts_to_count, field + "_fp", field, where)


def _pick_price(dollars: str | None, cents: int | None, field: str, where: str) -> int | None:
    """``<field>_dollars`` in the open range (0, 1), else legacy integer cents."""
    return _pick(dollars, cents, _book_price, _book_cents, field + "_dollars", field, where)


def _pick_quote(dollars: str | None, cents: int | None, field: str, where: str) -> int | None:
    """Like ``_pick_price`` but 0 and 1 are allowed (ticker quotes, settlement values)."""
    return _pick(dollars, cents, parse_price, cents_to_price, field + "_dollars", field, where)


def _pick_money(dollars: str | None, centicents: int | None, field: str, where: str) -> int | None:
    return _pick(dollars, centicents, parse_money, centicents_to_money, field + "_dollars", field, where)


def _need(value, field: str):
    if value is None:
        raise UnitError(field, None, "missing")
    return value


def _ts_ms(ts_ms: int | None, ts: int | None, seen_as: str) -> int | None:
    if ts is not None:
        _seen(seen_as)
    if ts_ms is not None:
        return ts_ms
    if ts is not None:
        return ts * 1000
    return None


def _direction(
    outcome: str | None, book: str | None, side: str | None, action: str | None, where: str
) -> tuple[str, str]:
    """(outcome_side, book_side); deprecated ``side``/``action`` are counted when present."""
    if side is not None:
        _seen(f"{where}.side")
    if action is not None:
        _seen(f"{where}.action")
    book, outcome = direction(book, outcome, side, action)
    return outcome, book


# ---------------------------------------------------------------------------------------------
# Wire shapes. Constraint aliases do the cheap checks inside msgspec's C decoder.

_Pos = Annotated[int, Meta(ge=1, le=2**63 - 1)]  # sid, seq
_CmdId = Annotated[int, Meta(ge=0, le=2**63 - 1)]  # command id; 0 = none
_TsMs = Annotated[int, Meta(ge=0, le=10**15)]  # ms; 10**15 is year 33658
_TsS = Annotated[int, Meta(ge=0, le=10**12)]  # s
_Tick = Annotated[str, Meta(min_length=1, max_length=MAX_TICKER_LEN)]
_Key = Annotated[str, Meta(min_length=1, max_length=128)]  # trade/order/group ids
_Word = Annotated[str, Meta(min_length=1, max_length=64)]  # status, event_type, channel...
_Num = Annotated[str, Meta(min_length=1, max_length=32)]  # decimal strings for kalshi.units
_Text = Annotated[str, Meta(max_length=1000)]
_Cents = Annotated[int, Meta(ge=-(2**62), le=2**62)]  # legacy ints, range-checked by units
_Side = Literal["yes", "no"]
_BookSide = Literal["bid", "ask"]
_FpLevels = Annotated[list[tuple[_Num, _Num]], Meta(max_length=MAX_LEVELS)]
_DollarLevels = Annotated[list[tuple[_Num, Union[_Cents, _Num]]], Meta(max_length=MAX_LEVELS)]
_CentLevels = Annotated[list[tuple[_Cents, _Cents]], Meta(max_length=MAX_LEVELS)]


class _W(Struct, gc=False):
    """Base of the wire structs: unknown fields are ignored."""


# -- control replies --


class _SubscribedMsg(_W):
    channel: _Word
    sid: _Pos


class _SubscribedEnv(_W, tag_field="type", tag="subscribed"):
    msg: _SubscribedMsg
    id: _CmdId | None = None

    def to_frame(self) -> Frame:
        m = self.msg
        return Subscribed(self.id, _key(m.channel, "channel"), m.sid)


class _UnsubscribedEnv(_W, tag_field="type", tag="unsubscribed"):
    id: _CmdId | None = None
    sid: _Pos | None = None
    seq: _Pos | None = None

    def to_frame(self) -> Frame:
        return Unsubscribed(self.id, self.sid, self.seq)


class _SubEntry(_W):
    channel: _Word
    sid: _Pos


class _OkMsg(_W):
    market_tickers: Annotated[list[_Tick], Meta(max_length=MAX_LEVELS)] | None = None


class _OkEnv(_W, tag_field="type", tag="ok"):
    id: _CmdId | None = None
    sid: _Pos | None = None
    seq: _Pos | None = None
    msg: Annotated[list[_SubEntry], Meta(max_length=MAX_LEVELS)] | _OkMsg | None = None

    def to_frame(self) -> Frame:
        tickers = subs = None
        m = self.msg
        if isinstance(m, list):
            subs = tuple((_key(e.channel, "channel"), e.sid) for e in m)
        elif m is not None and m.market_tickers is not None:
            tickers = tuple(_ticker(t, "market_tickers") for t in m.market_tickers)
        return Ok(self.id, self.sid, self.seq, tickers, subs)


class _ErrorMsg(_W):
    code: Annotated[int, Meta(ge=0, le=2**31)]
    msg: _Text
    market_ticker: _Tick | None = None
    market_tickers: Annotated[list[_Tick], Meta(max_length=MAX_LEVELS)] | None = None


class _ErrorEnv(_W, tag_field="type", tag="error"):
    msg: _ErrorMsg
    id: _CmdId | None = None
    sid: _Pos | None = None
    seq: _Pos | None = None

    def to_frame(self) -> Frame:
        m = self.msg
        tickers = None
        if m.market_tickers is not None:
            tickers = tuple(_ticker(t, "market_tickers") for t in m.market_tickers)
        elif m.market_ticker is not None:
            tickers = (_ticker(m.market_ticker),)
        # Kalshi's text is shown to operators: escape it rather than trust it.
        text = m.msg if m.msg.isprintable() else m.msg.encode("unicode_escape").decode("ascii")
        return WsError(self.id, self.sid, self.seq, m.code, text, tickers)


# -- orderbook_delta channel --


def _levels(fp, dollars, cents, side: str) -> tuple[tuple[int, int], ...]:
    """One snapshot side from whichever era's field is present, sorted ascending, no dup prices."""
    if fp is not None:
        field = f"{side}_dollars_fp"
        bp, cn = _BOOK_PRICES.get, _COUNTS.get
        # Memo hits inline; a miss (None, or a 0 count) falls back to the parser.
        out = [(bp(p) or _book_price(p, field), cn(c) or _count(c, field)) for p, c in fp]
    elif dollars is not None:
        _seen(f"orderbook_snapshot.{side}_dollars")
        field = f"{side}_dollars"
        out = [
            (_book_price(p, field), legacy_count(c, field) if type(c) is int else _count(c, field))
            for p, c in dollars
        ]
    elif cents is not None:
        _seen(f"orderbook_snapshot.{side}")
        out = [(_book_cents(p, side), legacy_count(c, side)) for p, c in cents]
    else:
        return ()
    last = -1
    for price, _ in out:  # a plain loop beats sorted(set(...)) on ~20 levels
        if price <= last:
            break
        last = price
    else:
        return tuple(out)  # ascending, no duplicates: the normal case
    out.sort(key=lambda level: level[0])  # descending seen in one unofficial fixture
    for i in range(1, len(out)):
        if out[i][0] == out[i - 1][0]:
            raise UnitError(side, out[i][0], "duplicate price level in snapshot")
    return tuple(out)


class _SnapshotMsg(_W):
    market_ticker: _Tick
    yes_dollars_fp: _FpLevels | None = None
    no_dollars_fp: _FpLevels | None = None
    yes_dollars: _DollarLevels | None = None
    no_dollars: _DollarLevels | None = None
    yes: _CentLevels | None = None
    no: _CentLevels | None = None


class _SnapshotEnv(_W, tag_field="type", tag="orderbook_snapshot"):
    sid: _Pos
    seq: _Pos
    msg: _SnapshotMsg
    id: _CmdId | None = None

    def to_frame(self) -> Frame:
        m = self.msg
        return OrderbookSnapshot(
            self.sid,
            self.seq,
            _ticker(m.market_ticker),
            _levels(m.yes_dollars_fp, m.yes_dollars, m.yes, "yes"),
            _levels(m.no_dollars_fp, m.no_dollars, m.no, "no"),
            self.id,
        )


class _DeltaMsg(_W):
    market_ticker: _Tick
    side: _Side
    price_dollars: _Num | None = None
    delta_fp: _Num | None = None
    ts_ms: _TsMs | None = None
    client_order_id: _Key | None = None
    ts: _Text | None = None  # RFC3339, deprecated 2026-04-15
    price: _Cents | None = None  # legacy
    delta: _Cents | None = None  # legacy


class _DeltaEnv(_W, tag_field="type", tag="orderbook_delta"):
    sid: _Pos
    seq: _Pos
    msg: _DeltaMsg

    def to_frame(self) -> Frame:
        m = self.msg
        # Hot path: memo hits for era-C fields; anything else goes the long way.
        price = _BOOK_PRICES.get(m.price_dollars)  # type: ignore[arg-type]
        if price is None or m.price is not None:
            price = _need(_pick_price(m.price_dollars, m.price, "price", "orderbook_delta"), "price_dollars")
        delta = _SIGNED.get(m.delta_fp)  # type: ignore[arg-type]
        if delta is None or m.delta is not None:
            delta = _need(_pick_signed(m.delta_fp, m.delta, "delta", "orderbook_delta"), "delta_fp")
        if m.ts is not None:
            _seen("orderbook_delta.ts")
        ticker = _TICKERS.get(m.market_ticker) or _ticker(m.market_ticker)
        coid = m.client_order_id
        return OrderbookDelta(
            self.sid,
            self.seq,
            ticker,
            price,
            delta,
            m.side,
            m.ts_ms,
            None if coid is None else _key(coid, "client_order_id"),
        )


# -- trade, fill, positions, orders --


class _TradeMsg(_W):
    trade_id: _Key
    market_ticker: _Tick
    yes_price_dollars: _Num | None = None
    no_price_dollars: _Num | None = None
    count_fp: _Num | None = None
    taker_outcome_side: _Side | None = None
    taker_side: _Side | None = None  # deprecated
    is_block_trade: bool = False
    ts_ms: _TsMs | None = None
    ts: _TsS | None = None
    yes_price: _Cents | None = None
    no_price: _Cents | None = None
    count: _Cents | None = None


class _TradeEnv(_W, tag_field="type", tag="trade"):
    sid: _Pos
    msg: _TradeMsg
    seq: _Pos | None = None

    def to_frame(self) -> Frame:
        m = self.msg
        yes = _BOOK_PRICES.get(m.yes_price_dollars)  # type: ignore[arg-type]
        if yes is None or m.yes_price is not None:
            yes = _need(_pick_price(m.yes_price_dollars, m.yes_price, "yes_price", "trade"), "yes_price_dollars")
        no = _BOOK_PRICES.get(m.no_price_dollars)  # type: ignore[arg-type]
        if no is None or m.no_price is not None:
            no = _pick_price(m.no_price_dollars, m.no_price, "no_price", "trade")
            if no is None:
                no = PRICE_ONE - yes
        if yes + no != PRICE_ONE:
            raise UnitError("no_price_dollars", m.no_price_dollars, "yes and no prices do not sum to 1")
        count = _COUNTS.get(m.count_fp)  # type: ignore[arg-type]
        if count is None or m.count is not None:
            count = _need(_pick_count(m.count_fp, m.count, "count", "trade"), "count_fp")
        if count <= 0:
            raise UnitError("count_fp", m.count_fp, "trade count must be positive")
        side = m.taker_outcome_side
        if m.taker_side is not None:
            _seen("trade.taker_side")
            if side is None:
                side = m.taker_side
        ts_ms = _ts_ms(m.ts_ms, m.ts, "trade.ts")
        trade_id = m.trade_id
        if not (trade_id.isascii() and trade_id.isprintable()):
            raise UnitError("trade_id", trade_id, "not printable ASCII")
        return Trade(
            self.sid,
            self.seq,
            trade_id,
            _TICKERS.get(m.market_ticker) or _ticker(m.market_ticker),
            yes,
            no,
            count,
            _need(side, "taker_outcome_side"),
            _need(ts_ms, "ts_ms"),
            m.is_block_trade,
        )


class _FillMsg(_W):
    trade_id: _Key
    order_id: _Key
    market_ticker: _Tick
    is_taker: bool
    client_order_id: _Key | None = None
    outcome_side: _Side | None = None
    book_side: _BookSide | None = None
    yes_price_dollars: _Num | None = None
    count_fp: _Num | None = None
    fee_cost: _Num | None = None
    post_position_fp: _Num | None = None
    ts_ms: _TsMs | None = None
    ts: _TsS | None = None
    side: _Side | None = None  # deprecated
    action: _Word | None = None  # deprecated
    purchased_side: _Side | None = None  # deprecated
    yes_price: _Cents | None = None
    count: _Cents | None = None
    post_position: _Cents | None = None


class _FillEnv(_W, tag_field="type", tag="fill"):
    sid: _Pos
    msg: _FillMsg
    seq: _Pos | None = None

    def to_frame(self) -> Frame:
        m = self.msg
        if m.purchased_side is not None:
            _seen("fill.purchased_side")
        outcome, book = _direction(m.outcome_side, m.book_side, m.side, m.action, "fill")
        count = _need(_pick_count(m.count_fp, m.count, "count", "fill"), "count_fp")
        if count <= 0:
            raise UnitError("count_fp", m.count_fp, "fill count must be positive")
        post = _pick_signed(m.post_position_fp, m.post_position, "post_position", "fill")
        return Fill(
            self.sid,
            self.seq,
            _key(m.trade_id, "trade_id"),
            _key(m.order_id, "order_id"),
            _opt_key(m.client_order_id, "client_order_id"),
            _ticker(m.market_ticker),
            m.is_taker,
            outcome,
            book,
            _need(_pick_price(m.yes_price_dollars, m.yes_price, "yes_price", "fill"), "yes_price_dollars"),
            count,
            None if m.fee_cost is None else parse_money(m.fee_cost, "fee_cost"),
            post,
            _need(_ts_ms(m.ts_ms, m.ts, "fill.ts"), "ts_ms"),
        )


class _PositionMsg(_W):
    market_ticker: _Tick
    position_fp: _Num | None = None
    position_cost_dollars: _Num | None = None
    realized_pnl_dollars: _Num | None = None
    fees_paid_dollars: _Num | None = None
    volume_fp: _Num | None = None
    position: _Cents | None = None  # legacy contracts
    position_cost: _Cents | None = None  # legacy centi-cents
    realized_pnl: _Cents | None = None
    fees_paid: _Cents | None = None
    volume: _Cents | None = None


class _PositionEnv(_W, tag_field="type", tag="market_position"):
    sid: _Pos
    msg: _PositionMsg
    seq: _Pos | None = None

    def to_frame(self) -> Frame:
        m = self.msg
        where = "market_position"
        return MarketPosition(
            self.sid,
            self.seq,
            _ticker(m.market_ticker),
            _need(_pick_signed(m.position_fp, m.position, "position", where), "position_fp"),
            _need(_pick_money(m.position_cost_dollars, m.position_cost, "position_cost", where), "position_cost_dollars"),
            _need(_pick_money(m.realized_pnl_dollars, m.realized_pnl, "realized_pnl", where), "realized_pnl_dollars"),
            _need(_pick_money(m.fees_paid_dollars, m.fees_paid, "fees_paid", where), "fees_paid_dollars"),
            _need(_pick_count(m.volume_fp, m.volume, "volume", where), "volume_fp"),
        )


class _UserOrderMsg(_W):
    order_id: _Key
    status: _Word
    ticker: _Tick | None = None
    market_ticker: _Tick | None = None
    client_order_id: _Key | None = None
    outcome_side: _Side | None = None
    book_side: _BookSide | None = None
    yes_price_dollars: _Num | None = None
    fill_count_fp: _Num | None = None
    remaining_count_fp: _Num | None = None
    initial_count_fp: _Num | None = None
    order_group_id: _Key | None = None
    last_update_reason: _Word | None = None
    last_updated_ts_ms: _TsMs | None = None
    created_ts_ms: _TsMs | None = None
    ts_ms: _TsMs | None = None
    side: _Side | None = None  # deprecated
    action: _Word | None = None  # deprecated
    yes_price: _Cents | None = None
    fill_count: _Cents | None = None
    remaining_count: _Cents | None = None
    initial_count: _Cents | None = None


class _UserOrderEnv(_W, tag_field="type", tag="user_order"):
    sid: _Pos
    msg: _UserOrderMsg
    seq: _Pos | None = None

    def to_frame(self) -> Frame:
        m = self.msg
        w = "user_order"
        outcome, book = _direction(m.outcome_side, m.book_side, m.side, m.action, w)
        ticker = m.ticker if m.ticker is not None else m.market_ticker
        ts = m.last_updated_ts_ms
        if ts is None:
            ts = m.created_ts_ms if m.created_ts_ms is not None else m.ts_ms
        return UserOrder(
            self.sid,
            self.seq,
            _key(m.order_id, "order_id"),
            _opt_key(m.client_order_id, "client_order_id"),
            _ticker(_need(ticker, "ticker"), "ticker"),
            _key(m.status, "status"),
            book,
            outcome,
            _need(_pick_price(m.yes_price_dollars, m.yes_price, "yes_price", w), "yes_price_dollars"),
            _need(_pick_count(m.fill_count_fp, m.fill_count, "fill_count", w), "fill_count_fp"),
            _need(_pick_count(m.remaining_count_fp, m.remaining_count, "remaining_count", w), "remaining_count_fp"),
            _need(_pick_count(m.initial_count_fp, m.initial_count, "initial_count", w), "initial_count_fp"),
            _opt_key(m.order_group_id, "order_group_id"),
            _opt_key(m.last_update_reason, "last_update_reason"),
            _need(ts, "last_updated_ts_ms"),
        )


# -- ticker, lifecycle, order groups --


class _TickerMsg(_W):
    market_ticker: _Tick
    price_dollars: _Num | None = None
    yes_bid_dollars: _Num | None = None
    yes_ask_dollars: _Num | None = None
    volume_fp: _Num | None = None
    open_interest_fp: _Num | None = None
    yes_bid_size_fp: _Num | None = None
    yes_ask_size_fp: _Num | None = None
    last_trade_size_fp: _Num | None = None
    ts_ms: _TsMs | None = None
    ts: _TsS | None = None  # deprecated
    time: _Text | None = None  # deprecated
    price: _Cents | None = None
    yes_bid: _Cents | None = None
    yes_ask: _Cents | None = None
    volume: _Cents | None = None
    open_interest: _Cents | None = None


class _TickerEnv(_W, tag_field="type", tag="ticker"):
    sid: _Pos
    msg: _TickerMsg
    seq: _Pos | None = None

    def to_frame(self) -> Frame:
        m = self.msg
        w = "ticker"
        if m.time is not None:
            _seen("ticker.time")
        sizes = [
            None if s is None else _count(s, name)
            for s, name in (
                (m.yes_bid_size_fp, "yes_bid_size_fp"),
                (m.yes_ask_size_fp, "yes_ask_size_fp"),
                (m.last_trade_size_fp, "last_trade_size_fp"),
            )
        ]
        return Ticker(
            self.sid,
            self.seq,
            _ticker(m.market_ticker),
            _pick_quote(m.price_dollars, m.price, "price", w),
            _pick_quote(m.yes_bid_dollars, m.yes_bid, "yes_bid", w),
            _pick_quote(m.yes_ask_dollars, m.yes_ask, "yes_ask", w),
            _pick_count(m.volume_fp, m.volume, "volume", w),
            _pick_count(m.open_interest_fp, m.open_interest, "open_interest", w),
            _need(_ts_ms(m.ts_ms, m.ts, "ticker.ts"), "ts_ms"),
            *sizes,
        )


class _PriceRange(_W):
    start: _Num
    end: _Num
    step: _Num


class _LifecycleMeta(_W):
    event_ticker: _Tick | None = None


class _LifecycleMsg(_W):
    market_ticker: _Tick
    event_type: _Word
    result: Annotated[str, Meta(max_length=32)] | None = None
    close_ts: _TsS | None = None
    open_ts: _TsS | None = None
    determination_ts: _TsS | None = None
    settled_ts: _TsS | None = None
    settlement_value: _Num | None = None
    is_deactivated: bool | None = None
    price_level_structure: _Word | None = None
    price_ranges: Annotated[list[_PriceRange], Meta(max_length=1000)] | None = None
    additional_metadata: _LifecycleMeta | None = None


class _LifecycleEnv(_W, tag_field="type", tag="market_lifecycle_v2"):
    sid: _Pos
    msg: _LifecycleMsg
    seq: _Pos | None = None

    def to_frame(self) -> Frame:
        m = self.msg
        ranges = None
        if m.price_ranges is not None:
            ranges = tuple(
                (parse_price(r.start, "price_ranges.start"), parse_price(r.end, "price_ranges.end"),
                 parse_price(r.step, "price_ranges.step"))
                for r in m.price_ranges
            )
            for start, end, step in ranges:
                if step <= 0 or start > end:
                    raise UnitError("price_ranges", (start, end, step), "empty range or zero step")
        meta = m.additional_metadata
        return MarketLifecycle(
            self.sid,
            self.seq,
            _ticker(m.market_ticker),
            _key(m.event_type, "event_type"),
            _opt_key(m.result, "result") if m.result else m.result,
            m.close_ts,
            m.open_ts,
            m.determination_ts,
            m.settled_ts,
            None if m.settlement_value is None else parse_price(m.settlement_value, "settlement_value"),
            m.is_deactivated,
            _opt_key(m.price_level_structure, "price_level_structure"),
            ranges,
            None if meta is None or meta.event_ticker is None else _ticker(meta.event_ticker, "event_ticker"),
        )


class _EventLifecycleMsg(_W):
    event_ticker: _Tick
    series_ticker: _Tick | None = None
    title: _Text | None = None
    strike_date: _TsS | None = None


class _EventLifecycleEnv(_W, tag_field="type", tag="event_lifecycle"):
    sid: _Pos
    msg: _EventLifecycleMsg
    seq: _Pos | None = None

    def to_frame(self) -> Frame:
        m = self.msg
        title = m.title
        if title is not None and not title.isprintable():
            raise UnitError("title", title, "control characters")
        return EventLifecycle(
            self.sid,
            self.seq,
            _ticker(m.event_ticker, "event_ticker"),
            None if m.series_ticker is None else _ticker(m.series_ticker, "series_ticker"),
            title,
            m.strike_date,
        )


class _OrderGroupMsg(_W):
    event_type: _Word
    order_group_id: _Key
    ts_ms: _TsMs
    contracts_limit_fp: _Num | None = None
    contracts_limit: _Cents | None = None


class _OrderGroupEnv(_W, tag_field="type", tag="order_group_updates"):
    sid: _Pos
    msg: _OrderGroupMsg
    seq: _Pos | None = None

    def to_frame(self) -> Frame:
        m = self.msg
        return OrderGroupUpdate(
            self.sid,
            self.seq,
            _key(m.event_type, "event_type"),
            _key(m.order_group_id, "order_group_id"),
            _pick_count(m.contracts_limit_fp, m.contracts_limit, "contracts_limit", "order_group_updates"),
            m.ts_ms,
        )


class _AnyEnv(_W):
    """Fallback for frames the union rejects: is it merely an unknown ``type``?"""

    type: _Word
    sid: _Pos | None = None
    seq: _Pos | None = None


_ENVELOPES = (
    _SubscribedEnv,
    _UnsubscribedEnv,
    _OkEnv,
    _ErrorEnv,
    _SnapshotEnv,
    _DeltaEnv,
    _TradeEnv,
    _FillEnv,
    _PositionEnv,
    _UserOrderEnv,
    _TickerEnv,
    _LifecycleEnv,
    _EventLifecycleEnv,
    _OrderGroupEnv,
)
KNOWN_TYPES = frozenset(cls.__struct_config__.tag for cls in _ENVELOPES)
_decoder = msgspec.json.Decoder(Union[_ENVELOPES])  # type: ignore[valid-type]
_any_decoder = msgspec.json.Decoder(_AnyEnv)


def _reason(exc: BaseException) -> str:
    """Short and log-safe: msgspec's messages quote input values verbatim."""
    text = str(exc)
    if len(text) > 160:
        text = text[:157] + "..."
    if not (text.isascii() and text.isprintable()):
        text = text.encode("unicode_escape").decode("ascii")
    return text


def decode_frame(data: bytes | str) -> Frame:
    """One WebSocket text frame → a ``Frame``; anything malformed → ``WireError``.

    ``bytes`` (the socket skipped UTF-8 validation) are checked for valid UTF-8 here.
    """
    if type(data) is bytes or type(data) is str:
        if len(data) > MAX_FRAME_BYTES:
            raise WireError(f"frame larger than {MAX_FRAME_BYTES} bytes", data[:120])
        # The common all-ASCII frame needs no UTF-8 check; msgspec would not check skipped fields.
        if type(data) is bytes and not data.isascii():
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                raise WireError("invalid UTF-8", data) from None
    elif isinstance(data, (bytes, bytearray, memoryview)):
        return decode_frame(bytes(data))
    elif isinstance(data, str):  # a str subclass
        return decode_frame(str(data))
    else:
        raise WireError(f"frame must be bytes or str, got {type(data).__name__}")
    try:
        return _decoder.decode(data).to_frame()
    except UnitError as exc:
        raise WireError(_reason(exc), data) from None
    except msgspec.ValidationError as exc:
        error = exc
    except msgspec.DecodeError as exc:
        raise WireError(f"not JSON: {_reason(exc)}", data) from None
    except RecursionError:
        raise WireError("JSON nested too deeply", data) from None
    except UnicodeError:  # lone surrogates in a str frame, undecodable bytes inside strings
        raise WireError("invalid unicode", data) from None
    except (ValueError, TypeError, OverflowError) as exc:  # defensive: only WireError escapes
        raise WireError(_reason(exc), data) from None
    return _unknown_or_raise(data, error)


def _unknown_or_raise(data: bytes | str, error: msgspec.ValidationError) -> Frame:
    try:
        env = _any_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError, UnicodeError, ValueError):
        env = None
    if env is None or env.type in KNOWN_TYPES or not _printable(env.type):
        raise WireError(_reason(error), data) from None
    return UnknownFrame(env.type, env.sid, env.seq)


def _printable(text: str) -> bool:
    return text.isascii() and text.isprintable()
