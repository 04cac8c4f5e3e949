"""The trades feed's REST backfill result, told by its worker thread to the feed actor."""

from __future__ import annotations

from .base import Message, message
from .market import TradePrinted


@message
class TradesBackfilled(Message):
    """Public trades read over REST (``GET /markets/trades?min_ts=...``) after a reconnect.

    ``trades`` are oldest first, marked ``backfilled=True``, not yet deduplicated against the live stream.
    ``truncated``: the page or trade cap was hit (older trades past it were not read).
    ``error``: why the backfill stopped early (escaped, short), None on success.
    """

    request_id: int
    min_ts: int  # seconds
    trades: tuple[TradePrinted, ...]
    pages: int
    truncated: bool
    error: str | None = None
