"""The health supervisor: OTP-style supervision of every actor, and the system state machine.

Pykka has no supervision, so this actor provides it:
- Children come from child specs (``actors.config.ChildSpec``) and are built by factories
  ``factory(name, generation, supervisor_ref, peers) -> ActorRef`` given in code (or imported from
  the spec's ``class``). Start is ordered by ``start_order``; stop is in reverse order.
- Failures are detected three ways: ``ActorFailed`` reports (older generations ignored),
  ``is_alive()`` on every Tick, and Ping/Pong (a Ping unanswered within ``ping_timeout`` = hung;
  a child that never finishes ``setup()`` within it is hung too).
- Restarts follow the restart type, are delayed by a per-child jittered exponential ``Backoff``
  (reset once the child has been up a while) and are scheduled on Ticks — this actor never sleeps.
  More than ``max_restarts`` in ``restart_window`` across the tree (``RestartIntensity``) → ERROR.
- Permanent failures skip the restart loop: an ``ActorFailed(permanent=True)`` (the exception said a restart
  cannot fix it, e.g. a corrupt journal) or a ``TradingClientDown(fatal=True)`` (the executor's journal cannot
  be written) puts the system in ERROR at once with the reason. The child is tried again by the recovery from
  ERROR (the operator may have fixed the cause); failing again is another ERROR, and repeated ERRORs escalate.
- It is the only writer of the state machine (``actors.lifecycle``), climbing STARTUP →
  INITIALIZING → ORDERBOOK_CONNECT → (TRADING_CLIENT_CONNECT → KALSHI_DATA_SYNC →) READY from
  readiness reports, falling back to ORDERBOOK_CONNECT when a requirement is lost, timing states out
  into ERROR, recovering from ERROR through STARTUP after a cool-down, and escalating repeated ERRORs
  to SHUTDOWN with a non-zero exit code. Every event goes to the supervisor log.

Blocking: only ``Shutdown`` waits for children to stop (the ordered shutdown), each bounded by the
child's ``shutdown_timeout``. ``RestartActor`` does not wait: the child is "stopping" until it is gone
(``ActorStopped`` or seen dead on a Tick) or its ``shutdown_timeout`` passes (then it is a zombie), and
only then is its replacement scheduled — never two instances at once (journal lock, sockets).
"""

from __future__ import annotations

import importlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pykka

from messages.control import (
    ActorFailed,
    ActorStarted,
    ActorStopped,
    DataSynced,
    ExecutionFinished,
    ExecutionStarted,
    FeedDown,
    FeedReady,
    PeersChanged,
    Ping,
    Pong,
    RestartActor,
    Shutdown,
    SyncAccount,
    SystemStateChanged,
    SupervisorReport,
    ChildReport,
    Tick,
    TradingClientDown,
    TradingClientReady,
    TradingGateChanged,
)
from messages.feed import FeedStatus, SequenceGap

from .base import PeerTable, SupervisedActor, error_text, format_traceback, handles, mailbox_depth
from .config import ActorSystemConfig, ChildSpec, ConfigError
from .lifecycle import State, timed_out, trading_gate_open, try_transition
from .supervisor_log import SupervisorLog

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ESCALATED = 70  # EX_SOFTWARE: repeated ERROR or no recovery; let systemd/the container act
EXIT_SUPERVISOR_FAILED = 71

Factory = Callable[[str, int, "pykka.ActorRef[Any]", PeerTable], "pykka.ActorRef[Any]"]

_NS = 1_000_000_000


# --- pure parts ---------------------------------------------------------------------------------


class RestartIntensity:
    """OTP's MaxR/MaxT: at most ``max_restarts`` events in any ``window_ns`` (a sliding window).

    ``record(now)`` counts one event at ``now`` and returns False when the events inside
    ``(now - window, now]`` exceed the limit — the caller then escalates.
    """

    def __init__(self, max_restarts: int, window_ns: int) -> None:
        if max_restarts < 0 or window_ns <= 0:
            raise ValueError("max_restarts must be >= 0 and window_ns > 0")
        self.max_restarts = max_restarts
        self.window_ns = window_ns
        self._times: deque[int] = deque()

    def _prune(self, now_ns: int) -> None:
        horizon = now_ns - self.window_ns
        while self._times and self._times[0] <= horizon:
            self._times.popleft()

    def record(self, now_ns: int) -> bool:
        self._prune(now_ns)
        self._times.append(now_ns)
        return len(self._times) <= self.max_restarts

    def count(self, now_ns: int) -> int:
        self._prune(now_ns)
        return len(self._times)


class Backoff:
    """Exponential delay with ± ``jitter`` fraction, capped at ``max_ns``; ``reset()`` after stability."""

    def __init__(
        self,
        initial_ns: int,
        max_ns: int,
        multiplier: float = 2.0,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        if initial_ns < 0 or max_ns < initial_ns or multiplier < 1 or not 0 <= jitter < 1:
            raise ValueError("need 0 <= initial <= max, multiplier >= 1, 0 <= jitter < 1")
        self.initial_ns = initial_ns
        self.max_ns = max_ns
        self.multiplier = multiplier
        self.jitter = jitter
        self.rng = rng or random.Random()
        self.attempts = 0

    def base_delay(self, attempt: int) -> int:
        delay = float(self.initial_ns)
        for _ in range(attempt):  # loop instead of ** so a huge attempt count cannot overflow
            delay *= self.multiplier
            if delay >= self.max_ns:
                return self.max_ns
        return int(delay)

    def next_delay(self) -> int:
        base = self.base_delay(self.attempts)
        self.attempts += 1
        spread = self.rng.uniform(-self.jitter, self.jitter)
        return max(0, min(self.max_ns, int(base * (1.0 + spread))))

    def reset(self) -> None:
        self.attempts = 0


@dataclass
class Readiness:
    """What the climb to READY waits for; pure, fed by the supervisor's handlers."""

    trading_enabled: bool
    critical_feeds: frozenset[str]
    feeds_ready: set[str] = field(default_factory=set)
    trading_client_ready: bool = False
    data_synced: bool = False

    def requirements_met(self) -> bool:
        """True while READY/ACTING may be held."""
        if not self.critical_feeds <= self.feeds_ready:
            return False
        return not self.trading_enabled or self.trading_client_ready

    def next_state(self, state: State, all_children_running: bool) -> State | None:
        """The state to move to now, or None to stay."""
        if state is State.INITIALIZING:
            return State.ORDERBOOK_CONNECT if all_children_running else None
        if state is State.ORDERBOOK_CONNECT:
            if not self.critical_feeds <= self.feeds_ready:
                return None
            return State.TRADING_CLIENT_CONNECT if self.trading_enabled else State.READY
        if state is State.TRADING_CLIENT_CONNECT:
            return State.KALSHI_DATA_SYNC if self.trading_client_ready else None
        if state is State.KALSHI_DATA_SYNC:
            return State.READY if self.data_synced else None
        if state is State.READY:
            return None if self.requirements_met() else State.ORDERBOOK_CONNECT
        if state is State.ACTING:
            return None if self.requirements_met() else State.READY
        return None


# --- the actor ----------------------------------------------------------------------------------


@dataclass
class _Child:
    spec: ChildSpec
    backoff: Backoff
    ref: pykka.ActorRef[Any] | None = None
    generation: int = 0
    # stopped | starting | running | stopping (restart requested) | waiting_restart | exited (normal, not
    # restarted) | failed | hung
    status: str = "stopped"
    spawned_ns: int = 0
    started_ns: int = 0
    restart_at_ns: int | None = None
    stop_deadline_ns: int = 0  # while stopping: past this the old instance is a zombie
    stop_reason: str = ""
    stop_future: Any = None  # pykka's stop future: done once on_stop (the cleanup) has returned
    ping_token: int | None = None
    ping_sent_ns: int = 0
    last_ping_ns: int = 0
    restarts: int = 0
    last_failure: str | None = None


def class_factory(cls: type[SupervisedActor], settings: Mapping[str, Any] | None = None) -> Factory:
    """A factory that starts ``cls(name, generation, supervisor, peers, settings)``."""

    def start(name: str, generation: int, supervisor: pykka.ActorRef[Any], peers: PeerTable) -> pykka.ActorRef[Any]:
        return cls.start(name, generation, supervisor, peers, settings or {})

    return start


def import_actor_class(path: str) -> type[SupervisedActor]:
    """``"package.module:Class"`` → the class, which must be a SupervisedActor (ConfigError otherwise)."""
    module_name, _, class_name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"actor class {path}: cannot import ({type(exc).__name__}: {exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, SupervisedActor)):
        raise ConfigError(f"actor class {path}: not a SupervisedActor subclass")
    return cls


def _safe_stop(ref: pykka.ActorRef[Any], timeout_s: float) -> bool:
    """Stop ``ref`` and wait up to ``timeout_s``; False if it did not stop in time."""
    try:
        ref.stop(block=True, timeout=timeout_s)
    except pykka.Timeout:
        return False
    except pykka.ActorDeadError:
        pass
    except Exception:  # noqa: BLE001 - a child whose stop raises must not stop the others' shutdown
        log.exception("stopping an actor raised; treating it as not stopped")
        return False
    return True


class HealthSupervisor(SupervisedActor):
    """Start with ``HealthSupervisor.start(config, factories, data_dir=..., ...)``; stop with ``shutdown_system``."""

    def __init__(
        self,
        config: ActorSystemConfig,
        factories: Mapping[str, Factory] | None = None,
        *,
        data_dir: str | Path,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        rng: random.Random | None = None,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__("health_supervisor", 1, None, PeerTable(), {})
        self.cfg = config.supervisor
        self.rng = rng or random.Random()
        self.on_exit = on_exit
        factories = dict(factories or {})
        self.factories: dict[str, Factory] = {}
        self.children: dict[str, _Child] = {}
        for spec in config.enabled_children:  # already sorted by start order
            factory = factories.get(spec.name)
            if factory is None:
                if spec.class_path is None:
                    raise ConfigError(f"actors.{spec.name}: no factory given and no 'class' configured")
                factory = class_factory(import_actor_class(spec.class_path), spec.settings)
            self.factories[spec.name] = factory
            backoff = Backoff(
                self.cfg.backoff_initial_ns,
                self.cfg.backoff_max_ns,
                self.cfg.backoff_multiplier,
                self.cfg.backoff_jitter,
                self.rng,
            )
            self.children[spec.name] = _Child(spec=spec, backoff=backoff)
        if self.cfg.trading_enabled and self.cfg.trading_client not in self.children:
            raise ConfigError(
                f"supervisor.trading_client: trading is enabled but actor {self.cfg.trading_client!r} is not configured"
            )
        self.readiness = Readiness(
            trading_enabled=self.cfg.trading_enabled,
            critical_feeds=frozenset(n for n, c in self.children.items() if c.spec.feed and c.spec.critical),
        )
        self.intensity = RestartIntensity(self.cfg.max_restarts, self.cfg.restart_window_ns)
        self.error_intensity = RestartIntensity(self.cfg.max_errors, self.cfg.error_window_ns)
        self.slog = SupervisorLog(Path(data_dir) / self.cfg.log_file, wall_clock_ns)
        self._wall = wall_clock_ns
        self.now_ns = clock_ns()
        self._last_report_ns = 0
        self.state = State.STARTUP
        self.state_entered_ns = self.now_ns
        self.state_reason = "process start"
        self.degraded = False
        self.gate_open = False
        self.exit_code: int | None = None
        self.zombies: list[tuple[str, int, pykka.ActorRef[Any]]] = []
        self.feed_status: dict[str, FeedStatus] = {}
        self.total_restarts = 0
        self._ping_token = 0
        self._shut_down = False
        self._start_queue: list[str] = []  # ordered start: next child spawns once the previous started
        self._in_order: str | None = None

    # --- setup / cleanup ------------------------------------------------------------------------

    def setup(self) -> None:
        self.slog.write("state", mono_ns=self.now_ns, state_after=self.state.name, reason=self.state_reason)
        self._go(State.INITIALIZING, "starting children")
        self._start_children()
        self._advance()

    def cleanup(self) -> None:
        # Reached on normal stop after Shutdown (nothing left to do) or when this actor itself fails
        # or is stopped without Shutdown: then the children must not be left running unsupervised.
        if not self._shut_down:
            self._shutdown("supervisor stopped without Shutdown", EXIT_SUPERVISOR_FAILED)
        self.slog.close()

    # --- time -----------------------------------------------------------------------------------

    @handles(Tick)
    def on_tick(self, message: Tick) -> None:
        super().on_tick(message)
        if message.now_mono_ns > self.now_ns:
            self.now_ns = message.now_mono_ns
        if self._shut_down:
            return
        now = self.now_ns
        for child in self.children.values():
            if child.spec.ticks and child.status in ("starting", "running") and child.ref is not None:
                self._tell_child(child, message)
        self._check_liveness()
        self._check_stopping()
        self._check_hangs()
        self._prune_zombies()
        if self.state not in (State.ERROR, State.SHUTDOWN):
            self._run_due_restarts()
        for child in self.children.values():
            if (
                child.status == "running"
                and child.backoff.attempts
                and now - child.started_ns >= self.cfg.backoff_reset_after_ns
            ):
                child.backoff.reset()
        self._check_state_timeout()
        if self.state is State.ERROR and not self._shut_down:
            self._maybe_recover()
        self._advance()
        if now - self._last_report_ns >= self.cfg.report_interval_ns:
            self._last_report_ns = now
            self.peers.tell_many(sorted(self._notify_names()), self._report(message.now_wall_ms))

    def _report(self, at_ms: int) -> SupervisorReport:
        children = tuple(
            ChildReport(
                name=name,
                status=c.status,
                generation=c.generation,
                restarts=c.restarts,
                alive=c.ref is not None and c.ref.is_alive(),
                mailbox_depth=mailbox_depth(c.ref) if c.ref is not None else 0,
                last_failure=c.last_failure,
            )
            for name, c in self.children.items()
        )
        return SupervisorReport(
            state=self.state.name,
            state_reason=self.state_reason,
            degraded=self.degraded,
            gate_open=self.gate_open,
            total_restarts=self.total_restarts,
            restarts_in_window=self.intensity.count(self.now_ns),
            children=children,
            at_ms=at_ms,
        )

    # --- reports from children ------------------------------------------------------------------

    @handles(ActorStarted)
    def on_actor_started(self, message: ActorStarted) -> None:
        child = self._current(message.actor, message.generation)
        if child is None or child.status != "starting":
            return
        child.status = "running"
        child.started_ns = self.now_ns
        child.last_ping_ns = self.now_ns
        self.slog.write("actor_started", mono_ns=self.now_ns, actor=child.spec.name, generation=child.generation)
        if child.spec.name == self._in_order:
            self._start_next()
        if child.spec.name in self._notify_names():
            # A (re)started listener needs the current state: it missed the broadcasts.
            self._tell_child(child, self._state_message("current state"))
            self._tell_child(child, TradingGateChanged(open=self.gate_open, reason="current gate"))
        self._advance()

    @handles(ActorFailed)
    def on_actor_failed(self, message: ActorFailed) -> None:
        child = self._current(message.actor, message.generation)
        if child is not None and message.permanent and child.status == "waiting_restart":
            # is_alive() saw it dead before this report arrived and scheduled a restart the report says
            # cannot help: take the restart back.
            child.last_failure = f"{message.phase}: {message.error}"
            self.slog.write(
                "actor_failed", mono_ns=self.now_ns, actor=child.spec.name, generation=child.generation,
                state_before=self.state.name, reason=child.last_failure, traceback=message.traceback,
                extra={"phase": message.phase, "permanent": True, "after_liveness_check": True},
            )
            self._fail_permanently(child, child.last_failure)
            return
        if child is None or child.status not in ("starting", "running"):
            # An older generation, or already handled (is_alive saw it first): keep the traceback.
            self.slog.write(
                "failure_report",
                mono_ns=self.now_ns,
                actor=message.actor,
                generation=message.generation,
                reason=f"{message.phase}: {message.error}",
                traceback=message.traceback,
                extra={"ignored": True},
            )
            return
        child.last_failure = f"{message.phase}: {message.error}"
        self.slog.write(
            "actor_failed",
            mono_ns=self.now_ns,
            actor=child.spec.name,
            generation=child.generation,
            state_before=self.state.name,
            reason=child.last_failure,
            traceback=message.traceback,
            extra={"phase": message.phase, "permanent": message.permanent},
        )
        self._child_exited(child, abnormal=True, reason=child.last_failure, permanent=message.permanent)

    @handles(ActorStopped)
    def on_actor_stopped(self, message: ActorStopped) -> None:
        child = self._current(message.actor, message.generation)
        if child is not None and child.status == "stopping":
            child.stop_future = None  # sent at the end of its cleanup: it is gone
            self._check_stopping()  # a requested restart: its replacement may be scheduled now
            return
        if child is None or child.status not in ("starting", "running"):
            return  # we stopped it ourselves, or it is an older generation
        self.slog.write("actor_stopped", mono_ns=self.now_ns, actor=child.spec.name, generation=child.generation)
        self._child_exited(child, abnormal=False, reason="stopped by itself")

    @handles(Pong)
    def on_pong(self, message: Pong) -> None:
        child = self._current(message.actor, message.generation)
        if child is not None and child.ping_token == message.token:
            child.ping_token = None

    @handles(FeedReady)
    def on_feed_ready(self, message: FeedReady) -> None:
        child = self._current(message.feed, message.generation)
        if child is None or not child.spec.feed:
            return
        if message.feed not in self.readiness.feeds_ready:
            self.readiness.feeds_ready.add(message.feed)
            self.slog.write(
                "feed_up", mono_ns=self.now_ns, actor=message.feed, generation=message.generation,
                extra={"conn_id": message.conn_id},
            )
        self._advance()

    @handles(FeedDown)
    def on_feed_down(self, message: FeedDown) -> None:
        child = self._current(message.feed, message.generation)
        if child is None or not child.spec.feed:
            return
        if message.feed in self.readiness.feeds_ready:
            self.readiness.feeds_ready.discard(message.feed)
            self.slog.write(
                "feed_down", mono_ns=self.now_ns, actor=message.feed, generation=message.generation,
                reason=message.reason,
            )
        self._advance()

    @handles(FeedStatus)
    def on_feed_status(self, message: FeedStatus) -> None:
        self.feed_status[message.feed] = message

    @handles(SequenceGap)
    def on_sequence_gap(self, message: SequenceGap) -> None:
        self.slog.write(
            "feed_gap", mono_ns=self.now_ns, actor=message.feed, reason=message.kind,
            extra={"conn_id": message.conn_id, "sid": message.sid, "expected": message.expected, "got": message.got},
        )

    @handles(TradingClientReady)
    def on_trading_client_ready(self, message: TradingClientReady) -> None:
        if message.actor == self.cfg.trading_client and self._current(message.actor, message.generation):
            self.readiness.trading_client_ready = True
            self.slog.write("trading_client_up", mono_ns=self.now_ns, actor=message.actor, generation=message.generation)
            self._advance()

    @handles(TradingClientDown)
    def on_trading_client_down(self, message: TradingClientDown) -> None:
        child = self._current(message.actor, message.generation)
        if message.actor != self.cfg.trading_client or child is None:
            return
        self.readiness.trading_client_ready = False
        self.slog.write(
            "trading_client_down", mono_ns=self.now_ns, actor=message.actor,
            generation=message.generation, reason=message.reason, extra={"fatal": message.fatal},
        )
        if not message.fatal:
            self._advance()  # it recovers by itself (reconcile retries): wait for TradingClientReady
            return
        # It cannot trade again in this incarnation (its journal cannot be written): no waiting in
        # ORDERBOOK_CONNECT for a TradingClientReady that cannot come.
        self._enter_error(f"{message.reason} ({message.actor} cannot trade until restarted)")
        if not self._shut_down and child.status in ("starting", "running") and child.ref is not None:
            # Stop it now, the way a restart request does (it told its worker to cancel our resting orders;
            # its cleanup lets that job finish). Once gone it is "stopped", and the recovery from ERROR starts
            # a new instance, which reopens the journal. Told after the ERROR broadcast, so it sees that too.
            self._request_stop(child, f"fatal: {message.reason}")

    @handles(DataSynced)
    def on_data_synced(self, message: DataSynced) -> None:
        if self.state is State.KALSHI_DATA_SYNC and self._current(message.actor, message.generation):
            self.readiness.data_synced = True
            self.slog.write("data_synced", mono_ns=self.now_ns, actor=message.actor, generation=message.generation)
            self._advance()

    @handles(ExecutionStarted)
    def on_execution_started(self, message: ExecutionStarted) -> None:
        if message.actor == self.cfg.trading_client and self._current(message.actor, message.generation):
            if self.state is State.READY and self.gate_open:
                self._go(State.ACTING, "executing orders")
            else:
                self.slog.write(
                    "transition_refused", mono_ns=self.now_ns, actor=message.actor,
                    state_before=self.state.name, state_after=State.ACTING.name,
                    reason="execution started while the gate is closed",
                )

    @handles(ExecutionFinished)
    def on_execution_finished(self, message: ExecutionFinished) -> None:
        if self.state is State.ACTING and self._current(message.actor, message.generation):
            self._go(State.READY, "execution finished")
            self._advance()

    # --- commands -------------------------------------------------------------------------------

    @handles(RestartActor)
    def on_restart_actor(self, message: RestartActor) -> bool:
        child = self.children.get(message.actor)
        if child is None or self.state in (State.ERROR, State.SHUTDOWN):
            return False
        if child.status == "stopping":
            return True  # already on its way out
        self.slog.write("restart_requested", mono_ns=self.now_ns, actor=message.actor, reason=message.reason)
        reason = f"restart requested: {message.reason}"
        if child.status in ("starting", "running") and child.ref is not None:
            self._request_stop(child, reason)
            self._advance()
            return True
        self._child_exited(child, abnormal=True, reason=reason, force=True)
        return True

    def _request_stop(self, child: _Child, reason: str) -> None:
        """Ask a live child to stop and return at once: it is "stopping" until its cleanup is over (or its
        ``shutdown_timeout`` passes: a zombie); then _check_stopping hands it to _child_exited (force=True),
        which schedules the replacement — or, in ERROR, leaves it "stopped" for the recovery to start."""
        ref = child.ref
        if ref is None:  # callers check; nothing to stop
            return
        child.status = "stopping"
        child.stop_deadline_ns = self.now_ns + child.spec.shutdown_timeout_ns
        child.stop_reason = reason
        child.ping_token = None
        self._drop_readiness(child)  # the gate closes now, not when the old instance is gone
        child.stop_future = ref.stop(block=False)

    def _check_stopping(self) -> None:
        for child in self.children.values():
            if child.status != "stopping":
                continue
            # is_alive() turns False before on_stop runs: only the stop future says the cleanup is over.
            if child.stop_future is not None:
                try:
                    child.stop_future.get(timeout=0)
                    child.stop_future = None
                except pykka.Timeout:
                    if self.now_ns < child.stop_deadline_ns:
                        continue
                    timeout_s = child.spec.shutdown_timeout_ns / _NS
                    if child.ref is not None:
                        self._add_zombie(child.spec.name, child.generation, child.ref)
                    self.slog.write("stop_timeout", mono_ns=self.now_ns, actor=child.spec.name,
                                    generation=child.generation, reason=f"did not stop within {timeout_s:g}s")
                    child.stop_future = None
            self._child_exited(child, abnormal=True, reason=child.stop_reason, force=True)

    @handles(Shutdown)
    def on_shutdown(self, message: Shutdown) -> int:
        if not self._shut_down:
            self._shutdown(message.reason, EXIT_OK)
        return self.exit_code if self.exit_code is not None else EXIT_OK

    def stats(self) -> dict[str, Any]:
        base = super().stats()
        base.update(
            state=self.state.name,
            state_reason=self.state_reason,
            degraded=self.degraded,
            gate_open=self.gate_open,
            exit_code=self.exit_code,
            total_restarts=self.total_restarts,
            restarts_in_window=self.intensity.count(self.now_ns),
            feeds_ready=sorted(self.readiness.feeds_ready),
            refs=dict(self.peers.items()),  # current ActorRef per child (for main.py and tests)
            zombies=[f"{name}#{gen}" for name, gen, ref in self.zombies if ref.is_alive()],
            children={
                name: {
                    "status": c.status,
                    "generation": c.generation,
                    "restarts": c.restarts,
                    "last_failure": c.last_failure,
                    "alive": c.ref is not None and c.ref.is_alive(),
                    "ping_outstanding": c.ping_token is not None,
                }
                for name, c in self.children.items()
            },
        )
        return base

    # --- children -------------------------------------------------------------------------------

    def _current(self, name: str, generation: int) -> _Child | None:
        child = self.children.get(name)
        if child is None or child.generation != generation:
            return None
        return child

    def _tell_child(self, child: _Child, msg: Any) -> None:
        if child.ref is None:
            return
        try:
            child.ref.tell(msg)
        except pykka.ActorDeadError:
            pass  # found dead by the next liveness check

    def _start_children(self) -> None:
        """Start every child that is not running, one at a time in start order (OTP ordered start)."""
        # A stopping child is left alone: its exit schedules the replacement.
        self._start_queue = [n for n, c in self.children.items() if c.status not in ("starting", "running", "stopping")]
        self._start_next()

    def _start_next(self) -> None:
        self._in_order = None
        while self._start_queue and not self._shut_down and self.state is not State.ERROR:
            child = self.children[self._start_queue.pop(0)]
            if child.status in ("starting", "running", "stopping"):
                continue
            self._spawn(child)
            if child.status == "starting" and child.ref is not None:
                self._in_order = child.spec.name
                return

    def _spawn(self, child: _Child) -> None:
        name = child.spec.name
        child.generation += 1
        child.restart_at_ns = None
        child.ping_token = None
        child.spawned_ns = self.now_ns
        child.last_ping_ns = self.now_ns
        try:
            ref = self.factories[name](name, child.generation, self.actor_ref, self.peers.copy())
        except Exception as exc:  # a factory that cannot even build the actor: same as a start failure
            child.ref = None
            child.status = "starting"
            child.last_failure = f"factory: {error_text(exc)}"
            self.slog.write(
                "actor_failed", mono_ns=self.now_ns, actor=name, generation=child.generation,
                state_before=self.state.name, reason=child.last_failure,
                traceback=format_traceback(type(exc), exc, exc.__traceback__), extra={"phase": "factory"},
            )
            self._child_exited(child, abnormal=True, reason=child.last_failure)
            return
        child.ref = ref
        child.status = "starting"
        self.peers.set(name, ref)
        self.slog.write("actor_spawned", mono_ns=self.now_ns, actor=name, generation=child.generation)
        self._rewire()

    def _rewire(self) -> None:
        """Send the current peer table to every live child (refs change on every restart)."""
        message = PeersChanged(peers=self.peers.items())
        for child in self.children.values():
            if child.status in ("starting", "running"):
                self._tell_child(child, message)

    def _child_exited(
        self, child: _Child, *, abnormal: bool, reason: str, force: bool = False, permanent: bool = False
    ) -> None:
        self._handle_exit(child, abnormal=abnormal, reason=reason, force=force, permanent=permanent)
        if child.spec.name == self._in_order:
            self._start_next()  # a child that failed to start does not hold up the ones after it

    def _drop_readiness(self, child: _Child) -> None:
        if child.spec.feed:
            self.readiness.feeds_ready.discard(child.spec.name)
        if child.spec.name == self.cfg.trading_client:
            self.readiness.trading_client_ready = False

    def _handle_exit(self, child: _Child, *, abnormal: bool, reason: str, force: bool, permanent: bool = False) -> None:
        name = child.spec.name
        child.ping_token = None
        self._drop_readiness(child)
        if self._shut_down or self.state in (State.ERROR, State.SHUTDOWN):
            child.status = "stopped"  # restarted on recovery
            self._advance()
            return
        restart_type = child.spec.restart
        wanted = force or restart_type == "permanent" or (restart_type == "transient" and abnormal)
        if not wanted:
            child.status = "failed" if abnormal else "exited"
            if abnormal and child.spec.critical:
                self._enter_error(f"critical actor {name} failed and is not restarted ({restart_type})")
            self._advance()
            return
        if permanent:
            self._fail_permanently(child, reason)
            return
        if not self.intensity.record(self.now_ns):
            child.status = "failed"
            window_s = self.cfg.restart_window_ns / _NS
            self._enter_error(
                f"restart intensity exceeded: more than {self.cfg.max_restarts} restarts in {window_s:g}s "
                f"(last: {name}: {reason})"
            )
            return
        delay = child.backoff.next_delay()
        child.status = "waiting_restart"
        child.restart_at_ns = self.now_ns + delay
        self.slog.write(
            "restart_scheduled", mono_ns=self.now_ns, actor=name, generation=child.generation,
            reason=reason, extra={"delay_ms": delay // 1_000_000, "attempt": child.backoff.attempts},
        )
        self._advance()

    def _fail_permanently(self, child: _Child, reason: str) -> None:
        """A restart cannot fix this failure (a corrupt journal replays the same bytes): ERROR now, not
        after a restart loop has exhausted the intensity. "failed" children are started again by the
        recovery from ERROR (the operator may have fixed the cause); failing again is another ERROR,
        and error_intensity turns repeated ERRORs into SHUTDOWN."""
        name = child.spec.name
        child.status = "failed"
        child.restart_at_ns = None
        self.slog.write(
            "restart_refused", mono_ns=self.now_ns, actor=name, generation=child.generation,
            state_before=self.state.name, reason=reason, extra={"permanent": True},
        )
        self._enter_error(f"{name} failed permanently, not restarted: {reason}")

    def _run_due_restarts(self) -> None:
        for child in self.children.values():
            if child.status == "waiting_restart" and child.restart_at_ns is not None and child.restart_at_ns <= self.now_ns:
                child.restarts += 1
                self.total_restarts += 1
                previous = child.generation
                self._spawn(child)
                self.slog.write(
                    "restart", mono_ns=self.now_ns, actor=child.spec.name, generation=child.generation,
                    extra={"previous_generation": previous, "restarts": child.restarts},
                )

    def _check_liveness(self) -> None:
        for child in self.children.values():
            if child.status in ("starting", "running") and child.ref is not None and not child.ref.is_alive():
                child.last_failure = "not alive (no report)"
                self.slog.write(
                    "actor_dead", mono_ns=self.now_ns, actor=child.spec.name, generation=child.generation,
                    state_before=self.state.name, reason=child.last_failure,
                )
                self._child_exited(child, abnormal=True, reason=child.last_failure)

    def _check_hangs(self) -> None:
        now = self.now_ns
        for child in list(self.children.values()):
            if child.status == "starting":
                hung = now - child.spawned_ns > child.spec.ping_timeout_ns
                why = "setup() did not finish"
            elif child.status == "running":
                if child.ping_token is None:
                    if now - child.last_ping_ns >= self.cfg.ping_interval_ns:
                        self._ping_token += 1
                        child.ping_token = self._ping_token
                        child.ping_sent_ns = now
                        child.last_ping_ns = now
                        self._tell_child(child, Ping(token=child.ping_token))
                    continue
                hung = now - child.ping_sent_ns > child.spec.ping_timeout_ns
                why = "no Pong"
            else:
                continue
            if hung:
                self._hung(child, f"{why} within {child.spec.ping_timeout_ns / _NS:g}s")

    def _add_zombie(self, name: str, generation: int, ref: pykka.ActorRef[Any]) -> None:
        if all(z is not ref for _, _, z in self.zombies):
            self.zombies.append((name, generation, ref))

    def _prune_zombies(self) -> None:
        for entry in [z for z in self.zombies if not z[2].is_alive()]:
            self.zombies.remove(entry)
            self.slog.write("zombie_gone", mono_ns=self.now_ns, actor=entry[0], generation=entry[1])

    def _hung(self, child: _Child, reason: str) -> None:
        name = child.spec.name
        child.last_failure = f"hung: {reason}"
        self.slog.write(
            "hang", mono_ns=self.now_ns, actor=name, generation=child.generation,
            state_before=self.state.name, reason=reason, extra={"policy": child.spec.on_hang},
        )
        ref = child.ref
        if ref is not None:
            # The thread cannot be killed: ask it to stop whenever it unblocks, and remember it.
            try:
                ref.stop(block=False)
            except pykka.ActorDeadError:
                pass
            self._add_zombie(name, child.generation, ref)
        if child.spec.on_hang == "error" or name == self.cfg.trading_client:
            child.status = "hung"
            child.ping_token = None
            if child.spec.feed:
                self.readiness.feeds_ready.discard(name)
            if name == self.cfg.trading_client:
                self.readiness.trading_client_ready = False
            self._enter_error(f"{name} hung ({reason}); it may still act, so trading stops")
        else:
            self._child_exited(child, abnormal=True, reason=child.last_failure)

    # --- state machine --------------------------------------------------------------------------

    def _notify_names(self) -> set[str]:
        names = set(self.cfg.notify)
        if self.cfg.trading_enabled:
            names.add(self.cfg.trading_client)
        return names

    def _wall_ms(self) -> int:
        return self._wall() // 1_000_000

    def _state_message(self, reason: str, previous: State | None = None) -> SystemStateChanged:
        return SystemStateChanged(
            previous=(previous or self.state).name,
            state=self.state.name,
            reason=reason,
            degraded=self.degraded,
            at_ms=self._wall_ms(),
        )

    def _broadcast(self, msg: Any) -> None:
        self.peers.tell_many(sorted(self._notify_names()), msg)

    def _go(self, target: State, reason: str) -> bool:
        result = try_transition(self.state, target)
        if not result.accepted:
            log.warning("refused transition %s -> %s (%s)", self.state.name, target.name, reason)
            self.slog.write(
                "transition_refused", mono_ns=self.now_ns, state_before=self.state.name,
                state_after=target.name, reason=reason,
            )
            return False
        previous = self.state
        self.state = target
        self.state_entered_ns = self.now_ns
        self.state_reason = reason
        self._update_degraded(broadcast=False)
        log.info("system state %s -> %s (%s)", previous.name, target.name, reason)
        self.slog.write(
            "state", mono_ns=self.now_ns, state_before=previous.name, state_after=target.name,
            reason=reason, extra={"degraded": self.degraded},
        )
        self._broadcast(self._state_message(reason, previous))
        self._update_gate(reason)
        if target is State.KALSHI_DATA_SYNC:
            self.readiness.data_synced = False
            self.peers.tell_many(self.cfg.sync_targets, SyncAccount(reason=reason))
        return True

    def _advance(self) -> None:
        """Climb (or fall back) as far as the readiness reports allow; bounded by the table's depth."""
        self._update_degraded(broadcast=True)
        for _ in range(len(State)):
            if self._shut_down:
                return
            target = self.readiness.next_state(self.state, self._children_settled())
            if target is None:
                return
            reason = "requirements lost" if target in (State.ORDERBOOK_CONNECT, State.READY) and self.state in (
                State.READY, State.ACTING) else "requirements met"
            if not self._go(target, reason):
                return

    def _children_settled(self) -> bool:
        """Every child is running, or is not meant to run (exited normally, or a failed temporary)."""
        return all(
            c.status == "running"
            or c.status == "exited"
            or (c.status == "failed" and c.spec.restart == "temporary")
            for c in self.children.values()
        )

    def _compute_degraded(self) -> bool:
        for child in self.children.values():
            if child.status in ("starting", "stopping", "waiting_restart", "failed", "hung", "stopped"):
                return True
            if child.spec.feed and not child.spec.critical and child.spec.name not in self.readiness.feeds_ready:
                return True
        return False

    def _update_degraded(self, broadcast: bool) -> None:
        degraded = self._compute_degraded()
        if degraded == self.degraded:
            return
        self.degraded = degraded
        reason = "degraded" if degraded else "recovered from degraded"
        self.slog.write("degraded", mono_ns=self.now_ns, state_after=self.state.name, reason=reason,
                        extra={"degraded": degraded})
        if broadcast:
            self._broadcast(self._state_message(reason))
            self._update_gate(reason)

    def _update_gate(self, reason: str) -> None:
        should = trading_gate_open(self.state, self.degraded)
        if should == self.gate_open:
            return
        self.gate_open = should
        self.slog.write(
            "gate", mono_ns=self.now_ns, state_after=self.state.name, reason=reason, extra={"open": should}
        )
        self._broadcast(TradingGateChanged(open=should, reason=reason))

    def _enter_error(self, reason: str) -> None:
        if self.state in (State.ERROR, State.SHUTDOWN):
            return
        self._start_queue = []
        self._in_order = None
        for child in self.children.values():
            if child.status == "waiting_restart":
                child.status = "stopped"  # no restarts in ERROR; recovery starts them
                child.restart_at_ns = None
        if not self._go(State.ERROR, reason):
            return
        if not self.error_intensity.record(self.now_ns):
            window_s = self.cfg.error_window_ns / _NS
            self.slog.write(
                "escalation", mono_ns=self.now_ns, state_before=State.ERROR.name,
                state_after=State.SHUTDOWN.name,
                reason=f"more than {self.cfg.max_errors} ERRORs in {window_s:g}s; last: {reason}",
            )
            self._shutdown(f"escalated: {reason}", EXIT_ESCALATED)

    def _check_state_timeout(self) -> None:
        if not timed_out(self.state, self.state_entered_ns, self.now_ns):
            return
        if self.state is State.ERROR:
            self.slog.write(
                "escalation", mono_ns=self.now_ns, state_before=State.ERROR.name,
                state_after=State.SHUTDOWN.name, reason="no recovery from ERROR within its timeout",
            )
            self._shutdown("no recovery from ERROR", EXIT_ESCALATED)
        elif self.state is not State.SHUTDOWN:
            self._enter_error(f"timeout in {self.state.name}")

    def _maybe_recover(self) -> None:
        if self.now_ns - self.state_entered_ns < self.cfg.error_cooldown_ns:
            return
        blocking = [
            f"{name}#{gen}" for name, gen, ref in self.zombies
            if ref.is_alive() and (self.children[name].spec.on_hang == "error" or name == self.cfg.trading_client)
        ]
        if blocking:
            return  # a hung trading actor may still act; stay in ERROR (its timeout escalates)
        if not self._go(State.STARTUP, "recovering after cool-down"):
            return
        self._go(State.INITIALIZING, "restarting stopped children")
        self._start_children()

    def _shutdown(self, reason: str, exit_code: int) -> None:
        if self._shut_down:
            return
        if self.state is not State.SHUTDOWN:
            self._go(State.SHUTDOWN, reason)
        self._shut_down = True
        self.exit_code = exit_code
        for child in reversed(list(self.children.values())):
            ref = child.ref
            was = child.status
            child.status = "stopped"
            if ref is None or not ref.is_alive():
                continue
            timeout_s = child.spec.shutdown_timeout_ns / _NS
            if _safe_stop(ref, timeout_s):
                self.slog.write("actor_stopped", mono_ns=self.now_ns, actor=child.spec.name,
                                generation=child.generation, extra={"by": "shutdown", "was": was})
            else:
                self._add_zombie(child.spec.name, child.generation, ref)
                self.slog.write("stop_timeout", mono_ns=self.now_ns, actor=child.spec.name,
                                generation=child.generation, reason=f"did not stop within {timeout_s:g}s")
        for name, generation, ref in self.zombies:
            if ref.is_alive():
                self.slog.write("zombie", mono_ns=self.now_ns, actor=name, generation=generation,
                                reason="still blocked at shutdown")
        self.slog.write("shutdown", mono_ns=self.now_ns, state_after=self.state.name, reason=reason,
                        extra={"exit_code": exit_code})
        if self.on_exit is not None:
            try:
                self.on_exit(exit_code)
            except Exception:  # main.py's callback must not break the shutdown
                log.exception("on_exit callback failed")


def shutdown_system(ref: pykka.ActorRef[Any], reason: str = "requested", timeout_s: float = 60.0) -> int:
    """Ask the supervisor to stop every child (reverse order), then stop it; returns the exit code."""
    try:
        code = ref.ask(Shutdown(reason=reason), timeout=timeout_s)
    except pykka.ActorDeadError:
        code = EXIT_SUPERVISOR_FAILED
    _safe_stop(ref, timeout_s)
    return int(code) if isinstance(code, int) else EXIT_SUPERVISOR_FAILED
