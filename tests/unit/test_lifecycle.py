"""The pure state-machine table: every state × target pair, timeouts, the trading gate, rendering."""

from __future__ import annotations

import itertools

import pytest

from actors.lifecycle import (
    STATE_TIMEOUTS_S,
    VALID_TRANSITIONS,
    InvalidTransition,
    State,
    can_transition,
    render_mermaid,
    render_table,
    timed_out,
    trading_gate_open,
    transition,
    try_transition,
)

# An independent transcription of the seed's table (TRADER_V3_ARCHITECTURE.md §4.3).
SEED = {
    "STARTUP": {"INITIALIZING", "ERROR", "SHUTDOWN"},
    "INITIALIZING": {"ORDERBOOK_CONNECT", "ERROR", "SHUTDOWN"},
    "ORDERBOOK_CONNECT": {"TRADING_CLIENT_CONNECT", "READY", "ERROR", "SHUTDOWN"},
    "TRADING_CLIENT_CONNECT": {"KALSHI_DATA_SYNC", "ERROR", "SHUTDOWN"},
    "KALSHI_DATA_SYNC": {"READY", "ERROR", "SHUTDOWN"},
    "READY": {"ACTING", "ORDERBOOK_CONNECT", "ERROR", "SHUTDOWN"},
    "ACTING": {"READY", "ERROR", "SHUTDOWN"},
    "ERROR": {"STARTUP", "SHUTDOWN"},
    "SHUTDOWN": set(),
}
SEED_TIMEOUTS = {
    "STARTUP": 30, "INITIALIZING": 60, "ORDERBOOK_CONNECT": 120, "TRADING_CLIENT_CONNECT": 60,
    "KALSHI_DATA_SYNC": 60, "READY": None, "ACTING": 60, "ERROR": 300, "SHUTDOWN": 30,
}
NS = 1_000_000_000
PAIRS = list(itertools.product(State, State))


def test_states_are_the_seeds():
    assert [s.name for s in State] == list(SEED)


@pytest.mark.parametrize("current,target", PAIRS, ids=lambda s: s.name)
def test_every_pair(current, target):
    allowed = target.name in SEED[current.name]
    assert can_transition(current, target) is allowed
    result = try_transition(current, target)
    assert result.previous is current and result.accepted is allowed
    assert result.state is (target if allowed else current)
    if allowed:
        assert transition(current, target) is target
    else:
        with pytest.raises(InvalidTransition) as info:
            transition(current, target)
        assert info.value.current is current and info.value.target is target
        assert current.name in str(info.value) and target.name in str(info.value)


def test_table_is_exactly_the_seed_and_read_only():
    assert {s.name: {t.name for t in ts} for s, ts in VALID_TRANSITIONS.items()} == SEED
    with pytest.raises(TypeError):
        VALID_TRANSITIONS[State.SHUTDOWN] = frozenset({State.STARTUP})  # type: ignore[index]


def test_shutdown_is_terminal_and_reachable_from_everywhere_else():
    assert not VALID_TRANSITIONS[State.SHUTDOWN]
    for state in State:
        if state is not State.SHUTDOWN:
            assert can_transition(state, State.SHUTDOWN)


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.name)
def test_timeouts(state):
    limit = SEED_TIMEOUTS[state.name]
    assert STATE_TIMEOUTS_S[state] == limit
    entered = 5 * NS
    if limit is None:
        assert not timed_out(state, entered, entered + 10**6 * NS)
        return
    assert not timed_out(state, entered, entered)
    assert not timed_out(state, entered, entered + limit * NS)  # exactly at the limit: still fine
    assert timed_out(state, entered, entered + limit * NS + 1)


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.name)
def test_gate_rule(state):
    open_states = {State.READY, State.ACTING}
    assert trading_gate_open(state, degraded=False) is (state in open_states)
    assert trading_gate_open(state, degraded=True) is False
    assert trading_gate_open(state, degraded=False, extra_conditions=False) is False


def test_mermaid_has_every_edge_and_nothing_else():
    text = render_mermaid()
    assert text.startswith("stateDiagram-v2\n")
    edges = {
        tuple(line.strip().split(" --> "))
        for line in text.splitlines()
        if "-->" in line and "[*]" not in line
    }
    assert edges == {(s, t) for s, targets in SEED.items() for t in targets}
    assert "[*] --> STARTUP" in text and "SHUTDOWN --> [*]" in text


def test_text_table_has_one_row_per_state():
    rows = render_table().splitlines()
    assert len(rows) == len(State)
    assert rows[0].startswith("STARTUP") and "30s" in rows[0]
    assert "(terminal)" in rows[-1] and "none" in rows[5]
