"""Account messages: positions, fills, orders and balance, from the private WS channels or REST sync.

Money and prices are ``kalshi.units`` units ($0.0001), counts are count units (0.01 contract);
positions are signed counts (positive = YES, negative = NO) and are applied as absolute values.
"""

from __future__ import annotations

from typing import Literal

from .base import Message, message

Source = Literal["ws", "rest", "paper"]


@message
class PositionChanged(Message):
    market_ticker: str
    position: int  # signed count units
    cost: int  # money units
    realized_pnl: int
    fees_paid: int
    source: Source
    ts_ms: int = 0


@message
class FillReceived(Message):
    """One fill of one of our orders; deduplicated by ``fill_id`` (Kalshi's trade_id of the fill)."""

    fill_id: str
    order_id: str
    client_order_id: str | None
    market_ticker: str
    is_taker: bool
    outcome_side: Literal["yes", "no"]
    book_side: Literal["bid", "ask"]
    yes_price: int
    count: int
    fee: int | None
    post_position: int | None
    ts_ms: int
    source: Source


@message
class OrderUpdated(Message):
    """The latest known state of one of our orders."""

    order_id: str
    client_order_id: str | None
    market_ticker: str
    status: str  # Kalshi order status: resting, canceled, executed, ...
    book_side: Literal["bid", "ask"]
    outcome_side: Literal["yes", "no"]
    yes_price: int
    fill_count: int
    remaining_count: int
    initial_count: int
    order_group_id: str | None
    ts_ms: int
    source: Source


@message
class BalanceSynced(Message):
    balance: int  # money units
    portfolio_value: int
    at_ms: int


@message
class AccountSynced(Message):
    """A full REST reconciliation: the exchange's truth at ``at_ms`` (replaces, never merges).

    ``fills``: our fills REST returned (added through the fill-id dedup, never replacing). ``fills_read``: the
    fill read was asked for and complete; ``fills_error``: it failed (``fills`` then holds what was read)."""

    balance: int
    portfolio_value: int
    positions: tuple[PositionChanged, ...]
    orders: tuple[OrderUpdated, ...]
    at_ms: int
    fills: tuple[FillReceived, ...] = ()
    fills_read: bool = False
    fills_error: str | None = None
