"""Feed messages: what a WebSocket reader thread hands its actor, and what feeds report.

Frames are ``kalshi.wire.frames`` frozen msgspec Structs (``Frame`` subclasses) and connection
events are ``kalshi.ws`` frozen dataclasses; both are opaque immutable values here (their modules
are checked for immutability by tests/unit/test_messages.py).
"""

from __future__ import annotations

from collections.abc import Hashable

from kalshi.wire.frames import Frame as WireFrame

from .base import Message, message

# A kalshi.ws connection event (WsConnected, WsDisconnected, WsSequenceIssue, ...): a frozen value.
# Typed as Hashable rather than the union so messages do not import the WebSocket client.
ConnectionEvent = Hashable

__all__ = ["WireFrame", "ConnectionEvent"]


@message
class FramesReceived(Message):
    """One batch of frames read by the reader thread of connection ``conn_id`` (one tell per burst)."""

    conn_id: int
    frames: tuple[WireFrame, ...]
    recv_ns: int = 0  # monotonic ns when the batch was read (0 = unknown)


@message
class FeedEventReceived(Message):
    """A connection event from the reader thread (connected, disconnected, sequence issue, ...)."""

    conn_id: int
    event: ConnectionEvent


@message
class FeedStatus(Message):
    """Periodic feed health summary, told to the supervisor and the broadcaster.

    ``state`` is one of 'connecting', 'subscribed', 'live', 'stale', 'backoff', 'stopped'.
    """

    feed: str
    connected: bool
    conn_id: int
    messages: int
    gaps: int
    reconnects: int
    last_message_age_ms: int | None
    state: str


@message
class SequenceGap(Message):
    """A ``seq`` gap, duplicate or backwards jump on one subscription (``kind``)."""

    feed: str
    conn_id: int
    sid: int
    expected: int
    got: int
    kind: str = "gap"  # 'gap' | 'duplicate' | 'backward'


@message
class Resubscribe(Message):
    """Command to a feed: drop and re-send every subscription (fresh snapshots follow)."""

    reason: str


@message
class RequestSnapshot(Message):
    """Command to a feed: ask the exchange for fresh snapshots of these markets (empty = all)."""

    market_tickers: tuple[str, ...] = ()
    reason: str = ""


@message
class WatchMarkets(Message):
    """Ask the orderbook feed to keep books for these markets too (e.g. a whale's market we don't follow yet).

    The feed adds them with ``update_subscription add_markets`` up to its market cap and reports them stale
    until their snapshots arrive.
    """

    market_tickers: frozenset[str]
    reason: str
