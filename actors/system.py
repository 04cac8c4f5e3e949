"""Assembly of a running Trader V3: settings → markets → SystemContext → factories → HealthSupervisor + Ticker.

``main.py`` is wiring only; this module holds the pieces it wires, so tests can build the same system
in-process (with probe actors in place of the real ones). Actor classes are resolved by name at
assembly time from ``ACTOR_CLASSES`` (one registry); a child spec's ``class`` key, or an explicit
factory passed by a test, takes precedence.

Shutdown follows the seed's order (§6.3): the ticker stops first (no more cycles), then
``shutdown_system`` stops the children in reverse start order (the executor resets its order group and
closes the journal in its cleanup), then the caller stops the local exchange.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pykka

from messages.control import RequestStats

from .base import SupervisedActor, error_text
from .config import ActorSystemConfig, ChildSpec, ConfigError
from .context import SystemContext
from .health_supervisor import (
    EXIT_SUPERVISOR_FAILED,
    Factory,
    HealthSupervisor,
    class_factory,
    import_actor_class,
    shutdown_system,
)
from .settings import Settings
from .ticker import Ticker

__all__ = [
    "ACTOR_CLASSES",
    "StartupError",
    "select_markets",
    "build_factories",
    "effective_config",
    "System",
    "supervisor_status",
]

log = logging.getLogger(__name__)

# child name (actor_config.toml) → "module:Class". The one place that knows which class runs which actor.
ACTOR_CLASSES: Mapping[str, str] = {
    "state_keeper": "actors.state_keeper:StateKeeper",
    "broadcaster": "actors.broadcaster:Broadcaster",
    "whale_executor": "actors.whale_executor:WhaleExecutor",
    "whale_tracker": "actors.whale_tracker:WhaleTracker",
    "position_listener": "actors.position_listener:PositionListener",
    "trades_feed": "actors.trades_feed:TradesFeed",
    "orderbook_feed": "actors.orderbook_feed:OrderbookFeed",
}

MARKET_PAGE_CAP = 20  # discovery reads at most this many pages of open markets (200 each)


class StartupError(RuntimeError):
    """The system could not be started; the text is printed to the user (no secrets in it)."""


def select_markets(settings: Settings, rest: Any) -> tuple[str, ...]:
    """The order-book markets: config mode = RL_MARKET_TICKERS; discovery = the most active open markets.

    Discovery sorts open markets by 24 h volume, then total volume (ticker breaks ties, so the choice is
    deterministic) and keeps the top ``orderbook_market_limit``.
    """
    limit = settings.orderbook_market_limit
    if settings.rl_mode == "config":
        tickers = tuple(dict.fromkeys(settings.market_tickers))
        if len(tickers) > limit:
            log.warning("RL_MARKET_TICKERS lists %d markets; keeping the first %d (RL_ORDERBOOK_MARKET_LIMIT)",
                        len(tickers), limit)
        return tickers[:limit]
    markets: list[Any] = []
    cursor: str | None = None
    for _ in range(MARKET_PAGE_CAP):
        page = rest.get_markets(status="open", limit=200, cursor=cursor)
        markets.extend(page.markets)
        cursor = page.cursor or None
        if not cursor:
            break
    if not markets:
        raise StartupError("market discovery found no open markets (set RL_MODE=config and RL_MARKET_TICKERS)")
    ranked = sorted(markets, key=lambda m: (-(m.volume_24h or 0), -(m.volume or 0), m.ticker))
    return tuple(m.ticker for m in ranked[:limit])


def effective_config(config: ActorSystemConfig, *, trading_enabled: bool) -> ActorSystemConfig:
    """The actor configuration with trading switched off when the settings or missing credentials say so."""
    supervisor = config.supervisor
    if supervisor.trading_enabled and not trading_enabled:
        supervisor = dataclasses.replace(supervisor, trading_enabled=False)
    return dataclasses.replace(config, supervisor=supervisor)


def build_factories(
    config: ActorSystemConfig,
    context: SystemContext,
    *,
    classes: Mapping[str, str | type[SupervisedActor]] | None = None,
    overrides: Mapping[str, Factory] | None = None,
) -> dict[str, Factory]:
    """One factory per enabled child; each actor's config is ``{**spec.settings, "context": context}``.

    Precedence: ``overrides`` (ready factories, e.g. test probes) → the spec's ``class`` key → ``classes``
    → ``ACTOR_CLASSES``. An actor with none of them is a ConfigError naming it.
    """
    registry: dict[str, str | type[SupervisedActor]] = dict(ACTOR_CLASSES)
    registry.update(classes or {})
    overrides = overrides or {}
    factories: dict[str, Factory] = {}
    for spec in config.enabled_children:
        if spec.name in overrides:
            factories[spec.name] = overrides[spec.name]
            continue
        target: str | type[SupervisedActor] | None = spec.class_path or registry.get(spec.name)
        if target is None:
            raise ConfigError(f"actors.{spec.name}: no actor class is registered for it (set class = \"module:Class\")")
        cls = import_actor_class(target) if isinstance(target, str) else target
        factories[spec.name] = class_factory(cls, _actor_config(spec, context))
    return factories


def _actor_config(spec: ChildSpec, context: SystemContext) -> dict[str, Any]:
    return {**spec.settings, "context": context}


def supervisor_status(stats: Mapping[str, Any]) -> dict[str, Any]:
    """A status dict (the broadcaster's shape, reduced) from the supervisor's stats, for when the
    broadcaster is down: state, degraded, gate and the actors table."""
    children = stats.get("children") or {}
    return {
        "source": "supervisor",
        "state": stats.get("state"),
        "state_reason": stats.get("state_reason"),
        "degraded": stats.get("degraded"),
        "trading_gate": stats.get("gate_open"),
        "total_restarts": stats.get("total_restarts"),
        "actors": {
            name: {
                "alive": c.get("alive"),
                "status": c.get("status"),
                "generation": c.get("generation"),
                "restarts": c.get("restarts"),
                "mailbox_depth": None,
                "last_error": c.get("last_failure"),
            }
            for name, c in children.items()
        },
    }


class System:
    """A started actor system: the health supervisor, its ticker, and status access for main.py."""

    def __init__(
        self,
        config: ActorSystemConfig,
        factories: Mapping[str, Factory],
        *,
        data_dir: str | Path,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        status_actor: str = "broadcaster",
    ) -> None:
        self.config = config
        self.factories = dict(factories)
        self.data_dir = Path(data_dir)
        self._clock_ns = clock_ns
        self._wall_ns = wall_clock_ns
        self.status_actor = status_actor
        self.supervisor: pykka.ActorRef[Any] | None = None
        self.ticker: Ticker | None = None
        self.exited = threading.Event()  # set once the supervisor has shut the system down (itself or on request)
        self.exit_code: int | None = None
        self.started_mono_ns = 0
        self._status_ref: pykka.ActorRef[Any] | None = None
        self._stopped = False
        self.stop_error: str | None = None  # why the ordered shutdown failed, if it did
        self._lock = threading.Lock()

    # --- start / stop -----------------------------------------------------------------------------

    def _on_exit(self, code: int) -> None:
        # Called in the supervisor's thread at the end of its shutdown (requested or escalated).
        self.exit_code = code
        self.exited.set()

    def start(self) -> System:
        if self.supervisor is not None:
            raise RuntimeError("system already started")
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.started_mono_ns = self._clock_ns()
        try:
            self.supervisor = HealthSupervisor.start(
                self.config, self.factories, data_dir=self.data_dir, clock_ns=self._clock_ns,
                wall_clock_ns=self._wall_ns, on_exit=self._on_exit,
            )
        except ConfigError:
            raise
        except Exception as exc:  # construction failed: name the reason
            raise StartupError(f"the health supervisor did not start: {type(exc).__name__}: {exc}") from None
        interval_s = self.config.supervisor.tick_interval_ns / 1e9
        self.ticker = Ticker([self.supervisor], interval_s, mono_clock_ns=self._clock_ns,
                             wall_clock_ns=self._wall_ns).start()
        return self

    def stop(self, reason: str = "requested", timeout_s: float = 60.0) -> int:
        """Ticker first, then every child in reverse order; returns the exit code. Idempotent."""
        with self._lock:
            if self._stopped:
                return self.exit_code if self.exit_code is not None else 0
            self._stopped = True
        if self.ticker is not None:
            self.ticker.stop()
        code = EXIT_SUPERVISOR_FAILED
        if self.supervisor is not None:
            try:
                code = shutdown_system(self.supervisor, reason, timeout_s)
            except Exception as exc:  # a child whose stop raised broke the ordered shutdown
                log.error("ordered shutdown failed (%s); stopping the remaining actors directly", error_text(exc))
                code = EXIT_SUPERVISOR_FAILED
                self.stop_error = f"ordered shutdown failed: {error_text(exc)}"
                self._stop_leftovers(timeout_s)
        if self.exit_code is None or self.exit_code == 0:
            self.exit_code = code
        return self.exit_code

    def _stop_leftovers(self, timeout_s: float) -> None:
        """Last resort after a failed shutdown: stop every actor still registered, newest first."""
        for ref in reversed(pykka.ActorRegistry.get_all()):
            try:
                ref.stop(block=True, timeout=min(timeout_s, 10.0))
            except pykka.ActorDeadError:
                pass
            except Exception as exc:
                log.error("actor %s did not stop: %s", ref, error_text(exc))

    # --- status -----------------------------------------------------------------------------------

    def supervisor_stats(self, timeout_s: float = 1.0) -> dict[str, Any] | None:
        if self.supervisor is None:
            return None
        try:
            stats = self.supervisor.ask(RequestStats(), timeout=timeout_s)
        except (pykka.ActorDeadError, pykka.Timeout):
            return None
        return stats if isinstance(stats, dict) else None

    def status(self, timeout_s: float = 1.0) -> dict[str, Any]:
        """The broadcaster's status snapshot; the supervisor's view when the broadcaster does not answer."""
        snapshot = self._ask_status_actor(timeout_s)
        if snapshot is not None and snapshot.get("state"):
            return snapshot
        stats = self.supervisor_stats(timeout_s)
        if stats is None:
            if snapshot is not None:
                return snapshot
            return {"source": "none", "state": "SHUTDOWN" if self.exited.is_set() else "UNKNOWN", "actors": {}}
        if snapshot is None:
            return supervisor_status(stats)
        return {**snapshot, "state": stats.get("state")}

    def _ask_status_actor(self, timeout_s: float) -> dict[str, Any] | None:
        from messages.status import GetStatus

        for attempt in range(2):
            ref = self._status_ref
            if ref is None or not ref.is_alive():
                stats = self.supervisor_stats(timeout_s)
                ref = (stats or {}).get("refs", {}).get(self.status_actor)
                self._status_ref = ref
            if ref is None:
                return None
            try:
                result = ref.ask(GetStatus(), timeout=timeout_s)
            except pykka.ActorDeadError:
                self._status_ref = None  # restarted: look the new ref up once
                continue
            except pykka.Timeout:
                return None
            except Exception as exc:  # its handler raised: the supervisor restarts it; fall back meanwhile
                log.debug("status snapshot failed: %s", exc)
                return None
            return result if isinstance(result, dict) else None
        return None

    def uptime_s(self) -> float:
        return (self._clock_ns() - self.started_mono_ns) / 1e9 if self.started_mono_ns else 0.0
