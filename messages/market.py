"""Market-data messages: order-book changes and public trades, told by the feeds to the state keeper.

Prices are ``kalshi.units`` price units ($0.0001), counts are count units (0.01 contract).
``recv_ns`` is the monotonic time the frame was read; ``ts_ms`` is the exchange time when given.
"""

from __future__ import annotations

from typing import Literal

from .base import Message, message
from .feed import WireFrame

Side = Literal["yes", "no"]


@message
class BookFramesReceived(Message):
    """A batch of orderbook snapshot/delta frames for the state keeper (one tell per burst, not per delta)."""

    feed: str
    conn_id: int
    frames: tuple[WireFrame, ...]
    recv_ns: int


@message
class BookSnapshotApplied(Message):
    """A market's book was (re)built from a snapshot; it is valid again."""

    market_ticker: str
    conn_id: int
    sid: int
    seq: int
    yes_levels: int
    no_levels: int
    recv_ns: int


@message
class BookUpdated(Message):
    """Top of book after a batch of changes (for views that do not need every level)."""

    market_ticker: str
    best_yes_bid: int | None
    best_no_bid: int | None
    seq: int
    recv_ns: int


@message
class BookStale(Message):
    """No decision may use this book until a fresh snapshot arrives."""

    market_ticker: str
    reason: str


@message
class TradePrinted(Message):
    """One public trade from the ``trade`` channel (or a REST backfill, ``backfilled=True``)."""

    trade_id: str
    market_ticker: str
    taker_side: Side
    yes_price: int
    no_price: int
    count: int
    ts_ms: int
    recv_ns: int
    backfilled: bool = False


@message
class TradesPrinted(Message):
    """A batch of public trades (one tell per burst)."""

    trades: tuple[TradePrinted, ...]
