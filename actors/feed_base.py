"""What the three WebSocket feed actors share: one ``KalshiWebSocket`` each, readiness, status and overflow.

A feed actor owns one ``kalshi.ws.KalshiWebSocket`` (its reader thread) created in ``setup()`` and stopped
in ``cleanup()``. The client's callbacks run on the reader thread and do one thing: ``tell`` the actor a
``FramesReceived`` (one per batch) or a ``FeedEventReceived``. Everything else happens in handlers.

Connection ids: the actor may replace its client (the last step of a recovery is a fresh connection), and a
new client numbers its connections from 1 again. The actor therefore offsets every client's ids by a base,
so the ``conn_id`` in its messages only grows over the actor's life; messages of a replaced client are
dropped at the callback and, if already queued, by the handlers (older ``conn_id``).

Overflow (reliability rule 6, F15) has two triggers and one episode state (``overflowed``):
- our own mailbox: the reader thread checks it before each tell; past ``overflow_depth`` it still tells
  (the reader never drops) but raises a flag, seen by the next batch's ``accept_frames`` or Tick;
- our consumer's mailbox (only feeds naming an ``overflow_consumer`` peer — the order book feed, whose
  consumer is the state keeper): ``accept_frames`` checks that peer's depth in the handler, before the
  batch is forwarded (the reader thread never reads the peer table).
Either one past the bound starts an episode: the subclass reacts once (``on_overflow``) before the batch
that saw it is forwarded. The episode ends on a Tick when our mailbox AND the consumer's are both at most
a quarter of the bound (``on_caught_up``). What an episode means is per channel: the order book marks its
books stale, drops deltas while it lasts (the books come back from the snapshots it requests on catching
up); the position listener (private channels) drops nothing and asks for a REST sync on catching up; the
trades feed only delays trades. ``overflow_events`` counts episodes, ``downstream_overflows`` those the
consumer started. ``overflow_depth`` = 0 turns the policy off.

Settings read from ``self.config`` (all optional): ``status_interval_s`` (1.0), ``overflow_depth``
(1000 messages; 0 = off), ``ws_factory`` (a ``KalshiWebSocket``-compatible class, for tests). Client options come
from ``SystemContext.ws_options``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, ClassVar

import pykka

from kalshi.ws import (
    KalshiWebSocket,
    WsCommandReply,
    WsConnected,
    WsDisconnected,
    WsMalformedFrame,
    WsSequenceIssue,
    WsStalled,
    WsSubscribed,
)
from messages.control import FeedDown, FeedReady, Tick
from messages.feed import FeedEventReceived, FeedStatus, FramesReceived, SequenceGap

from ._util import NS_PER_MS, NS_PER_S, config_int, config_seconds_ns
from .base import SupervisedActor, error_text, handles, mailbox_depth
from .context import SystemContext, context_of

log = logging.getLogger(__name__)

DEFAULT_STATUS_INTERVAL_S = 1.0
DEFAULT_OVERFLOW_DEPTH = 1000
REAPER_JOIN_S = 6.0


class WsFeedActor(SupervisedActor):
    """Base of the feed actors. Subclasses implement ``subscribe_all`` and the ``on_*`` hooks below."""

    # The peer this feed forwards its batches to, whose mailbox depth also starts an overflow episode
    # (None: only our own mailbox counts).
    overflow_consumer: ClassVar[str | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ctx: SystemContext | None = None
        self.ws: Any = None
        self._ws_epoch = 0  # read by the reader thread: callbacks of an older client drop their data
        self._conn_base = 0
        self._reapers: list[threading.Thread] = []
        self.conn_id = 0  # current connection (feed-level id; 0 = none yet)
        self.raw_conn_id = 0  # the same connection as the client numbers it (for sid-pinned commands)
        self.connected = False
        self.connections = 0
        self.reconnects = 0
        self.messages = 0
        self.gaps = 0
        self.duplicates = 0
        self.malformed = 0
        self.stalls = 0
        self.stale_frames = 0  # frames of an older connection, dropped
        self.command_errors = 0
        self.overflow_events = 0
        self.downstream_overflows = 0
        self.client_replacements = 0
        self.last_message_ns: int | None = None
        self.last_disconnect: str | None = None
        self.backing_off = False
        self.ready = False
        self.stopped = False
        self._overflow_flag = False  # set by the reader thread
        self.overflowed = False
        self.overflow_cause: str | None = None  # "mailbox" | "consumer" while overflowed
        self._last_status_ns: int | None = None
        self.status_interval_ns = int(DEFAULT_STATUS_INTERVAL_S * NS_PER_S)
        self.overflow_depth = DEFAULT_OVERFLOW_DEPTH

    # --- hooks ------------------------------------------------------------------------------------

    def subscribe_all(self, ws: Any) -> None:
        """Issue this feed's subscriptions on a new client (before it starts)."""
        raise NotImplementedError

    def on_connected(self, event: WsConnected) -> None:
        """A connection is up (subscriptions are being replayed by the client)."""

    def on_disconnected(self, reason: str) -> None:
        """The connection ended (``reason``); called once per connection, and before a client replacement."""

    def on_subscribed(self, event: WsSubscribed) -> None:
        """A subscription got its sid on the current connection."""

    def on_sequence_issue(self, event: WsSequenceIssue) -> None:
        """A gap / duplicate / backward seq on the current connection (already counted and reported)."""

    def on_command_reply(self, event: WsCommandReply) -> None:
        """A command reply (``subscribed``/``ok``/``unsubscribed``/``error``) on the current connection."""

    def on_overflow(self) -> None:
        """Our mailbox or the consumer's passed ``overflow_depth`` (once per episode; ``overflow_cause`` says which)."""

    def on_caught_up(self) -> None:
        """Both mailboxes drained to a quarter of ``overflow_depth`` after an overflow."""

    def on_feed_tick(self, now_ns: int) -> None:
        """Time passed (timeouts, escalations)."""

    def feed_state(self) -> str:
        """'connecting' | 'subscribed' | 'live' | 'stale' | 'backoff' | 'stopped' for FeedStatus."""
        if self.stopped:
            return "stopped"
        if not self.connected:
            return "backoff" if self.backing_off else "connecting"
        return "live" if self.ready else "subscribed"

    def feed_stats(self) -> dict[str, Any]:
        """Extra numbers for ``stats()``."""
        return {}

    # --- lifecycle --------------------------------------------------------------------------------

    def setup(self) -> None:
        self.ctx = context_of(self.config)
        self.status_interval_ns = config_seconds_ns(self.config, "status_interval_s", DEFAULT_STATUS_INTERVAL_S)
        self.overflow_depth = config_int(self.config, "overflow_depth", DEFAULT_OVERFLOW_DEPTH, minimum=0)

    def start_client(self) -> None:
        """Create the client, subscribe and start its reader thread (call from ``setup`` or a handler)."""
        factory: Callable[..., Any] = self.config.get("ws_factory") or KalshiWebSocket
        ctx = self.ctx
        assert ctx is not None
        self._ws_epoch += 1
        epoch = self._ws_epoch
        base = self._conn_base
        ref = self.actor_ref
        mono = ctx.mono_ns
        bound = self.overflow_depth

        def on_frames(conn_id: int, frames: tuple) -> None:
            if self._ws_epoch != epoch:
                return
            if bound and mailbox_depth(ref) > bound:
                self._overflow_flag = True
            try:
                ref.tell(FramesReceived(conn_id=base + conn_id, frames=frames, recv_ns=mono()))
            except pykka.ActorDeadError:
                pass

        def on_event(event: object) -> None:
            if self._ws_epoch != epoch:
                return
            try:
                ref.tell(FeedEventReceived(conn_id=base + int(getattr(event, "conn_id", 0) or 0), event=event))
            except pykka.ActorDeadError:
                pass

        options = dict(ctx.ws_options)
        options.setdefault("name", self.name)
        ws = factory(ctx.ws_url, ctx.credentials, on_frames=on_frames, on_event=on_event, **options)
        self.ws = ws
        self.subscribe_all(ws)
        ws.start()

    def replace_client(self, reason: str) -> None:
        """Drop the connection by replacing the client (a fresh connection, subscriptions replayed).

        The old client is stopped on a short-lived thread so this handler does not wait for it.
        """
        old = self.ws
        self._ws_epoch += 1  # from now on the old client's callbacks drop everything
        if old is not None:
            try:
                last_raw = int(old.stats().conn_id)
            except Exception:  # a client without stats: leave a wide gap instead
                last_raw = 1_000_000
            self._conn_base += last_raw + 1
            reaper = threading.Thread(
                target=self._stop_quietly, args=(old,), name=f"{self.name}-ws-reaper", daemon=True
            )
            reaper.start()
            self._reapers = [t for t in self._reapers if t.is_alive()] + [reaper]
        self.client_replacements += 1
        log.warning("%s: reconnecting with a new connection: %s", self.name, reason)
        if self.connected:
            self._connection_lost(f"reconnect: {reason}", backing_off=False)
        else:
            self.set_ready(False, f"reconnect: {reason}")
        self.ws = None
        self.start_client()

    def _stop_quietly(self, ws: Any) -> None:
        try:
            ws.stop(timeout=5.0)
        except Exception as exc:
            log.warning("%s: stopping a WebSocket client failed: %s", self.name, error_text(exc))

    def cleanup(self) -> None:
        self.stopped = True
        self._ws_epoch += 1
        ws, self.ws = self.ws, None
        if ws is not None:
            self._stop_quietly(ws)
        for t in self._reapers:
            t.join(REAPER_JOIN_S)
        self._reapers = []
        self.cleanup_feed()
        if self.ctx is not None:
            self._send_status(self._now())

    def cleanup_feed(self) -> None:
        """Subclass resources beyond the client (worker threads)."""

    # --- helpers for subclasses ---------------------------------------------------------------------

    def _now(self) -> int:
        return self.ctx.mono_ns() if self.ctx is not None else 0

    def set_ready(self, ready: bool, reason: str = "") -> None:
        """FeedReady / FeedDown to the supervisor on a change."""
        if ready and not self.ready:
            self.ready = True
            log.info("%s: ready (connection %d)", self.name, self.conn_id)
            self.tell_supervisor(FeedReady(feed=self.name, generation=self.generation, conn_id=self.conn_id))
        elif not ready and self.ready:
            self.ready = False
            log.warning("%s: down: %s", self.name, reason)
            self.tell_supervisor(FeedDown(feed=self.name, generation=self.generation, reason=reason))

    def accept_frames(self, message: FramesReceived) -> bool:
        """Bookkeeping for a batch; False if it belongs to an older connection (dropped)."""
        if message.conn_id != self.conn_id:
            self.stale_frames += len(message.frames)
            return False
        self.messages += len(message.frames)
        self.last_message_ns = message.recv_ns
        if not self.overflowed:
            if self._overflow_flag:
                self._enter_overflow("mailbox")
            elif self.overflow_consumer is not None and self.overflow_depth \
                    and self.consumer_depth() > self.overflow_depth:
                self.downstream_overflows += 1
                self._enter_overflow("consumer")
        return True

    def consumer_depth(self) -> int:
        """Messages waiting in the ``overflow_consumer`` peer's mailbox (0 without one)."""
        name = self.overflow_consumer
        ref = self.peers.get(name) if name is not None else None
        return 0 if ref is None else mailbox_depth(ref)

    # --- handlers -----------------------------------------------------------------------------------

    @handles(FeedEventReceived)
    def on_feed_event(self, message: FeedEventReceived) -> None:
        event = message.event
        if isinstance(event, WsConnected):
            if message.conn_id <= self.conn_id:
                return
            self.conn_id = message.conn_id
            self.raw_conn_id = event.conn_id
            self.connected = True
            self.backing_off = False
            self.connections += 1
            if self.connections > 1:
                self.reconnects += 1
            log.info("%s: connected (connection %d)", self.name, self.conn_id)
            self.on_connected(event)
            return
        if message.conn_id < self.conn_id:
            return  # an event of an older connection
        if isinstance(event, WsDisconnected):
            self.backing_off = event.will_retry
            if message.conn_id == self.conn_id and self.connected:
                self._connection_lost(event.reason, backing_off=event.will_retry)
        elif isinstance(event, WsSequenceIssue):
            if event.kind == "gap":
                self.gaps += 1
            else:
                self.duplicates += 1
            self.tell_supervisor(
                SequenceGap(feed=self.name, conn_id=message.conn_id, sid=event.sid, expected=event.expected,
                            got=event.got, kind=event.kind)
            )
            self.on_sequence_issue(event)
        elif isinstance(event, WsMalformedFrame):
            self.malformed += 1
        elif isinstance(event, WsStalled):
            self.stalls += 1
            log.warning("%s: connection %d stalled (%.1fs without a frame)", self.name, message.conn_id, event.idle_s)
        elif isinstance(event, WsSubscribed):
            self.on_subscribed(event)
        elif isinstance(event, WsCommandReply):
            if type(event.frame).__name__ == "WsError":
                self.command_errors += 1
                log.warning("%s: command %s answered error %s: %s", self.name, event.command_id,
                            getattr(event.frame, "code", "?"), getattr(event.frame, "msg", ""))
            self.on_command_reply(event)

    def _connection_lost(self, reason: str, *, backing_off: bool) -> None:
        self.connected = False
        self.backing_off = backing_off
        self.last_disconnect = reason
        self.set_ready(False, reason)
        self.on_disconnected(reason)

    @handles(Tick)
    def on_tick(self, message: Tick) -> None:
        super().on_tick(message)
        now = message.now_mono_ns
        if self._overflow_flag and not self.overflowed:
            self._enter_overflow("mailbox")
        if self.overflowed:
            low = self.overflow_depth // 4
            if mailbox_depth(self.actor_ref) <= low and self.consumer_depth() <= low:
                self.overflowed = False
                self.overflow_cause = None
                self._overflow_flag = False
                log.info("%s: caught up after overflow", self.name)
                self.on_caught_up()
        self.on_feed_tick(now)
        if self._last_status_ns is None or now - self._last_status_ns >= self.status_interval_ns:
            self._send_status(now)

    def _enter_overflow(self, cause: str) -> None:
        self.overflowed = True
        self.overflow_cause = cause
        self._overflow_flag = False
        self.overflow_events += 1
        whose = "our mailbox" if cause == "mailbox" else f"{self.overflow_consumer}'s mailbox"
        log.warning("%s: %s deeper than %d messages: overflow policy applies", self.name, whose, self.overflow_depth)
        self.on_overflow()

    def _send_status(self, now: int) -> None:
        self._last_status_ns = now
        age = None if self.last_message_ns is None else max(0, (now - self.last_message_ns) // NS_PER_MS)
        status = FeedStatus(
            feed=self.name,
            connected=self.connected,
            conn_id=self.conn_id,
            messages=self.messages,
            gaps=self.gaps,
            reconnects=self.reconnects,
            last_message_age_ms=age,
            state=self.feed_state(),
        )
        self.tell_supervisor(status)
        self.peers.tell("broadcaster", status)
        if self.ready:  # idempotent at the supervisor; repairs readiness it may have dropped
            self.tell_supervisor(FeedReady(feed=self.name, generation=self.generation, conn_id=self.conn_id))

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out.update(
            feed_state=self.feed_state(),
            ready=self.ready,
            connected=self.connected,
            conn_id=self.conn_id,
            connections=self.connections,
            reconnects=self.reconnects,
            messages=self.messages,
            gaps=self.gaps,
            duplicates=self.duplicates,
            malformed=self.malformed,
            stalls=self.stalls,
            stale_frames=self.stale_frames,
            command_errors=self.command_errors,
            overflow_events=self.overflow_events,
            downstream_overflows=self.downstream_overflows,
            overflowed=self.overflowed,
            client_replacements=self.client_replacements,
            last_disconnect=self.last_disconnect,
        )
        out.update(self.feed_stats())
        return out
