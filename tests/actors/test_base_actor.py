"""SupervisedActor: failure reporting from every phase, one cleanup, dispatch, Ping/Pong, PeerTable."""

from __future__ import annotations

import queue

import pykka
import pytest

from actors.base import PeerTable, SupervisedActor, error_text, handles, mailbox_depth
from messages.base import Message, message
from messages.control import ActorFailed, ActorStarted, ActorStopped, PeersChanged, Ping, Pong, RequestStats
from tests.actors.conftest import Crash, Echo, Probe, ProbeControl, ProbeLog
from tests.helpers import wait_for

T = 5  # seconds: every ask and wait is bounded


def start_probe(name="p", *, supervisor=None, control=None, peers=None, log=None):
    log = log or ProbeLog()
    control = control or ProbeControl()
    ref = Probe.start(name, 3, supervisor, peers or PeerTable(), {}, probe_log=log, control=control)
    return ref, log, control


@pytest.fixture
def sup():
    """A recording stand-in for the supervisor: a probe that logs what children report."""
    ref, log, _ = start_probe("sup")
    yield ref, log
    if ref.is_alive():
        ref.stop(timeout=T)


def reports(log, kind_type):
    return [e[3] for e in log.events("message", "sup") if isinstance(e[3], kind_type)]


def test_inbox_is_simple_queue_and_depth_is_reported():
    ref, _, _ = start_probe()
    assert isinstance(ref.actor_inbox, queue.SimpleQueue)
    assert mailbox_depth(ref) == 0
    assert ref.ask(Echo(value=7), timeout=T) == 7
    stats = ref.ask(RequestStats(), timeout=T)
    assert stats["name"] == "p" and stats["generation"] == 3 and stats["mailbox_depth"] == 0
    ref.stop(timeout=T)


def test_started_and_stopped_reports_and_single_cleanup(sup):
    sup_ref, sup_log = sup
    ref, log, _ = start_probe(supervisor=sup_ref)
    wait_for(lambda: reports(sup_log, ActorStarted), T, message="ActorStarted")
    assert reports(sup_log, ActorStarted) == [ActorStarted(actor="p", generation=3)]
    ref.stop(timeout=T)
    wait_for(lambda: reports(sup_log, ActorStopped), T, message="ActorStopped")
    assert reports(sup_log, ActorStopped) == [ActorStopped(actor="p", generation=3)]
    assert len(log.events("cleanup", "p")) == 1
    assert not reports(sup_log, ActorFailed)


def test_handler_exception_is_reported_with_traceback_and_cleans_up_once(sup):
    sup_ref, sup_log = sup
    ref, log, _ = start_probe(supervisor=sup_ref)
    ref.tell(Crash(text="bad\nline \u00e9" + "x" * 1000))
    wait_for(lambda: reports(sup_log, ActorFailed), T, message="ActorFailed")
    wait_for(lambda: not ref.is_alive(), T, message="actor stopped")
    failure = reports(sup_log, ActorFailed)[0]
    assert failure.actor == "p" and failure.generation == 3 and failure.phase == "handler"
    assert failure.error.startswith("RuntimeError: bad\\nline \\xe9")
    assert "\n" not in failure.error and len(failure.error) <= 300 and failure.error.isascii()
    assert "Traceback" in failure.traceback and "on_any" in failure.traceback
    wait_for(lambda: log.events("cleanup", "p"), T, message="cleanup")
    assert len(log.events("cleanup", "p")) == 1
    assert not reports(sup_log, ActorStopped)


def test_exception_in_asked_handler_goes_to_caller_and_actor_survives(sup):
    sup_ref, sup_log = sup
    ref, _, _ = start_probe(supervisor=sup_ref)
    with pytest.raises(RuntimeError, match="asked"):
        ref.ask(Crash(text="asked"), timeout=T)
    assert ref.is_alive()
    stats = ref.ask(RequestStats(), timeout=T)
    assert stats["last_error"] == "RuntimeError: asked"
    assert not reports(sup_log, ActorFailed)
    ref.stop(timeout=T)


def test_setup_failure_is_reported_as_on_start_and_cleans_up(sup):
    sup_ref, sup_log = sup
    ref, log, _ = start_probe(supervisor=sup_ref, control=ProbeControl(fail_setup_times=1))
    wait_for(lambda: reports(sup_log, ActorFailed), T, message="ActorFailed")
    wait_for(lambda: not ref.is_alive(), T, message="actor stopped")
    failure = reports(sup_log, ActorFailed)[0]
    assert failure.phase == "on_start" and "cannot start" in failure.error
    assert len(log.events("cleanup", "p")) == 1
    assert not reports(sup_log, ActorStarted)
    with pytest.raises(pykka.ActorDeadError):
        ref.tell(Echo())


def test_cleanup_failure_on_stop_is_reported_as_on_stop(sup):
    sup_ref, sup_log = sup
    ref, log, _ = start_probe(supervisor=sup_ref, control=ProbeControl(fail_cleanup=True))
    ref.stop(timeout=T)
    wait_for(lambda: reports(sup_log, ActorFailed), T, message="ActorFailed")
    failure = reports(sup_log, ActorFailed)[0]
    assert failure.phase == "on_stop" and "cleanup failed" in failure.error
    assert not reports(sup_log, ActorStopped)
    assert len(log.events("cleanup", "p")) == 1


def test_ping_is_answered_with_pong(sup):
    sup_ref, sup_log = sup
    ref, _, _ = start_probe(supervisor=sup_ref)
    ref.tell(Ping(token=41))
    wait_for(lambda: reports(sup_log, Pong), T, message="Pong")
    assert reports(sup_log, Pong) == [Pong(actor="p", generation=3, token=41)]
    ref.stop(timeout=T)


class Counter(SupervisedActor):
    """Handles one message type exactly and one through its base class."""

    @message
    class Base(Message):
        n: int

    @message
    class Derived(Base):
        pass

    @message
    class Other(Message):
        pass

    def setup(self) -> None:
        self.seen: list[str] = []

    @handles(Base)
    def on_base(self, msg: Base) -> None:
        self.seen.append(f"{type(msg).__name__}:{msg.n}")

    @handles(Echo)
    def on_echo(self, msg: Echo) -> list[str]:
        return list(self.seen)


def test_dispatch_by_type_subclass_via_mro_and_unknown_counted():
    ref = Counter.start("c")
    ref.tell(Counter.Base(n=1))
    ref.tell(Counter.Derived(n=2))
    for _ in range(3):
        ref.tell(Counter.Other())
    ref.tell("not a message")
    assert ref.ask(Echo(), timeout=T) == ["Base:1", "Derived:2"]
    stats = ref.ask(RequestStats(), timeout=T)
    assert stats["unknown"] == 4
    assert stats["handled"] == 4  # Base, Derived, Echo, RequestStats itself
    ref.stop(timeout=T)


def test_pykka_hooks_cannot_be_overridden():
    with pytest.raises(TypeError, match="on_start"):

        class Bad(SupervisedActor):
            def on_start(self) -> None:
                pass

    with pytest.raises(TypeError, match="on_receive"):

        class Bad2(SupervisedActor):
            def on_receive(self, message):
                return None


def test_handles_needs_a_type():
    with pytest.raises(TypeError):
        handles()


def test_peer_table_counts_drops_and_never_raises():
    live, _, _ = start_probe("live")
    dead, _, _ = start_probe("dead")
    dead.stop(timeout=T)
    table = PeerTable({"live": live, "dead": dead})
    assert table.tell("live", Echo()) is True
    assert table.tell("dead", Echo()) is False
    assert table.tell("missing", Echo()) is False
    assert table.tell("missing", Echo()) is False
    assert table.drops == {"dead": 1, "missing": 2}
    assert table.tell_many(["live", "dead"], Echo()) == 1
    assert "live" in table and len(table) == 2
    copy = table.copy()
    copy.set("dead", None)
    assert "dead" in table and "dead" not in copy
    live.stop(timeout=T)


def test_peers_changed_replaces_the_table():
    other, _, _ = start_probe("other")
    ref, log, _ = start_probe("p")
    ref.tell(PeersChanged(peers=(("other", other),)))
    stats = ref.ask(RequestStats(), timeout=T)
    assert stats["peers"] == {"other": other}
    ref.stop(timeout=T)
    other.stop(timeout=T)


def test_error_text_is_escaped_and_truncated():
    text = error_text(ValueError("a\r\nb\x1b[31m" + "\u2603" * 500))
    assert text.isascii() and "\n" not in text and "\x1b" not in text
    assert len(text) == 300 and text.endswith("...")
    assert error_text(KeyError("k")) == "KeyError: 'k'"
