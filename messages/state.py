"""State-keeper messages: immutable views of the books and the account, and the versioned change feed.

The state keeper is the single writer of books, positions, orders and balance. It tells the whale executor
``BookViewsUpdated`` (only for books that changed in the last batch, and only for markets the executor
watches) and ``AccountViewUpdated`` (on every account change), and tells the broadcaster ``StateChanged``.
Units: prices/money in $0.0001, counts in 0.01 contract (``kalshi.units``).
"""

from __future__ import annotations

from .account import OrderUpdated, PositionChanged
from .base import Message, message

Levels = tuple[tuple[int, int], ...]  # (price, size) bid levels, ascending by price


@message
class BookView(Message):
    """An immutable copy of one market's L2 book (YES bids and NO bids, NO side in NO-leg prices)."""

    market_ticker: str
    valid: bool  # False: stale or invalid — no decision may use it
    yes: Levels
    no: Levels
    seq: int  # the feed's seq of the last applied frame (0 when unknown)
    recv_ns: int  # monotonic time the last applied frame was read
    reason: str = ""  # why it is not valid


@message
class BookViewsUpdated(Message):
    views: tuple[BookView, ...]


@message
class WatchBooks(Message):
    """Executor → state keeper: send me BookViews for these markets (replaces the previous set)."""

    market_tickers: frozenset[str]


@message
class AccountView(Message):
    """The account as the state keeper knows it now."""

    version: int
    balance: int  # money units
    portfolio_value: int
    positions: tuple[PositionChanged, ...]  # non-zero positions only
    resting_orders: tuple[OrderUpdated, ...]
    unsynced_fill_markets: frozenset[str]  # fills seen on the stream since the last REST sync
    synced_at_ms: int  # last REST reconciliation (0 = never)


@message
class AccountViewUpdated(Message):
    view: AccountView


@message
class BookSummary(Message):
    market_ticker: str
    valid: bool
    best_yes_bid: int | None
    best_yes_ask: int | None
    yes_levels: int
    no_levels: int
    last_update_ms: int


@message
class StateChanged(Message):
    """The versioned state moved: ``changed`` names what (books, positions, orders, balance, fills)."""

    version: int
    changed: frozenset[str]
    account: AccountView
    books: tuple[BookSummary, ...]
    at_ms: int
