"""Control-plane messages: time, liveness, lifecycle reports, readiness, the system state and the gate.

Children report to the health supervisor (``ActorStarted``, ``ActorFailed``, ``ActorStopped``,
``Pong``, the readiness events); the supervisor tells children commands (``Ping``, ``PeersChanged``,
``SyncAccount``, ``Shutdown``) and broadcasts ``SystemStateChanged`` / ``TradingGateChanged``.
Times: ``*_mono_ns`` is ``time.monotonic_ns()``, ``*_ms`` is wall-clock epoch milliseconds.
"""

from __future__ import annotations

from typing import Literal

import pykka

from .base import Message, message

FailurePhase = Literal["on_start", "handler", "on_stop"]


# --- time and liveness -------------------------------------------------------------------------


@message
class Tick(Message):
    """The clock: sent every interval by ``actors.ticker.Ticker`` (or by hand in tests)."""

    now_mono_ns: int
    now_wall_ms: int


@message
class Ping(Message):
    """Liveness probe from the supervisor; the base actor answers with ``Pong`` automatically."""

    token: int


@message
class Pong(Message):
    actor: str
    generation: int
    token: int


@message
class RequestStats(Message):
    """Ask (not tell) an actor for its ``stats()`` dictionary; used by the status view and tests."""


# --- lifecycle reports (child → supervisor) ---------------------------------------------------


@message
class ActorStarted(Message):
    """The child's ``setup()`` finished; it is handling messages."""

    actor: str
    generation: int


@message
class ActorFailed(Message):
    """An exception escaped ``setup()``, a handler or ``cleanup()``; the actor is (being) stopped.

    ``error`` is an escaped, length-limited one-line text; ``traceback`` is the formatted traceback.
    ``permanent``: the exception said a restart cannot fix it (``permanent = True`` on its class, e.g.
    ``actors.journal.JournalCorrupt``): the supervisor goes to ERROR at once instead of restarting.
    """

    actor: str
    generation: int
    phase: FailurePhase
    error: str
    traceback: str
    permanent: bool = False


@message
class ActorStopped(Message):
    """The child stopped normally (asked to, or by itself) and ran its cleanup."""

    actor: str
    generation: int


# --- readiness reports (child → supervisor); they drive the state machine ------------------------


@message
class FeedReady(Message):
    """A feed is connected, subscribed and has its snapshots: its data can be trusted."""

    feed: str  # the child name in actor_config.toml
    generation: int
    conn_id: int


@message
class FeedDown(Message):
    """A feed lost its connection or its data went stale; it is recovering by itself."""

    feed: str
    generation: int
    reason: str


@message
class TradingClientReady(Message):
    """The trading client (the whale executor) can reach the exchange's REST API and has reconciled."""

    actor: str
    generation: int


@message
class TradingClientDown(Message):
    """The trading client cannot trade now. ``fatal``: not in this incarnation either (its journal cannot be
    written): the supervisor goes to ERROR at once and restarts it on recovery, instead of waiting for a
    ``TradingClientReady`` that cannot come."""

    actor: str
    generation: int
    reason: str
    fatal: bool = False


@message
class DataSynced(Message):
    """Balance, positions and orders were read over REST after a ``SyncAccount`` request."""

    actor: str
    generation: int
    at_ms: int


@message
class ExecutionStarted(Message):
    """The executor began placing orders (READY → ACTING)."""

    actor: str
    generation: int


@message
class ExecutionFinished(Message):
    """The executor finished placing orders (ACTING → READY)."""

    actor: str
    generation: int


# --- commands (supervisor → children, main → supervisor) -----------------------------------------


@message
class PeersChanged(Message):
    """The current peer table: (child name, ActorRef) pairs, sent to every child after any (re)start.

    ``ActorRef`` is a handle, not data (Erlang passes pids the same way); it is the one non-value
    field type the message rules allow.
    """

    peers: tuple[tuple[str, pykka.ActorRef], ...]


@message
class SyncAccount(Message):
    """Read balance, positions and orders over REST now and answer ``DataSynced``."""

    reason: str


@message
class RestartActor(Message):
    """Ask the supervisor to restart a child (operator action); counts against restart intensity."""

    actor: str
    reason: str


@message
class Shutdown(Message):
    """Stop the whole system. Asked (not told) by main.py and tests: the reply is the exit code."""

    reason: str


# --- broadcasts (supervisor → interested children) ---------------------------------------------


@message
class SystemStateChanged(Message):
    """The system state machine moved (state names are ``actors.lifecycle.State`` values)."""

    previous: str
    state: str
    reason: str
    degraded: bool
    at_ms: int


@message
class TradingGateChanged(Message):
    """May the executor send orders? Open only in READY/ACTING and not degraded."""

    open: bool
    reason: str


@message
class ChildReport(Message):
    """One supervised child as the supervisor sees it (for the live table and /v3/status)."""

    name: str
    status: str  # starting | running | backoff | stopped | failed | ...
    generation: int
    restarts: int
    alive: bool
    mailbox_depth: int
    last_failure: str | None


@message
class SupervisorReport(Message):
    """Told to the notify peers every ``report_interval_ms``: the tree and the state machine at a glance."""

    state: str
    state_reason: str
    degraded: bool
    gate_open: bool
    total_restarts: int
    restarts_in_window: int
    children: tuple[ChildReport, ...]
    at_ms: int
