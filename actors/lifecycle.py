"""The system state machine as a pure table: states, the seed's valid transitions, per-state timeouts.

No threads, no Pykka: the health supervisor is the only writer and calls these functions with time
passed in. Degraded (a non-critical feed or child down) is a flag carried beside READY, not a state.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Mapping


class State(str, Enum):
    STARTUP = "startup"
    INITIALIZING = "initializing"
    ORDERBOOK_CONNECT = "orderbook_connect"
    TRADING_CLIENT_CONNECT = "trading_client_connect"
    KALSHI_DATA_SYNC = "kalshi_data_sync"
    READY = "ready"
    ACTING = "acting"
    ERROR = "error"
    SHUTDOWN = "shutdown"


S = State

# The seed's VALID_TRANSITIONS (TRADER_V3_ARCHITECTURE.md §4.3), exactly.
VALID_TRANSITIONS: Mapping[State, frozenset[State]] = MappingProxyType(
    {
        S.STARTUP: frozenset({S.INITIALIZING, S.ERROR, S.SHUTDOWN}),
        S.INITIALIZING: frozenset({S.ORDERBOOK_CONNECT, S.ERROR, S.SHUTDOWN}),
        S.ORDERBOOK_CONNECT: frozenset({S.TRADING_CLIENT_CONNECT, S.READY, S.ERROR, S.SHUTDOWN}),
        S.TRADING_CLIENT_CONNECT: frozenset({S.KALSHI_DATA_SYNC, S.ERROR, S.SHUTDOWN}),
        S.KALSHI_DATA_SYNC: frozenset({S.READY, S.ERROR, S.SHUTDOWN}),
        S.READY: frozenset({S.ACTING, S.ORDERBOOK_CONNECT, S.ERROR, S.SHUTDOWN}),
        S.ACTING: frozenset({S.READY, S.ERROR, S.SHUTDOWN}),
        S.ERROR: frozenset({S.STARTUP, S.SHUTDOWN}),
        S.SHUTDOWN: frozenset(),  # terminal
    }
)

# Seconds a state may last before the supervisor declares ERROR (None = no limit). Seed §4.1.
STATE_TIMEOUTS_S: Mapping[State, int | None] = MappingProxyType(
    {
        S.STARTUP: 30,
        S.INITIALIZING: 60,
        S.ORDERBOOK_CONNECT: 120,
        S.TRADING_CLIENT_CONNECT: 60,
        S.KALSHI_DATA_SYNC: 60,
        S.READY: None,
        S.ACTING: 60,
        S.ERROR: 300,
        S.SHUTDOWN: 30,
    }
)

_NS = 1_000_000_000


class InvalidTransition(ValueError):
    def __init__(self, current: State, target: State) -> None:
        super().__init__(f"invalid transition {current.name} -> {target.name}")
        self.current = current
        self.target = target


@dataclass(frozen=True, slots=True)
class TransitionResult:
    """Outcome of ``try_transition``: the state to be in afterwards, and whether the move happened."""

    previous: State
    state: State
    accepted: bool


def can_transition(current: State, target: State) -> bool:
    return target in VALID_TRANSITIONS[current]


def transition(current: State, target: State) -> State:
    """Return ``target`` if the table allows ``current -> target``, else raise ``InvalidTransition``."""
    if target not in VALID_TRANSITIONS[current]:
        raise InvalidTransition(current, target)
    return target


def try_transition(current: State, target: State) -> TransitionResult:
    """Like ``transition`` but returns a result instead of raising (refusals are logged by the caller)."""
    ok = target in VALID_TRANSITIONS[current]
    return TransitionResult(previous=current, state=target if ok else current, accepted=ok)


def timeout_ns(state: State) -> int | None:
    seconds = STATE_TIMEOUTS_S[state]
    return None if seconds is None else seconds * _NS


def timed_out(state: State, entered_mono_ns: int, now_mono_ns: int) -> bool:
    """True once ``state`` has lasted longer than its timeout (never for READY)."""
    limit = timeout_ns(state)
    return limit is not None and now_mono_ns - entered_mono_ns > limit


def trading_gate_open(state: State, degraded: bool, extra_conditions: bool = True) -> bool:
    """May orders be sent? Only in READY/ACTING, not degraded, and when every extra condition holds."""
    return state in (S.READY, S.ACTING) and not degraded and bool(extra_conditions)


def render_mermaid() -> str:
    """The transition table as a Mermaid state diagram (README embeds this output)."""
    lines = ["stateDiagram-v2", f"    [*] --> {S.STARTUP.name}"]
    for state in State:
        for target in sorted(VALID_TRANSITIONS[state], key=lambda s: list(State).index(s)):
            lines.append(f"    {state.name} --> {target.name}")
    lines.append(f"    {S.SHUTDOWN.name} --> [*]")
    lines.append(f"    note right of {S.READY.name}: degraded flag (non-critical feed/child down) closes the gate")
    return "\n".join(lines) + "\n"


def render_table() -> str:
    """The transition table and timeouts as plain text rows: ``STATE (timeout) -> targets``."""
    width = max(len(s.name) for s in State)
    rows = []
    for state in State:
        limit = STATE_TIMEOUTS_S[state]
        shown = "none" if limit is None else f"{limit}s"
        targets = ", ".join(t.name for t in State if t in VALID_TRANSITIONS[state]) or "(terminal)"
        rows.append(f"{state.name:<{width}}  timeout {shown:>5}  -> {targets}")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m actors.lifecycle prints the diagram for the README
    print(render_mermaid())
    print(render_table())
