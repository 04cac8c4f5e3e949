"""HealthSupervisor with real threads and probe children; time is driven by hand-sent Ticks."""

from __future__ import annotations

import random

import pytest

from actors.config import NS, ActorSystemConfig, ChildSpec, SupervisorConfig
from actors.health_supervisor import EXIT_ESCALATED, EXIT_OK, HealthSupervisor, shutdown_system
from actors.supervisor_log import read_events
from messages.control import (
    DataSynced,
    ExecutionFinished,
    ExecutionStarted,
    FeedDown,
    FeedReady,
    RequestStats,
    RestartActor,
    SyncAccount,
    SystemStateChanged,
    TradingClientReady,
    TradingGateChanged,
)
from messages.feed import SequenceGap
from tests.actors.conftest import Block, Crash, Echo
from tests.helpers import wait_for

T = 5


def spec(name: str, order: int, **kw) -> ChildSpec:
    kw.setdefault("ping_timeout_ns", 2 * NS)
    kw.setdefault("shutdown_timeout_ns", 2 * NS)
    return ChildSpec(name=name, start_order=order, **kw)


@pytest.fixture
def system(probes, clock, tmp_path):
    """Build and start a supervisor over probe children; shut it down in teardown."""
    started = []

    def make(specs, **overrides):
        params = dict(
            max_restarts=5,
            restart_window_ns=60 * NS,
            backoff_initial_ns=1 * NS,
            backoff_max_ns=8 * NS,
            backoff_jitter=0.0,
            backoff_reset_after_ns=60 * NS,
            ping_interval_ns=1000 * NS,  # effectively off unless a test turns it on
            error_cooldown_ns=30 * NS,
            trading_enabled=False,
            notify=("a",),
        )
        params.update(overrides)
        cfg = ActorSystemConfig(
            supervisor=SupervisorConfig(**params),
            children=tuple(sorted(specs, key=lambda s: (s.start_order, s.name))),
        )
        exits: list[int] = []
        ref = HealthSupervisor.start(
            cfg,
            probes.factories([s.name for s in specs]),
            data_dir=tmp_path,
            clock_ns=clock,
            wall_clock_ns=clock.wall_ns,
            rng=random.Random(7),
            on_exit=exits.append,
        )
        started.append(ref)
        return ref, exits

    yield make
    probes.release_all()
    for ref in started:
        if ref.is_alive():
            shutdown_system(ref, "test teardown", timeout_s=10)


def stats(ref):
    return ref.ask(RequestStats(), timeout=T)


def wait_state(ref, state, what=None):
    return wait_for(lambda: stats(ref)["state"] == state, T, message=what or f"state {state}")


def _peer(ref, name):
    return stats(ref)["refs"][name]


def log_events(tmp_path, event=None):
    contents = read_events(tmp_path / "supervisor.jsonl")
    assert contents.torn_tail is None and not contents.bad_lines
    return [e for e in contents.events if event is None or e["event"] == event]


def test_children_start_in_order_and_system_reaches_ready_with_gate_open(system, probes):
    ref, _ = system([spec("c", 30), spec("a", 10), spec("b", 20)])
    wait_state(ref, "READY")
    assert [e[1] for e in probes.log.events("started")] == ["a", "b", "c"]
    s = stats(ref)
    assert s["gate_open"] is True and s["degraded"] is False
    assert {n: c["generation"] for n, c in s["children"].items()} == {"a": 1, "b": 1, "c": 1}
    # The notify list (a) saw every transition and the gate opening.
    wait_for(lambda: probes.log.received("a", TradingGateChanged), T, message="gate message")
    states = [m.state for m in probes.log.received("a", SystemStateChanged)]
    assert states[-1] == "READY"
    assert probes.log.received("a", TradingGateChanged)[-1].open is True
    # Every child got the full peer table eventually.
    peers = probes.log.events("peers", "a")[-1][3]
    assert set(peers) == {"a", "b", "c"}


def test_crashed_child_is_restarted_with_new_generation_and_peers_rewired(system, probes, clock, tmp_path):
    ref, _ = system([spec("a", 10), spec("b", 20)])
    wait_state(ref, "READY")
    old_b = _peer(ref, "b")
    old_b.tell(Crash(text="kaput"))
    wait_for(lambda: stats(ref)["children"]["b"]["status"] == "waiting_restart", T, message="restart scheduled")
    assert stats(ref)["degraded"] is True and stats(ref)["gate_open"] is False
    clock.tick(ref, 0.5)  # backoff is 1 s: not yet
    assert stats(ref)["children"]["b"]["generation"] == 1
    clock.tick(ref, 0.6)
    wait_for(lambda: stats(ref)["children"]["b"]["status"] == "running", T, message="b restarted")
    s = stats(ref)
    assert s["children"]["b"]["generation"] == 2 and s["children"]["b"]["restarts"] == 1
    assert s["gate_open"] is True and s["state"] == "READY"
    new_b = _peer(ref, "b")
    assert new_b is not old_b and new_b.is_alive() and not old_b.is_alive()
    # a was re-wired to the new b, and can reach it.
    wait_for(lambda: probes.log.events("peers", "a")[-1][3].get("b") is new_b, T, message="a re-wired")
    a = _peer(ref, "a")
    assert a.ask(RequestStats(), timeout=T)["peers"]["b"] is new_b
    failed = log_events(tmp_path, "actor_failed")
    assert failed[0]["actor"] == "b" and failed[0]["generation"] == 1 and "kaput" in failed[0]["reason"]
    assert "Traceback" in failed[0]["traceback"]
    restart = log_events(tmp_path, "restart")[0]
    assert restart["generation"] == 2 and restart["extra"]["previous_generation"] == 1
    assert log_events(tmp_path, "restart_scheduled")[0]["extra"]["delay_ms"] == 1000


def test_crash_loop_reaches_error_and_closes_gate_then_stays_idle(system, probes, clock, tmp_path):
    ref, _ = system([spec("a", 10), spec("b", 20)], max_restarts=2, restart_window_ns=60 * NS)
    wait_state(ref, "READY")
    probes.control("b").crash_every_message = True
    for generation in (1, 2, 3):
        assert stats(ref)["children"]["b"]["generation"] == generation
        _peer(ref, "b").tell(Crash())
        if generation < 3:
            wait_for(lambda: stats(ref)["children"]["b"]["status"] == "waiting_restart", T, message="scheduled")
            clock.tick(ref, 10)  # past any backoff (1 s, 2 s)
            wait_for(lambda g=generation: stats(ref)["children"]["b"]["generation"] == g + 1, T, message="respawn")
            # b crashes on the forwarded tick or on its first message; make it dead before continuing
            wait_for(lambda: stats(ref)["children"]["b"]["status"] != "starting", T, message="b settled")
            if stats(ref)["children"]["b"]["status"] != "running":
                break
    wait_state(ref, "ERROR")
    s = stats(ref)
    assert s["gate_open"] is False
    assert "restart intensity exceeded" in s["state_reason"]
    wait_for(lambda: probes.log.received("a", TradingGateChanged)[-1].open is False, T, message="gate closed")
    assert probes.log.received("a", SystemStateChanged)[-1].state == "ERROR"
    # No more restarts while in ERROR (CPU idle): ticks before the cool-down do nothing.
    generation = stats(ref)["children"]["b"]["generation"]
    for _ in range(3):
        clock.tick(ref, 5)
    assert stats(ref)["children"]["b"]["generation"] == generation
    assert stats(ref)["state"] == "ERROR"
    errors = [e for e in log_events(tmp_path, "state") if e["state_after"] == "ERROR"]
    assert len(errors) == 1 and "restart intensity" in errors[0]["reason"]


def test_error_recovers_through_startup_and_repeated_errors_escalate(system, probes, clock, tmp_path):
    ref, exits = system(
        [spec("a", 10), spec("b", 20)],
        max_restarts=0,  # any crash is one too many: ERROR at once
        error_cooldown_ns=30 * NS,
        max_errors=1,
        error_window_ns=600 * NS,
    )
    wait_state(ref, "READY")
    _peer(ref, "b").tell(Crash())
    wait_state(ref, "ERROR")
    clock.tick(ref, 10)
    assert stats(ref)["state"] == "ERROR"  # still cooling down
    clock.tick(ref, 25)
    wait_state(ref, "READY", "recovered to READY")
    s = stats(ref)
    assert s["children"]["b"]["generation"] == 2 and s["children"]["a"]["generation"] == 1
    path = [(e["state_before"], e["state_after"]) for e in log_events(tmp_path, "state")]
    assert ("ERROR", "STARTUP") in path and ("STARTUP", "INITIALIZING") in path
    # A second ERROR within the window is past max_errors=1: SHUTDOWN with a non-zero exit code.
    _peer(ref, "b").tell(Crash())
    wait_state(ref, "SHUTDOWN")
    wait_for(lambda: exits, T, message="on_exit called")
    assert exits == [EXIT_ESCALATED] and stats(ref)["exit_code"] == EXIT_ESCALATED
    assert not any(c["alive"] for c in stats(ref)["children"].values())
    assert log_events(tmp_path, "escalation")


def test_hung_child_is_detected_by_ping_and_restarted(system, probes, clock, tmp_path):
    ref, _ = system([spec("a", 10), spec("b", 20)], ping_interval_ns=1 * NS)
    wait_state(ref, "READY")
    old_b = _peer(ref, "b")
    old_b.tell(Block())
    assert probes.control("b").blocked.wait(T)
    clock.tick(ref, 1.0)  # Ping both
    wait_for(lambda: not stats(ref)["children"]["a"]["ping_outstanding"], T, message="a answered")
    assert stats(ref)["children"]["b"]["ping_outstanding"] is True
    clock.tick(ref, 1.5)  # within the 2 s ping timeout
    assert stats(ref)["children"]["b"]["status"] == "running"
    clock.tick(ref, 1.0)  # 2.5 s without a Pong: hung
    wait_for(lambda: stats(ref)["children"]["b"]["status"] == "waiting_restart", T, message="hang handled")
    hang = log_events(tmp_path, "hang")[0]
    assert hang["actor"] == "b" and hang["generation"] == 1 and hang["extra"]["policy"] == "restart"
    assert "b#1" in stats(ref)["zombies"]
    clock.tick(ref, 1.1)
    wait_for(lambda: stats(ref)["children"]["b"]["status"] == "running", T, message="b restarted")
    assert stats(ref)["children"]["b"]["generation"] == 2
    probes.control("b").release.set()  # the zombie unblocks and processes its stop
    wait_for(lambda: not old_b.is_alive(), T, message="zombie stopped")


def test_restart_request_does_not_block_the_supervisor_on_a_blocked_child(system, probes, clock, tmp_path):
    ref, _ = system([spec("a", 10), spec("b", 20, shutdown_timeout_ns=2 * NS)])
    wait_state(ref, "READY")
    old_b = _peer(ref, "b")
    old_b.tell(Block())
    assert probes.control("b").blocked.wait(T)
    assert ref.ask(RestartActor(actor="b", reason="operator"), timeout=T) is True  # answered at once
    assert stats(ref)["children"]["b"]["status"] == "stopping"  # and the supervisor keeps answering
    clock.tick(ref, 1.0)  # within b's shutdown timeout: still stopping, no second instance
    s = stats(ref)
    assert s["children"]["b"]["status"] == "stopping" and s["children"]["b"]["generation"] == 1
    assert s["gate_open"] is False
    clock.tick(ref, 1.5)  # past it: the old instance is a zombie, the replacement is scheduled
    wait_for(lambda: stats(ref)["children"]["b"]["status"] == "waiting_restart", T, message="given up on b#1")
    assert "b#1" in stats(ref)["zombies"]
    assert log_events(tmp_path, "stop_timeout")[0]["actor"] == "b"
    clock.tick(ref, 1.1)
    wait_for(lambda: stats(ref)["children"]["b"]["status"] == "running", T, message="b restarted")
    assert stats(ref)["children"]["b"]["generation"] == 2
    probes.control("b").release.set()  # the zombie unblocks and processes its stop
    wait_for(lambda: not old_b.is_alive(), T, message="zombie stopped")


def test_hung_trading_client_means_error(system, probes, clock):
    ref, _ = system([spec("a", 10), spec("whale_executor", 20)], ping_interval_ns=1 * NS)
    wait_state(ref, "READY")
    _peer(ref, "whale_executor").tell(Block())
    assert probes.control("whale_executor").blocked.wait(T)
    clock.tick(ref, 1.0)
    wait_for(lambda: not stats(ref)["children"]["a"]["ping_outstanding"], T, message="a answered")
    clock.tick(ref, 3.0)
    wait_state(ref, "ERROR")
    assert "whale_executor hung" in stats(ref)["state_reason"]
    # While the hung executor is still alive, ERROR does not recover even after the cool-down.
    clock.tick(ref, 40)
    assert stats(ref)["state"] == "ERROR"
    probes.control("whale_executor").release.set()
    wait_for(lambda: not stats(ref)["zombies"], T, message="zombie gone")
    clock.tick(ref, 1)
    wait_state(ref, "READY", "recovered once the hung executor is gone")
    assert stats(ref)["children"]["whale_executor"]["generation"] == 2


def test_on_start_failure_is_reported_and_retried(system, probes, clock, tmp_path):
    probes.control("b").fail_setup_times = 1
    ref, _ = system([spec("a", 10), spec("b", 20), spec("c", 30)])
    wait_for(lambda: stats(ref)["children"]["b"]["status"] == "waiting_restart", T, message="b failed to start")
    # The ordered start went on with c although b failed.
    wait_for(lambda: stats(ref)["children"]["c"]["status"] == "running", T, message="c started")
    assert stats(ref)["state"] == "INITIALIZING"
    failed = log_events(tmp_path, "actor_failed")[0]
    assert failed["extra"]["phase"] == "on_start" and "cannot start" in failed["reason"]
    assert len(probes.log.events("cleanup", "b")) == 1
    clock.tick(ref, 1.5)
    wait_state(ref, "READY")
    assert stats(ref)["children"]["b"]["generation"] == 2


def test_factory_failure_counts_as_start_failure(system, probes, clock, tmp_path):
    calls = []
    real = probes.factory("b")

    def flaky(name, generation, supervisor, peers):
        calls.append(generation)
        if generation == 1:
            raise OSError("cannot open socket")
        return real(name, generation, supervisor, peers)

    probes.factories = lambda names: {"a": probes.factory("a"), "b": flaky}
    ref, _ = system([spec("a", 10), spec("b", 20)])
    wait_for(lambda: stats(ref)["children"]["b"]["status"] == "waiting_restart", T, message="scheduled")
    assert log_events(tmp_path, "actor_failed")[0]["extra"]["phase"] == "factory"
    clock.tick(ref, 1.5)
    wait_state(ref, "READY")
    assert calls == [1, 2]


def test_shutdown_stops_children_in_reverse_order(system, probes, tmp_path):
    ref, exits = system([spec("a", 10), spec("b", 20), spec("c", 30)])
    wait_state(ref, "READY")
    refs = [_peer(ref, n) for n in ("a", "b", "c")]
    code = shutdown_system(ref, "test done", timeout_s=10)
    assert code == EXIT_OK and exits == [EXIT_OK]
    assert [e[1] for e in probes.log.events("cleanup")] == ["c", "b", "a"]
    assert not ref.is_alive() and not any(r.is_alive() for r in refs)
    events = log_events(tmp_path)
    assert events[-1]["event"] == "shutdown" and events[-1]["extra"]["exit_code"] == 0
    assert [e["actor"] for e in events if e["event"] == "actor_stopped"] == ["c", "b", "a"]


def test_readiness_climb_degraded_flag_and_acting(system, probes, clock):
    specs = [
        spec("a", 10),
        spec("whale_executor", 20),
        spec("trades", 30, feed=True),
        spec("book", 40, feed=True, critical=True),
    ]
    ref, _ = system(specs, trading_enabled=True, sync_targets=("whale_executor",), notify=("a",))
    wait_state(ref, "ORDERBOOK_CONNECT")
    ref.tell(FeedReady(feed="book", generation=1, conn_id=1))
    wait_state(ref, "TRADING_CLIENT_CONNECT")
    ref.tell(TradingClientReady(actor="whale_executor", generation=1))
    wait_state(ref, "KALSHI_DATA_SYNC")
    wait_for(lambda: probes.log.received("whale_executor", SyncAccount), T, message="SyncAccount")
    ref.tell(DataSynced(actor="whale_executor", generation=1, at_ms=1))
    wait_state(ref, "READY")
    s = stats(ref)
    assert s["degraded"] is True and s["gate_open"] is False  # the trades feed is not ready
    ref.tell(FeedReady(feed="trades", generation=1, conn_id=2))
    wait_for(lambda: stats(ref)["gate_open"], T, message="gate open")
    # The executor is told the gate state too (it is the trading client).
    wait_for(lambda: probes.log.received("whale_executor", TradingGateChanged)[-1].open, T, message="executor told")
    ref.tell(ExecutionStarted(actor="whale_executor", generation=1))
    wait_state(ref, "ACTING")
    ref.tell(ExecutionFinished(actor="whale_executor", generation=1))
    wait_state(ref, "READY")
    # Losing the critical feed falls back to ORDERBOOK_CONNECT; stale generations are ignored.
    ref.tell(FeedDown(feed="book", generation=0, reason="old"))
    assert stats(ref)["state"] == "READY"
    ref.tell(FeedDown(feed="book", generation=1, reason="socket closed"))
    wait_state(ref, "ORDERBOOK_CONNECT", "fell back")
    assert stats(ref)["gate_open"] is False
    ref.tell(FeedReady(feed="book", generation=1, conn_id=3))
    assert stats(ref)["state"] == "KALSHI_DATA_SYNC"  # the trading client is still ready: sync again
    wait_for(lambda: len(probes.log.received("whale_executor", SyncAccount)) == 2, T, message="second sync")
    ref.tell(DataSynced(actor="whale_executor", generation=1, at_ms=2))
    wait_state(ref, "READY")
    assert stats(ref)["gate_open"] is True


def test_state_timeout_goes_to_error(system, clock, tmp_path):
    ref, _ = system([spec("a", 10), spec("book", 20, feed=True, critical=True)])
    wait_state(ref, "ORDERBOOK_CONNECT")
    clock.tick(ref, 119)
    assert stats(ref)["state"] == "ORDERBOOK_CONNECT"
    clock.tick(ref, 2)
    wait_state(ref, "ERROR")
    assert stats(ref)["state_reason"] == "timeout in ORDERBOOK_CONNECT"


def test_old_generation_reports_are_ignored_and_restart_command(system, probes, clock, tmp_path):
    ref, _ = system([spec("a", 10), spec("b", 20)])
    wait_state(ref, "READY")
    old_b = _peer(ref, "b")
    # The command does not wait for b to stop: b is "stopping" until its cleanup is over, then waits out its
    # restart delay (scheduled from the time the old instance was gone).
    assert ref.ask(RestartActor(actor="b", reason="operator"), timeout=T) is True
    assert stats(ref)["children"]["b"]["status"] in ("stopping", "waiting_restart")
    assert stats(ref)["gate_open"] is False  # b's readiness went with the request
    wait_for(lambda: not old_b.is_alive(), T, message="old b stopped")
    clock.tick(ref, 0)
    wait_for(lambda: stats(ref)["children"]["b"]["status"] == "waiting_restart", T, message="b gone")
    assert stats(ref)["children"]["b"]["generation"] == 1
    clock.tick(ref, 1.5)
    wait_for(lambda: stats(ref)["children"]["b"]["generation"] == 2, T, message="restarted")
    wait_for(lambda: stats(ref)["children"]["b"]["status"] == "running", T, message="running")
    from messages.control import ActorFailed

    ref.tell(ActorFailed(actor="b", generation=1, phase="handler", error="late", traceback=""))
    s = stats(ref)
    assert s["children"]["b"]["status"] == "running" and s["children"]["b"]["generation"] == 2
    late = log_events(tmp_path, "failure_report")
    assert late and late[-1]["extra"]["ignored"] is True
    ref.tell(SequenceGap(feed="b", conn_id=1, sid=3, expected=5, got=7))
    stats(ref)
    gap = log_events(tmp_path, "feed_gap")[0]
    assert gap["extra"] == {"conn_id": 1, "sid": 3, "expected": 5, "got": 7}


def test_ticks_are_forwarded_to_children(system, probes, clock):
    ref, _ = system([spec("a", 10), spec("b", 20, ticks=False)])
    wait_state(ref, "READY")
    clock.tick(ref, 0.1)
    a = _peer(ref, "a")
    wait_for(lambda: probes.log.events("tick", "a"), T, message="a ticked")
    assert a.ask(Echo(value=1), timeout=T) == 1
    assert probes.log.events("tick", "a")[0][3] == clock.now_ns
    assert not probes.log.events("tick", "b")


# --- the supervisor log ------------------------------------------------------------------------


def test_supervisor_log_lines_mode_and_fields(tmp_path):
    import json
    import os
    import stat

    from actors.supervisor_log import FIELDS, SupervisorLog

    path = tmp_path / "data" / "sup.jsonl"
    slog = SupervisorLog(path, wall_clock_ns=lambda: 1_767_225_600_123_456_789)
    slog.write("state", mono_ns=5, state_before="READY", state_after="ERROR", reason="bad\nthing \u2603\x1b")
    slog.write("actor_failed", mono_ns=6, actor="b", generation=2, traceback="Traceback\n  line\n", extra={"k": 1})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert len(lines) == 2  # newlines inside values are escaped: one event per line
    first = json.loads(lines[0])
    assert tuple(first) == FIELDS
    assert first["ts"] == "2026-01-01T00:00:00.123456Z"
    assert first["reason"] == "bad\nthing \u2603\x1b" and lines[0].isascii()
    assert json.loads(lines[1])["extra"] == {"k": 1}
    slog.close()
    slog.write("late", mono_ns=7)  # after close: counted, not raised
    assert slog.write_errors == 1


def test_supervisor_log_tightens_an_existing_file_mode(tmp_path):
    import os
    import stat

    from actors.supervisor_log import SupervisorLog

    path = tmp_path / "sup.jsonl"
    path.write_text("")
    os.chmod(path, 0o644)
    SupervisorLog(path).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_read_events_reports_a_torn_tail_and_bad_lines(tmp_path):
    from actors.supervisor_log import SupervisorLog

    path = tmp_path / "sup.jsonl"
    slog = SupervisorLog(path)
    slog.write("a", mono_ns=1)
    slog.write("b", mono_ns=2)
    slog.close()
    with open(path, "a") as fh:
        fh.write("not json\n")
        fh.write('{"event": "c", "mono_ns": 3, "rea')  # crash mid-write
    contents = read_events(path)
    assert [e["event"] for e in contents.events] == ["a", "b"]
    assert contents.bad_lines == (3,)
    assert contents.torn_tail == '{"event": "c", "mono_ns": 3, "rea'
    # A complete last record without its newline is not torn.
    path.write_text('{"event": "x", "mono_ns": 1}')
    contents = read_events(path)
    assert [e["event"] for e in contents.events] == ["x"] and contents.torn_tail is None


# --- the ticker ----------------------------------------------------------------------------------


def test_ticker_tells_ticks_until_stopped(probes):
    from actors.ticker import Ticker
    from tests.actors.conftest import Probe

    ref = Probe.start("t", 1, None, None, {}, probe_log=probes.log, control=probes.control("t"))
    dead = Probe.start("d", 1, None, None, {}, probe_log=probes.log, control=probes.control("d"))
    dead.stop(timeout=T)
    ticker = Ticker([ref, dead], interval_s=0.01).start()
    try:
        wait_for(lambda: len(probes.log.events("tick", "t")) >= 3, T, message="3 ticks")
    finally:
        ticker.stop()
    assert not ticker.running
    ticks = [e[3] for e in probes.log.events("tick", "t")]
    assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks)
    assert ticker.dropped >= 3
    ticker.stop()  # idempotent
    with pytest.raises(RuntimeError):
        ticker.start()
    with pytest.raises(ValueError):
        Ticker([ref], interval_s=0)
    ref.stop(timeout=T)


def test_executor_restart_closes_the_gate_until_it_is_ready_and_synced_again(system, probes, clock):
    specs = [spec("a", 10), spec("whale_executor", 20), spec("book", 30, feed=True, critical=True)]
    ref, _ = system(specs, trading_enabled=True, sync_targets=("whale_executor",))
    wait_state(ref, "ORDERBOOK_CONNECT")
    ref.tell(FeedReady(feed="book", generation=1, conn_id=1))
    ref.tell(TradingClientReady(actor="whale_executor", generation=1))
    wait_state(ref, "KALSHI_DATA_SYNC")
    ref.tell(DataSynced(actor="whale_executor", generation=1, at_ms=1))
    wait_state(ref, "READY")
    assert stats(ref)["gate_open"] is True
    _peer(ref, "whale_executor").tell(Crash())
    wait_for(lambda: stats(ref)["state"] == "TRADING_CLIENT_CONNECT", T, message="left READY")
    assert stats(ref)["gate_open"] is False
    clock.tick(ref, 1.5)
    wait_for(lambda: stats(ref)["children"]["whale_executor"]["status"] == "running", T, message="restarted")
    # The new executor is told the current (closed) gate as soon as it starts.
    wait_for(
        lambda: [e for e in probes.log.events("message", "whale_executor") if e[2] == 2
                 and isinstance(e[3], TradingGateChanged)],
        T, message="gate state sent to generation 2",
    )
    first = [e[3] for e in probes.log.events("message", "whale_executor") if e[2] == 2
             and isinstance(e[3], TradingGateChanged)][0]
    assert first.open is False
    ref.tell(TradingClientReady(actor="whale_executor", generation=1))  # the dead generation: ignored
    assert stats(ref)["state"] == "TRADING_CLIENT_CONNECT"
    ref.tell(TradingClientReady(actor="whale_executor", generation=2))
    wait_state(ref, "KALSHI_DATA_SYNC")
    ref.tell(DataSynced(actor="whale_executor", generation=2, at_ms=2))
    wait_state(ref, "READY")
    assert stats(ref)["gate_open"] is True


def test_shutdown_does_not_wait_forever_for_a_blocked_child(system, probes, tmp_path):
    ref, exits = system([spec("a", 10), spec("b", 20, shutdown_timeout_ns=NS // 5)])
    wait_state(ref, "READY")
    b = _peer(ref, "b")
    b.tell(Block())
    assert probes.control("b").blocked.wait(T)
    assert shutdown_system(ref, "stop with a blocked child", timeout_s=10) == EXIT_OK
    timeout = log_events(tmp_path, "stop_timeout")
    assert timeout and timeout[0]["actor"] == "b"
    assert log_events(tmp_path, "zombie")[0]["actor"] == "b"
    assert [e[1] for e in probes.log.events("cleanup")] == ["a"]  # a still stopped in order
    probes.control("b").release.set()
    wait_for(lambda: not b.is_alive(), T, message="blocked child finally stopped")


def test_children_can_be_built_from_a_configured_class(tmp_path, clock):
    from actors.config import ConfigError

    good = ActorSystemConfig(
        supervisor=SupervisorConfig(trading_enabled=False),
        children=(ChildSpec(name="p", class_path="tests.actors.conftest:Plain"),),
    )
    ref = HealthSupervisor.start(good, data_dir=tmp_path, clock_ns=clock)
    try:
        wait_state(ref, "READY")
    finally:
        assert shutdown_system(ref, timeout_s=10) == EXIT_OK
    for path in ("tests.actors.conftest:Nope", "no_such_module:X", "tests.actors.conftest:Clock"):
        bad = ActorSystemConfig(
            supervisor=SupervisorConfig(trading_enabled=False),
            children=(ChildSpec(name="p", class_path=path),),
        )
        with pytest.raises(ConfigError, match="actors.p|cannot import|not a SupervisedActor"):
            HealthSupervisor.start(bad, data_dir=tmp_path, clock_ns=clock)
    no_factory = ActorSystemConfig(supervisor=SupervisorConfig(trading_enabled=False), children=(ChildSpec(name="q"),))
    with pytest.raises(ConfigError, match="actors.q"):
        HealthSupervisor.start(no_factory, data_dir=tmp_path, clock_ns=clock)
    trading_without_client = ActorSystemConfig(supervisor=SupervisorConfig(trading_enabled=True), children=())
    with pytest.raises(ConfigError, match="trading_client"):
        HealthSupervisor.start(trading_without_client, data_dir=tmp_path, clock_ns=clock)


# --- permanent failures (D3, F22): ERROR at once, no restart loop ------------------------------------

CORRUPT_TEXT = "journal corrupt at decisions seq 7: checksum mismatch"
FULL_TEXT = "journal: JournalError: journal write failed (batch): database or disk is full"


def corrupt_journal_factory(probes, name):
    """A probe whose setup() raises the journal's own JournalCorrupt while ``fail_setup_times`` lasts."""
    from actors.journal import JournalCorrupt
    from tests.actors.conftest import Probe

    class CorruptJournalProbe(Probe):
        def setup(self) -> None:
            if self.control.fail_setup_times > 0:
                self.control.fail_setup_times -= 1
                self.probe_log.add("setup_failed", self.name, self.generation)
                raise JournalCorrupt("decisions", 7, "checksum mismatch")
            super().setup()

    control = probes.control(name)

    def start(child, generation, supervisor, peers):
        return CorruptJournalProbe.start(child, generation, supervisor, peers, {}, probe_log=probes.log,
                                         control=control)

    return start


def with_corrupt(probes, name):
    """Make ``probes.factories`` build ``name`` as a CorruptJournalProbe (the rest as plain probes)."""
    plain = probes.factories
    probes.factories = lambda names: {**plain(names), name: corrupt_journal_factory(probes, name)}


def test_permanent_start_failure_goes_to_error_at_once_without_restarts(system, probes, clock, tmp_path):
    probes.control("whale_executor").fail_setup_times = 1
    with_corrupt(probes, "whale_executor")
    ref, exits = system([spec("a", 10), spec("whale_executor", 20), spec("c", 30)])
    wait_state(ref, "ERROR")
    s = stats(ref)
    executor = s["children"]["whale_executor"]
    assert (executor["status"], executor["generation"], executor["restarts"]) == ("failed", 1, 0)
    assert s["state_reason"].startswith("whale_executor failed permanently")
    assert CORRUPT_TEXT in s["state_reason"] and CORRUPT_TEXT in executor["last_failure"]
    assert s["gate_open"] is False and s["total_restarts"] == 0
    assert probes.log.received("a", SystemStateChanged)[-1].state == "ERROR"
    assert len(probes.log.events("cleanup", "whale_executor")) == 1
    # No restart before the cool-down: ticks in ERROR spawn nothing (the ordered start stopped too).
    for _ in range(3):
        clock.tick(ref, 5)
    s = stats(ref)
    assert s["state"] == "ERROR" and s["children"]["whale_executor"]["generation"] == 1
    assert s["children"]["c"]["generation"] == 0
    assert exits == []
    # The supervisor log says why, with the location, and that no restart was scheduled.
    [failed] = log_events(tmp_path, "actor_failed")
    assert failed["extra"] == {"phase": "on_start", "permanent": True} and CORRUPT_TEXT in failed["reason"]
    assert "JournalCorrupt" in failed["traceback"]
    [refused] = log_events(tmp_path, "restart_refused")
    assert refused["actor"] == "whale_executor" and CORRUPT_TEXT in refused["reason"]
    assert log_events(tmp_path, "restart_scheduled") == [] and log_events(tmp_path, "restart") == []
    [error] = [e for e in log_events(tmp_path, "state") if e["state_after"] == "ERROR"]
    assert error["state_before"] == "INITIALIZING" and CORRUPT_TEXT in error["reason"]


def test_a_transient_start_failure_is_still_restarted(system, probes, clock):
    # The same child failing with an ordinary error (not permanent) keeps the restart policy.
    probes.control("b").fail_setup_times = 1
    ref, _ = system([spec("a", 10), spec("b", 20)])
    wait_for(lambda: stats(ref)["children"]["b"]["status"] == "waiting_restart", T, message="restart scheduled")
    assert stats(ref)["state"] == "INITIALIZING"


def test_permanently_failed_child_is_tried_again_after_the_cool_down(system, probes, clock, tmp_path):
    probes.control("whale_executor").fail_setup_times = 1  # the operator fixes the file during the cool-down
    with_corrupt(probes, "whale_executor")
    ref, exits = system([spec("a", 10), spec("whale_executor", 20), spec("c", 30)], error_cooldown_ns=30 * NS)
    wait_state(ref, "ERROR")
    clock.tick(ref, 29)
    assert stats(ref)["state"] == "ERROR"
    clock.tick(ref, 2)
    wait_state(ref, "READY", "recovered after the cool-down")
    s = stats(ref)
    assert s["children"]["whale_executor"]["generation"] == 2 and s["children"]["c"]["generation"] == 1
    assert s["gate_open"] is True and exits == []
    path = [(e["state_before"], e["state_after"]) for e in log_events(tmp_path, "state")]
    assert ("ERROR", "STARTUP") in path and path[-1] == ("ORDERBOOK_CONNECT", "READY")


def test_repeated_permanent_failure_escalates_to_shutdown(system, probes, clock, tmp_path):
    probes.control("whale_executor").fail_setup_times = 100  # never fixed
    with_corrupt(probes, "whale_executor")
    ref, exits = system([spec("a", 10), spec("whale_executor", 20)], error_cooldown_ns=30 * NS, max_errors=3,
                        error_window_ns=600 * NS)
    wait_state(ref, "ERROR")
    for attempt in (2, 3, 4):
        clock.tick(ref, 31)  # the cool-down is over: recovery tries the executor again, which fails again
        wait_for(lambda a=attempt: stats(ref)["children"]["whale_executor"]["generation"] == a, T,
                 message=f"attempt {attempt}")
        if attempt < 4:
            wait_state(ref, "ERROR", f"ERROR again after attempt {attempt}")
    # The fourth ERROR within the window is past max_errors=3: SHUTDOWN with exit code 70, no restart ever.
    wait_state(ref, "SHUTDOWN")
    wait_for(lambda: exits, T, message="on_exit called")
    assert exits == [EXIT_ESCALATED] and stats(ref)["exit_code"] == EXIT_ESCALATED
    assert stats(ref)["children"]["whale_executor"]["restarts"] == 0
    assert log_events(tmp_path, "restart_scheduled") == []
    errors = [e for e in log_events(tmp_path, "state") if e["state_after"] == "ERROR"]
    assert len(errors) == 4 and all(CORRUPT_TEXT in e["reason"] for e in errors)
    [escalation] = log_events(tmp_path, "escalation")
    assert "more than 3 ERRORs" in escalation["reason"] and CORRUPT_TEXT in escalation["reason"]
    assert len(probes.log.events("setup_failed", "whale_executor")) == 4


def _climb_to_ready(ref, generation):
    ref.tell(TradingClientReady(actor="whale_executor", generation=generation))
    wait_state(ref, "KALSHI_DATA_SYNC")
    ref.tell(DataSynced(actor="whale_executor", generation=generation, at_ms=generation))
    wait_state(ref, "READY")


def test_fatal_trading_client_down_means_error_and_recovery_restarts_the_executor(system, probes, clock, tmp_path):
    from messages.control import TradingClientDown

    specs = [spec("a", 10), spec("whale_executor", 20), spec("book", 30, feed=True, critical=True)]
    ref, exits = system(specs, trading_enabled=True, sync_targets=("whale_executor",), error_cooldown_ns=30 * NS)
    wait_state(ref, "ORDERBOOK_CONNECT")
    ref.tell(FeedReady(feed="book", generation=1, conn_id=1))
    _climb_to_ready(ref, 1)
    # A down that is not fatal (e.g. a failed reconcile) only drops readiness: the executor recovers by itself.
    ref.tell(TradingClientDown(actor="whale_executor", generation=1, reason="reconcile: timeout"))
    wait_state(ref, "TRADING_CLIENT_CONNECT")
    _climb_to_ready(ref, 1)
    executor = _peer(ref, "whale_executor")

    ref.tell(TradingClientDown(actor="whale_executor", generation=0, reason=FULL_TEXT, fatal=True))  # stale
    assert stats(ref)["state"] == "READY"
    ref.tell(TradingClientDown(actor="whale_executor", generation=1, reason=FULL_TEXT, fatal=True))
    wait_state(ref, "ERROR")
    s = stats(ref)
    assert s["state_reason"].startswith(FULL_TEXT) and "whale_executor" in s["state_reason"]
    assert s["gate_open"] is False
    # The executor with the dead journal is stopped now (no waiting for a TradingClientReady that cannot
    # come); it saw ERROR and the closed gate before its cleanup ran.
    wait_for(lambda: stats(ref)["children"]["whale_executor"]["status"] == "stopped", T, message="executor stopped")
    assert not executor.is_alive() and stats(ref)["children"]["whale_executor"]["generation"] == 1
    gen1 = [e for e in probes.log.events(None, "whale_executor") if e[2] == 1]
    assert gen1[-1][0] == "cleanup" and len(probes.log.events("cleanup", "whale_executor")) == 1
    told = [e[3] for e in gen1 if e[0] == "message"]
    assert any(isinstance(m, SystemStateChanged) and m.state == "ERROR" and m.reason.startswith(FULL_TEXT)
               for m in told)
    assert isinstance(told[-1], TradingGateChanged) and told[-1].open is False
    [down] = [e for e in log_events(tmp_path, "trading_client_down") if e["extra"]["fatal"]]
    assert down["reason"] == FULL_TEXT and down["generation"] == 1
    [error] = [e for e in log_events(tmp_path, "state") if e["state_after"] == "ERROR"]
    assert error["state_before"] == "READY" and error["reason"].startswith(FULL_TEXT)
    clock.tick(ref, 10)
    assert stats(ref)["state"] == "ERROR" and stats(ref)["children"]["whale_executor"]["generation"] == 1

    # After the cool-down a new executor (a new journal) starts; the system climbs again once it is ready.
    clock.tick(ref, 21)
    wait_for(lambda: stats(ref)["children"]["whale_executor"]["generation"] == 2, T, message="executor restarted")
    wait_state(ref, "TRADING_CLIENT_CONNECT")
    _climb_to_ready(ref, 2)
    s = stats(ref)
    assert s["gate_open"] is True and s["children"]["book"]["generation"] == 1 and exits == []


def test_a_permanent_report_arriving_after_the_liveness_check_takes_the_restart_back(tmp_path):
    """is_alive() may see the child dead before its ActorFailed is handled (a Tick queued first): the
    report still stops the scheduled restart. Driven through the handlers, without threads."""
    from actors.lifecycle import State
    from messages.control import ActorFailed, ActorStarted, Shutdown, Tick

    class FakeRef:
        def __init__(self) -> None:
            self.alive = True

        def tell(self, msg) -> None:
            pass

        def is_alive(self) -> bool:
            return self.alive

        def stop(self, block=True, timeout=None):
            self.alive = False
            return True

    refs: list[FakeRef] = []

    def factory(name, generation, supervisor, peers):
        refs.append(FakeRef())
        return refs[-1]

    cfg = ActorSystemConfig(
        supervisor=SupervisorConfig(backoff_initial_ns=NS, backoff_jitter=0.0, ping_interval_ns=10**6 * NS,
                                    trading_enabled=False, notify=()),
        children=(spec("a", 1), spec("b", 2)),
    )
    sup = HealthSupervisor(cfg, {"a": factory, "b": factory}, data_dir=tmp_path, clock_ns=lambda: 0)
    try:
        sup.on_start()
        for name in ("a", "b"):
            sup.on_receive(ActorStarted(actor=name, generation=1))
        assert sup.state is State.READY
        refs[1].alive = False  # b died in setup(); its report is still queued behind a Tick
        sup.on_receive(Tick(now_mono_ns=NS // 2, now_wall_ms=0))
        assert sup.children["b"].status == "waiting_restart"
        sup.on_receive(ActorFailed(actor="b", generation=1, phase="on_start", error=CORRUPT_TEXT, traceback="",
                                   permanent=True))
        child = sup.children["b"]
        assert sup.state is State.ERROR and child.status == "failed" and child.restart_at_ns is None
        assert CORRUPT_TEXT in sup.state_reason
        sup.on_receive(Tick(now_mono_ns=5 * NS, now_wall_ms=0))  # past the 1 s backoff: still no restart
        assert len(refs) == 2 and child.generation == 1
    finally:
        sup.on_receive(Shutdown(reason="test over"))
        sup.slog.close()
