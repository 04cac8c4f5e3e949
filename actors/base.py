"""The supervised-actor base class: failure reporting, one cleanup, table dispatch, peers, Ping/Pong.

Pykka leaves holes this class fills:
- An exception in ``on_start`` only stops the actor, an exception in a told handler calls
  ``on_failure`` (not ``on_stop``), an exception in ``on_stop`` is only logged. Here every one of
  them is reported to the supervisor as ``ActorFailed`` (phase, escaped error text, traceback), and
  the ``cleanup()`` hook runs exactly once on every exit path (after a failure: before the report).
- Dispatch is a dict lookup on ``type(message)`` built once per class from ``@handles`` methods;
  unknown messages are counted and logged (rate-limited), never raised.
- ``tell`` to a dead actor raises ``ActorDeadError``; peers are reached through ``PeerTable``,
  which counts the drop instead. The supervisor re-wires peers with ``PeersChanged`` after restarts.
- The inbox is a ``queue.SimpleQueue`` (~7x cheaper per message than Pykka's ``queue.Queue``).

Subclasses override ``setup()``, ``cleanup()`` and decorated handlers — never Pykka's ``on_start``,
``on_stop``, ``on_failure`` or ``on_receive`` (enforced at class creation). Handlers never block;
time comes from ``Tick`` messages.
"""

from __future__ import annotations

import logging
import queue
import traceback as tb_module
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType, TracebackType
from typing import Any, ClassVar

import pykka

from messages.base import Message
from messages.control import (
    ActorFailed,
    ActorStarted,
    ActorStopped,
    FailurePhase,
    PeersChanged,
    Ping,
    Pong,
    RequestStats,
    Tick,
)

log = logging.getLogger(__name__)

ERROR_TEXT_LIMIT = 300
TRACEBACK_LIMIT = 8000
_RESERVED = ("on_start", "on_stop", "on_failure", "on_receive")


def error_text(exc: BaseException, limit: int = ERROR_TEXT_LIMIT) -> str:
    """``Type: message`` escaped to printable ASCII on one line and cut to ``limit`` characters."""
    text = ascii(f"{type(exc).__name__}: {exc}")[1:-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_traceback(
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
    limit: int = TRACEBACK_LIMIT,
) -> str:
    """The formatted traceback, keeping its tail (where the error is) when too long."""
    text = "".join(tb_module.format_exception(exc_type, exc, tb)) if exc is not None else ""
    return text if len(text) <= limit else "...\n" + text[-(limit - 4) :]


def handles(*message_types: type[Message]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a method as the handler of ``message_types`` (exact type; subclasses resolve via MRO)."""
    if not message_types:
        raise TypeError("handles() needs at least one message type")

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        func._handles = tuple(getattr(func, "_handles", ())) + message_types  # type: ignore[attr-defined]
        return func

    return mark


def mailbox_depth(ref: pykka.ActorRef[Any]) -> int:
    """Approximate number of messages waiting in an actor's inbox (for producers' overflow policy)."""
    try:
        return ref.actor_inbox.qsize()
    except (AttributeError, NotImplementedError):
        return 0


class PeerTable:
    """Name → ActorRef for the peers an actor talks to; ``tell`` never raises.

    Owned by one actor (its thread is the only user); the supervisor replaces the contents with a
    ``PeersChanged`` message after every restart, because refs change when an actor is restarted.
    """

    __slots__ = ("_refs", "drops")

    def __init__(self, refs: Mapping[str, pykka.ActorRef[Any]] | Iterable[tuple[str, pykka.ActorRef[Any]]] = ()) -> None:
        self._refs: dict[str, pykka.ActorRef[Any]] = dict(refs)
        self.drops: dict[str, int] = {}

    def replace(self, pairs: Iterable[tuple[str, pykka.ActorRef[Any]]]) -> None:
        self._refs = dict(pairs)

    def set(self, name: str, ref: pykka.ActorRef[Any] | None) -> None:
        if ref is None:
            self._refs.pop(name, None)
        else:
            self._refs[name] = ref

    def get(self, name: str) -> pykka.ActorRef[Any] | None:
        return self._refs.get(name)

    def names(self) -> tuple[str, ...]:
        return tuple(self._refs)

    def items(self) -> tuple[tuple[str, pykka.ActorRef[Any]], ...]:
        return tuple(self._refs.items())

    def copy(self) -> PeerTable:
        return PeerTable(self._refs)

    def tell(self, name: str, msg: Any) -> bool:
        """Tell ``msg`` to peer ``name``; a missing or dead peer is a counted drop, not an error."""
        ref = self._refs.get(name)
        if ref is not None:
            try:
                ref.tell(msg)
                return True
            except pykka.ActorDeadError:
                pass
        self.drops[name] = self.drops.get(name, 0) + 1
        return False

    def tell_many(self, names: Iterable[str], msg: Any) -> int:
        """Tell ``msg`` to each peer in ``names``; returns how many were delivered."""
        return sum(1 for name in names if self.tell(name, msg))

    def __contains__(self, name: object) -> bool:
        return name in self._refs

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self) -> str:
        return f"PeerTable({sorted(self._refs)}, drops={self.drops})"


class SupervisedActor(pykka.ThreadingActor):
    """Base of every Trader V3 actor. Construct with ``Cls.start(name, generation, supervisor, peers, config)``."""

    _handler_names: ClassVar[dict[type, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr in _RESERVED:
            if attr in cls.__dict__:
                raise TypeError(
                    f"{cls.__name__} must not override {attr}(); use setup()/cleanup()/@handles instead"
                )
        names: dict[type, str] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                for message_type in getattr(value, "_handles", ()):
                    names[message_type] = attr
        cls._handler_names = names

    @staticmethod
    def _create_actor_inbox() -> Any:
        # Pykka only calls put(), get(), empty() (and we call qsize()); SimpleQueue has all of them.
        return queue.SimpleQueue()

    def __init__(
        self,
        name: str,
        generation: int = 1,
        supervisor: pykka.ActorRef[Any] | None = None,
        peers: PeerTable | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.generation = generation
        self.supervisor = supervisor
        self.peers = peers if peers is not None else PeerTable()
        self.config: Mapping[str, Any] = MappingProxyType(dict(config or {}))
        self.handled = 0
        self.unknown = 0
        self.unknown_by_type: dict[str, int] = {}
        self.last_error: str | None = None
        self.max_mailbox_depth = 0
        self._cleaned_up = False
        self._failure_reported = False
        # Bound handlers, built once; subclass-of-message lookups are added lazily.
        self._dispatch: dict[type, Callable[[Any], Any]] = {
            message_type: getattr(self, attr) for message_type, attr in self._handler_names.items()
        }

    # --- hooks for subclasses -------------------------------------------------------------------

    def setup(self) -> None:
        """Runs in the actor thread before any message; an exception is reported as phase 'on_start'."""

    def cleanup(self) -> None:
        """Release resources (threads, sockets, files). Runs exactly once, on every exit path."""

    # --- built-in handlers ----------------------------------------------------------------------

    @handles(Ping)
    def on_ping(self, message: Ping) -> None:
        self.tell_supervisor(Pong(actor=self.name, generation=self.generation, token=message.token))

    @handles(PeersChanged)
    def on_peers_changed(self, message: PeersChanged) -> None:
        self.peers.replace(message.peers)

    @handles(RequestStats)
    def on_request_stats(self, message: RequestStats) -> dict[str, Any]:
        return self.stats()

    @handles(Tick)
    def on_tick(self, message: Tick) -> None:
        """Default: sample the mailbox depth. Subclasses overriding this should call super()."""
        depth = self.actor_inbox.qsize()
        if depth > self.max_mailbox_depth:
            self.max_mailbox_depth = depth

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "generation": self.generation,
            "handled": self.handled,
            "unknown": self.unknown,
            "mailbox_depth": self.actor_inbox.qsize(),
            "max_mailbox_depth": self.max_mailbox_depth,
            "peer_drops": dict(self.peers.drops),
            "last_error": self.last_error,
        }

    # --- Pykka hooks (final) --------------------------------------------------------------------

    def on_start(self) -> None:
        try:
            self.setup()
        except Exception as exc:
            self._run_cleanup(report=False)
            self._report_failure("on_start", type(exc), exc, exc.__traceback__)
            raise  # Pykka logs it and stops the actor
        self.tell_supervisor(ActorStarted(actor=self.name, generation=self.generation))

    def on_receive(self, message: Any) -> Any:
        handler = self._dispatch.get(type(message))
        if handler is None:
            handler = self._resolve(type(message))
        self.handled += 1
        try:
            return handler(message)
        except Exception as exc:
            # Told: Pykka stops us and calls on_failure. Asked: the caller gets the exception.
            self.last_error = error_text(exc)
            raise

    def on_failure(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._run_cleanup(report=False)
        self._report_failure("handler", exc_type, exc, tb)

    def on_stop(self) -> None:
        if self._run_cleanup():
            self.tell_supervisor(ActorStopped(actor=self.name, generation=self.generation))

    # --- internals ------------------------------------------------------------------------------

    def _resolve(self, message_type: type) -> Callable[[Any], Any]:
        for base in message_type.__mro__[1:]:
            attr = self._handler_names.get(base)
            if attr is not None:
                handler = getattr(self, attr)
                break
        else:
            handler = self._on_unknown
        self._dispatch[message_type] = handler
        return handler

    def _on_unknown(self, message: Any) -> None:
        self.handled -= 1  # not handled after all
        self.unknown += 1
        kind = type(message).__name__
        seen = self.unknown_by_type.get(kind, 0) + 1
        self.unknown_by_type[kind] = seen
        if seen & (seen - 1) == 0:  # 1st, 2nd, 4th, 8th... occurrence: rate-limited logging
            log.warning("%s: unknown message %s (seen %d times)", self.name, kind, seen)

    def tell_supervisor(self, msg: Message) -> None:
        """Report to the supervisor (readiness: FeedReady/FeedDown, TradingClientReady, DataSynced, ...)."""
        if self.supervisor is None:
            return
        try:
            self.supervisor.tell(msg)
        except pykka.ActorDeadError:
            log.warning("%s: supervisor is gone, dropped %s", self.name, type(msg).__name__)

    def _report_failure(
        self,
        phase: FailurePhase,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        text = error_text(exc) if exc is not None else "unknown error"
        self.last_error = text
        self._failure_reported = True
        log.error("%s gen %d failed in %s: %s", self.name, self.generation, phase, text)
        self.tell_supervisor(
            ActorFailed(
                actor=self.name,
                generation=self.generation,
                phase=phase,
                error=text,
                traceback=format_traceback(exc_type, exc, tb),
                # An exception class may say a restart cannot fix it (a corrupt journal): no restart loop.
                permanent=bool(getattr(exc, "permanent", False)),
            )
        )

    def _run_cleanup(self, report: bool = True) -> bool:
        """Run ``cleanup()`` once; False if it raised (reported as phase 'on_stop' when ``report``).

        After a failure the cleanup runs BEFORE the failure is reported, as OTP's EXIT signal comes after
        the process is gone: a replacement must not race the old instance's cleanup (the journal's writer
        lock, sockets, worker threads). A cleanup error there is only logged: the report names the cause.
        """
        if self._cleaned_up:
            return True
        self._cleaned_up = True
        try:
            self.cleanup()
        except Exception as exc:
            if report:
                self._report_failure("on_stop", type(exc), exc, exc.__traceback__)
            else:
                log.error("%s gen %d: cleanup after a failure raised: %s", self.name, self.generation,
                          error_text(exc))
            return False
        return True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} gen {self.generation}>"
