"""Restart policy: intensity windows, backoff, readiness, config validation, and the supervisor
invariant as a property (the supervisor driven through its handlers, without threads)."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.config import NS, ActorSystemConfig, ChildSpec, ConfigError, SupervisorConfig, load_config, parse_config
from actors.health_supervisor import Backoff, HealthSupervisor, Readiness, RestartIntensity
from actors.lifecycle import State
from messages.control import ActorFailed, ActorStarted, SystemStateChanged, Tick, TradingGateChanged

REPO = Path(__file__).resolve().parents[2]

# --- RestartIntensity --------------------------------------------------------------------------


def test_intensity_allows_max_then_refuses():
    ri = RestartIntensity(3, 60 * NS)
    assert [ri.record(t * NS) for t in (0, 1, 2)] == [True, True, True]
    assert ri.record(3 * NS) is False
    assert ri.count(3 * NS) == 4


def test_intensity_window_slides():
    ri = RestartIntensity(2, 10 * NS)
    assert ri.record(0) and ri.record(5 * NS)
    assert ri.record(10 * NS)  # the event at 0 is exactly one window old: out
    assert not ri.record(11 * NS)  # 5, 10, 11 are inside (1, 11]
    assert ri.count(100 * NS) == 0


def test_intensity_zero_refuses_everything():
    ri = RestartIntensity(0, NS)
    assert ri.record(0) is False


def test_intensity_rejects_bad_parameters():
    with pytest.raises(ValueError):
        RestartIntensity(-1, NS)
    with pytest.raises(ValueError):
        RestartIntensity(1, 0)


@given(
    max_restarts=st.integers(0, 5),
    window_s=st.integers(1, 30),
    gaps=st.lists(st.integers(0, 20_000), max_size=40),
)
def test_intensity_matches_a_brute_force_count(max_restarts, window_s, gaps):
    ri = RestartIntensity(max_restarts, window_s * NS)
    now, times = 0, []
    for gap_ms in gaps:
        now += gap_ms * 1_000_000
        times.append(now)
        inside = sum(1 for t in times if now - window_s * NS < t <= now)
        assert ri.record(now) is (inside <= max_restarts)


# --- Backoff -------------------------------------------------------------------------------------


def test_backoff_grows_caps_and_resets():
    b = Backoff(NS, 10 * NS, 2.0, 0.0, random.Random(1))
    assert [b.next_delay() // NS for _ in range(6)] == [1, 2, 4, 8, 10, 10]
    b.reset()
    assert b.next_delay() == NS


def test_backoff_huge_attempt_count_stays_capped():
    b = Backoff(NS, 30 * NS, 3.0, 0.0)
    b.attempts = 10**6
    assert b.next_delay() == 30 * NS


@given(seed=st.integers(0, 2**32), jitter=st.floats(0, 0.9), attempts=st.integers(0, 12))
def test_backoff_jitter_bounds(seed, jitter, attempts):
    b = Backoff(NS // 2, 30 * NS, 2.0, jitter, random.Random(seed))
    b.attempts = attempts
    base = b.base_delay(attempts)
    delay = b.next_delay()
    assert int(base * (1 - jitter)) - 1 <= delay <= min(30 * NS, int(base * (1 + jitter)) + 1)
    assert 0 <= delay <= 30 * NS


def test_backoff_jitter_is_seeded_and_spreads():
    delays = {Backoff(NS, 10 * NS, 2.0, 0.5, random.Random(s)).next_delay() for s in range(20)}
    assert len(delays) > 10
    assert Backoff(NS, 10 * NS, 2.0, 0.5, random.Random(3)).next_delay() == Backoff(
        NS, 10 * NS, 2.0, 0.5, random.Random(3)
    ).next_delay()


def test_backoff_rejects_bad_parameters():
    for args in ((-1, NS), (2 * NS, NS), (NS, NS, 0.5), (NS, NS, 2.0, 1.0)):
        with pytest.raises(ValueError):
            Backoff(*args)


# --- Readiness -----------------------------------------------------------------------------------


def test_readiness_climb_with_trading():
    r = Readiness(trading_enabled=True, critical_feeds=frozenset({"book"}))
    assert r.next_state(State.INITIALIZING, all_children_running=False) is None
    assert r.next_state(State.INITIALIZING, all_children_running=True) is State.ORDERBOOK_CONNECT
    assert r.next_state(State.ORDERBOOK_CONNECT, True) is None
    r.feeds_ready.add("book")
    assert r.next_state(State.ORDERBOOK_CONNECT, True) is State.TRADING_CLIENT_CONNECT
    assert r.next_state(State.TRADING_CLIENT_CONNECT, True) is None
    r.trading_client_ready = True
    assert r.next_state(State.TRADING_CLIENT_CONNECT, True) is State.KALSHI_DATA_SYNC
    assert r.next_state(State.KALSHI_DATA_SYNC, True) is None
    r.data_synced = True
    assert r.next_state(State.KALSHI_DATA_SYNC, True) is State.READY
    assert r.next_state(State.READY, True) is None
    r.trading_client_ready = False
    assert r.next_state(State.READY, True) is State.ORDERBOOK_CONNECT
    assert r.next_state(State.ACTING, True) is State.READY
    for state in (State.STARTUP, State.ERROR, State.SHUTDOWN):
        assert r.next_state(state, True) is None


def test_readiness_without_trading_skips_the_trading_states():
    r = Readiness(trading_enabled=False, critical_feeds=frozenset())
    assert r.next_state(State.ORDERBOOK_CONNECT, True) is State.READY
    assert r.requirements_met()


# --- configuration -------------------------------------------------------------------------------


def test_repo_actor_config_loads():
    cfg = load_config(REPO / "actor_config.toml")
    names = [c.name for c in cfg.children]
    assert names[0] == "state_keeper" and names[-1] == "orderbook_feed"  # downstream first
    assert cfg.child("whale_executor").on_hang == "error"
    assert cfg.child("orderbook_feed").critical and cfg.child("orderbook_feed").feed
    assert cfg.supervisor.max_restarts == 5 and cfg.supervisor.restart_window_ns == 60 * NS
    assert cfg.supervisor.error_cooldown_ns == 30 * NS and cfg.supervisor.tick_interval_ns == NS // 10


@pytest.mark.parametrize(
    "doc,field",
    [
        ({"supervisor": {"max_restart": 5}}, "supervisor.max_restart"),
        ({"supervisor": {"max_restarts": "5"}}, "supervisor.max_restarts"),
        ({"supervisor": {"max_restarts": True}}, "supervisor.max_restarts"),
        ({"supervisor": {"max_restarts": -1}}, "supervisor.max_restarts"),
        ({"supervisor": {"restart_window_s": 0}}, "supervisor.restart_window_s"),
        ({"supervisor": {"restart_window_s": float("nan")}}, "supervisor.restart_window_s"),
        ({"supervisor": {"backoff_jitter": 1.5}}, "supervisor.backoff_jitter"),
        ({"supervisor": {"backoff_max_s": 0.1, "backoff_initial_s": 1}}, "supervisor.backoff_max_s"),
        ({"supervisor": {"log_file": "../x.jsonl"}}, "supervisor.log_file"),
        ({"supervisor": {"error_cooldown_s": 300}}, "supervisor.error_cooldown_s"),
        ({"supervisor": {"notify": ["nobody"]}, "actors": {"a": {}}}, "supervisor.notify"),
        ({"actors": {"a": {"restart": "always"}}}, "actors.a.restart"),
        ({"actors": {"a": {"on_hang": "ignore"}}}, "actors.a.on_hang"),
        ({"actors": {"a": {"ping_timeout_s": -2}}}, "actors.a.ping_timeout_s"),
        ({"actors": {"a": {"start_order": 1.5}}}, "actors.a.start_order"),
        ({"actors": {"a": {"class": "nocolon"}}}, "actors.a.class"),
        ({"actors": {"a": 3}}, "actors.a"),
        ({"actors": {"bad-name": {}}}, "actors.bad-name"),
    ],
)
def test_config_errors_name_the_field(doc, field):
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert str(info.value).startswith(field)


def test_config_passes_other_keys_to_the_actor_and_sorts_children():
    cfg = parse_config(
        {
            "actors": {
                "b": {"start_order": 2, "markets": ["X"], "depth": 5},
                "a": {"start_order": 2, "enabled": False},
                "c": {"start_order": 1, "shutdown_timeout_s": 0.5},
            },
            "whale": {"anything": "ignored here"},
        }
    )
    assert [c.name for c in cfg.children] == ["c", "a", "b"]
    assert [c.name for c in cfg.enabled_children] == ["c", "b"]
    assert dict(cfg.child("b").settings) == {"markets": ["X"], "depth": 5}
    assert cfg.child("c").shutdown_timeout_ns == NS // 2


def test_missing_and_broken_config_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[supervisor\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


# --- the supervisor invariant, driven through its handlers without threads ------------------------


class FakeRef:
    """Stands in for an ActorRef: records what it is told, can be killed."""

    def __init__(self, name: str, generation: int) -> None:
        self.name, self.generation = name, generation
        self.alive = True
        self.told: list[object] = []

    def tell(self, msg: object) -> None:
        self.told.append(msg)

    def is_alive(self) -> bool:
        return self.alive

    def stop(self, block: bool = True, timeout: float | None = None) -> bool:
        self.alive = False
        return True


def build_supervisor(tmp: Path, max_restarts: int, window_s: int, names=("a", "b", "c")):
    refs: list[FakeRef] = []

    def factory(name, generation, supervisor, peers):
        ref = FakeRef(name, generation)
        refs.append(ref)
        return ref

    cfg = ActorSystemConfig(
        supervisor=SupervisorConfig(
            max_restarts=max_restarts,
            restart_window_ns=window_s * NS,
            backoff_initial_ns=NS // 10,
            backoff_max_ns=2 * NS,
            backoff_jitter=0.0,
            ping_interval_ns=10**6 * NS,
            error_cooldown_ns=10**5 * NS,
            max_errors=100,
            trading_enabled=False,
            notify=("a",),
        ),
        children=tuple(ChildSpec(name=n, start_order=i) for i, n in enumerate(names)),
    )
    sup = HealthSupervisor(cfg, {n: factory for n in names}, data_dir=tmp, clock_ns=lambda: 0)
    return sup, refs


def settle(sup: HealthSupervisor) -> None:
    """Acknowledge every pending start, as the children would (ordered start: one at a time)."""
    while True:
        starting = [c for c in sup.children.values() if c.status == "starting"]
        if not starting:
            return
        for child in starting:
            sup.on_receive(ActorStarted(actor=child.spec.name, generation=child.generation))


def gate_invariant(sup: HealthSupervisor) -> None:
    if sup.gate_open:
        assert sup.state in (State.READY, State.ACTING) and not sup.degraded


@settings(max_examples=60, deadline=None)
@given(
    max_restarts=st.integers(0, 4),
    window_s=st.integers(1, 20),
    steps=st.lists(
        st.tuples(st.integers(0, 8_000), st.one_of(st.none(), st.integers(0, 2))), min_size=1, max_size=40
    ),
)
def test_supervisor_enters_error_iff_restarts_in_a_window_exceed_the_intensity(max_restarts, window_s, steps):
    with tempfile.TemporaryDirectory() as tmp:
        sup, refs = build_supervisor(Path(tmp), max_restarts, window_s)
        try:
            sup.on_start()
            settle(sup)
            assert sup.state is State.READY
            now, crashes = 0, []
            names = list(sup.children)
            for gap_ms, crash in steps:
                now += gap_ms * 1_000_000
                sup.on_receive(Tick(now_mono_ns=now, now_wall_ms=now // 1_000_000))
                settle(sup)
                gate_invariant(sup)
                if crash is None:
                    continue
                child = sup.children[names[crash]]
                if child.status != "running":
                    continue  # already waiting for its restart
                crashes.append(now)
                child.ref.alive = False
                sup.on_receive(
                    ActorFailed(actor=child.spec.name, generation=child.generation, phase="handler",
                                error="boom", traceback="")
                )
                inside = sum(1 for t in crashes if now - window_s * NS < t <= now)
                if inside > max_restarts:
                    assert sup.state is State.ERROR
                    break
                assert sup.state is not State.ERROR
                gate_invariant(sup)
            if sup.state is State.ERROR:
                # ERROR: the gate is closed, nothing is restarted on later ticks, and the listener
                # was told the gate closed after it was last open.
                assert not sup.gate_open
                spawned = len(refs)
                for _ in range(3):
                    now += 10 * NS
                    sup.on_receive(Tick(now_mono_ns=now, now_wall_ms=now // 1_000_000))
                assert len(refs) == spawned and sup.state is State.ERROR
                a_msgs = [m for r in refs if r.name == "a" for m in r.told]
                gates = [m for m in a_msgs if isinstance(m, TradingGateChanged)]
                assert gates and gates[-1].open is False
                assert [m for m in a_msgs if isinstance(m, SystemStateChanged)][-1].state == "ERROR"
        finally:
            sup.slog.close()


def test_restart_delay_grows_per_child_and_resets_after_a_stable_period(tmp_path):
    sup, refs = build_supervisor(tmp_path, max_restarts=50, window_s=1)
    try:
        sup.on_start()
        settle(sup)
        now = 0
        delays = []
        for _ in range(3):
            child = sup.children["b"]
            sup.on_receive(ActorFailed(actor="b", generation=child.generation, phase="handler", error="x", traceback=""))
            delays.append(child.restart_at_ns - now)
            now = child.restart_at_ns
            sup.on_receive(Tick(now_mono_ns=now, now_wall_ms=0))
            settle(sup)
            assert child.status == "running"
        assert delays == [NS // 10, NS // 5, 2 * NS // 5]
        # Up for longer than backoff_reset_after (60 s default): the next delay starts over.
        now += 61 * NS
        sup.on_receive(Tick(now_mono_ns=now, now_wall_ms=0))
        child = sup.children["b"]
        sup.on_receive(ActorFailed(actor="b", generation=child.generation, phase="handler", error="x", traceback=""))
        assert child.restart_at_ns - now == NS // 10
        assert child.generation == 4 and child.restarts == 3
    finally:
        sup.slog.close()
