"""What every actor of a running system shares: settings, endpoints, credentials, the data folder and the
markets chosen at start. Built once by main.py (or a test) and handed to each actor as ``config["context"]``.

It holds factories, not connections: every actor (or the worker thread it owns) makes its own REST client,
because a ``requests`` session must not be shared across threads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:  # imported lazily so pure modules load without the network stack
    from kalshi.auth import Credentials
    from kalshi.rest import KalshiRest

    from .settings import Settings


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class SystemContext:
    settings: "Settings"
    rest_url: str  # e.g. http://127.0.0.1:PORT/trade-api/v2
    ws_url: str  # e.g. ws://127.0.0.1:PORT/trade-api/ws/v2
    credentials: "Credentials | None"
    data_dir: Path
    market_tickers: tuple[str, ...]  # the order-book markets selected at start (discovery or config mode)
    environment: str = "local"  # local | demo | prod
    execution: str = "exchange"  # exchange | paper | live
    rest_factory: Callable[[], "KalshiRest"] | None = None  # default: KalshiRest(rest_url, credentials)
    ws_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # KalshiWebSocket kwargs
    wall_ms: Callable[[], int] = wall_ms
    mono_ns: Callable[[], int] = time.monotonic_ns

    def make_rest(self) -> "KalshiRest":
        if self.rest_factory is not None:
            return self.rest_factory()
        from kalshi.rest import KalshiRest

        return KalshiRest(self.rest_url, self.credentials)

    def __repr__(self) -> str:  # credentials carry their own redacted repr; keep this one short
        return (
            f"SystemContext(env={self.environment}, execution={self.execution}, rest={self.rest_url}, "
            f"ws={self.ws_url}, markets={len(self.market_tickers)}, data_dir={self.data_dir})"
        )


def context_of(config: Mapping[str, Any]) -> SystemContext:
    """The SystemContext an actor was started with (``config["context"]``), with a clear error if absent."""
    ctx = config.get("context")
    if not isinstance(ctx, SystemContext):
        raise RuntimeError("actor started without a SystemContext in config['context']")
    return ctx
