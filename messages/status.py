"""Status messages: asking the broadcaster for the status snapshot, subscribing to its fan-out, console
activity lines, and the internal results of the state keeper's REST sync worker and the status API.

``Subscribe`` carries an ``ActorRef`` (a handle, not data; ``PeersChanged`` does the same). Subscribers
receive the original immutable messages (StateChanged, WhaleQueueUpdated, WhaleDecisionMade, ...),
conflated per kind when they fall behind.
"""

from __future__ import annotations

import pykka

from .account import AccountSynced
from .base import Message, message


@message
class GetStatus(Message):
    """Ask (main.py, tests) the broadcaster for its status snapshot: a JSON-ready dict."""


@message
class Subscribe(Message):
    """Register an in-process subscriber actor (replaces one with the same ``subscriber`` id).

    While the subscriber's inbox holds ``max_inbox`` messages or more, new messages wait in a per-subscriber
    buffer: latest-wins kinds (state, whale queue, supervisor report, feed status per feed) keep only the
    newest (the older one is counted as conflated); the others (decisions, processing, transitions, orders,
    activity) are appended up to ``max_pending`` (the oldest is dropped and counted).
    """

    subscriber: str
    ref: pykka.ActorRef
    max_inbox: int = 100
    max_pending: int = 200


@message
class Unsubscribe(Message):
    subscriber: str


@message
class SystemActivity(Message):
    """A console line for the UI (the seed's ``system_activity``): any actor may tell it to the broadcaster.

    ``metadata`` is (key, value) pairs of short strings.
    """

    activity_type: str  # state_transition | sync | health_check | trading_decision | cleanup | ...
    message: str
    at_ms: int
    level: str = "info"
    metadata: tuple[tuple[str, str], ...] = ()


@message
class CleanupHttpRequested(Message):
    """Internal: the status API's event loop asks the broadcaster to forward a cleanup to the executor."""

    request_id: int
    orphaned_only: bool


@message
class SyncFinished(Message):
    """Internal: the state keeper's REST sync worker finished sync ``sync_id`` (``result`` or ``error``)."""

    sync_id: int
    result: AccountSynced | None
    error: str | None = None
