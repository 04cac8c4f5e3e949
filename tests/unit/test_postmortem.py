"""Postmortem on hand-written supervisor logs: a crash with a traceback, a restart, gaps, gates, escalation,
a torn last line; and the ``main.py postmortem`` subcommand on a data dir."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import main
from actors.postmortem import analyze, find_latest_log, format_report, postmortem
from actors.supervisor_log import SupervisorLog, read_events

S = 1_000_000_000


def ev(sec: float, event: str, **fields) -> str:
    record = {
        "ts": f"2026-01-01T00:{int(sec) // 60:02d}:{sec % 60:09.6f}Z",
        "mono_ns": int(sec * S),
        "event": event,
        "actor": None, "generation": None, "state_before": None, "state_after": None,
        "reason": None, "traceback": None, "extra": {},
    }
    record.update(fields)
    return json.dumps(record)


TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "actors/whale_tracker.py", line 88, in on_trades\n'
    "    raise RuntimeError('boom')\n"
    "RuntimeError: boom\n"
)

CRASH_RUN = [
    ev(0, "state", state_after="STARTUP", reason="process start"),
    ev(0, "state", state_before="STARTUP", state_after="INITIALIZING", reason="starting children"),
    ev(0.1, "actor_spawned", actor="whale_tracker", generation=1),
    ev(0.2, "actor_started", actor="whale_tracker", generation=1),
    ev(1, "state", state_before="INITIALIZING", state_after="ORDERBOOK_CONNECT", reason="requirements met"),
    ev(1.5, "feed_up", actor="orderbook_feed", generation=1, extra={"conn_id": 1}),
    ev(3, "state", state_before="ORDERBOOK_CONNECT", state_after="READY", reason="requirements met"),
    ev(3, "gate", state_after="READY", reason="requirements met", extra={"open": True}),
    ev(10, "feed_gap", actor="orderbook_feed", reason="gap", extra={"conn_id": 1, "sid": 4, "expected": 17, "got": 19}),
    ev(20, "actor_failed", actor="whale_tracker", generation=1, state_before="READY",
       reason="handler: RuntimeError: boom", traceback=TRACEBACK, extra={"phase": "handler"}),
    ev(20, "degraded", state_after="READY", reason="degraded", extra={"degraded": True}),
    ev(20, "gate", state_after="READY", reason="degraded", extra={"open": False}),
    ev(20, "restart_scheduled", actor="whale_tracker", generation=1, reason="handler: RuntimeError: boom",
       extra={"delay_ms": 512, "attempt": 1}),
    ev(20.5, "restart", actor="whale_tracker", generation=2, extra={"previous_generation": 1, "restarts": 1}),
    ev(20.6, "actor_started", actor="whale_tracker", generation=2),
    ev(20.6, "degraded", state_after="READY", reason="recovered from degraded", extra={"degraded": False}),
    ev(20.6, "gate", state_after="READY", reason="recovered from degraded", extra={"open": True}),
    ev(21, "decision", actor="whale_executor", extra={"action": "follow"}),
    ev(22, "decision", actor="whale_executor", extra={"action": "skipped_age"}),
    ev(23, "decision", actor="whale_executor", extra={"action": "follow"}),
    ev(60, "state", state_before="READY", state_after="ERROR", reason="restart intensity exceeded"),
    ev(60, "escalation", state_before="ERROR", state_after="SHUTDOWN", reason="more than 3 ERRORs in 600s"),
    ev(60, "state", state_before="ERROR", state_after="SHUTDOWN", reason="escalated"),
    ev(61, "shutdown", state_after="SHUTDOWN", reason="escalated: restart intensity exceeded", extra={"exit_code": 70}),
]


def write(tmp_path: Path, lines: list[str], tail: str = "") -> Path:
    path = tmp_path / "supervisor.jsonl"
    path.write_text("\n".join(lines) + "\n" + tail, encoding="utf-8")
    return path


def test_crash_and_restart_timeline(tmp_path):
    path = write(tmp_path, CRASH_RUN)
    text = postmortem(path)
    lines = text.splitlines()

    def index(fragment: str) -> int:
        return next(i for i, line in enumerate(lines) if fragment in line)

    assert "24 events in 1 run(s)" in lines[0]
    # the story, in order
    assert index("STATE      STARTUP -> INITIALIZING: starting children") < index("STATE      ORDERBOOK_CONNECT -> READY")
    assert index("GATE       open: requirements met") < index("FEED GAP   orderbook_feed gap sid=4 expected=17 got=19")
    crash = index("FAILURE    whale_tracker#1 in handler: handler: RuntimeError: boom")
    assert lines[crash].startswith("00:00:20.000")
    # the traceback follows the failure, indented
    assert lines[crash + 1].startswith("    | Traceback (most recent call last):")
    assert "    | RuntimeError: boom" in lines[crash + 1: crash + 6]
    assert crash < index("BACKOFF    whale_tracker#1 restarts in 512 ms (attempt 1)") < index(
        "RESTART    whale_tracker gen 1 -> 2 (restart #1)") < index("UP         whale_tracker#2")
    assert index("ESCALATION ERROR -> SHUTDOWN: more than 3 ERRORs in 600s") < index("SHUTDOWN   exit code 70")
    # bookkeeping is left out; first starts are not news
    assert "actor_spawned" not in text.lower() and "UP         whale_tracker#1" not in text
    # the summary
    assert "time in state:      READY 57.0s, ORDERBOOK_CONNECT 2.0s, INITIALIZING 1.0s, SHUTDOWN 1.0s" in text
    assert "restarts per actor: whale_tracker 1" in text
    assert "failures per actor: whale_tracker 1" in text
    assert "feed gaps:          orderbook_feed 1" in text
    assert "gate changes:       open 2, closed 1" in text
    assert "escalations:        1" in text
    assert "decisions:          follow 2, skipped_age 1" in text
    assert "ended:              exit code 70 (escalated: restart intensity exceeded), last state SHUTDOWN" in text
    assert "warning" not in text


def test_permanent_failures_and_fatal_trading_client_down_are_named(tmp_path):
    """D3/F22: the timeline says when a failure was permanent (no restart) and a trading client fatally down."""
    path = write(tmp_path, [
        ev(0, "state", state_after="STARTUP", reason="process start"),
        ev(1, "actor_failed", actor="whale_executor", generation=1, reason="on_start: JournalCorrupt: journal corrupt "
           "at decisions seq 2: checksum mismatch", extra={"phase": "on_start", "permanent": True}),
        ev(1, "restart_refused", actor="whale_executor", generation=1, reason="on_start: JournalCorrupt",
           extra={"permanent": True}),
        ev(5, "trading_client_down", actor="whale_executor", generation=2, reason="journal: disk full",
           extra={"fatal": True}),
    ])
    text = postmortem(path)
    assert "FAILURE    whale_executor#1 in on_start: on_start: JournalCorrupt: journal corrupt at decisions seq 2: " \
           "checksum mismatch (permanent: a restart cannot fix it)" in text
    assert "NO RESTART whale_executor#1: on_start: JournalCorrupt" in text
    assert "TRADING ↓  whale_executor#2: journal: disk full (fatal)" in text


def test_torn_last_line_and_bad_lines_are_reported_not_fatal(tmp_path):
    lines = CRASH_RUN[:10] + ["{not json", '["an array"]'] + CRASH_RUN[10:14]
    path = write(tmp_path, lines, tail='{"ts":"2026-01-01T00:00:21Z","event":"act')
    text = postmortem(path)
    assert "FAILURE    whale_tracker#1" in text and "RESTART    whale_tracker gen 1 -> 2" in text
    assert "warning: 2 unreadable line(s) skipped: 11, 12" in text
    assert "warning: the last line is torn" in text and '"event":"act' in text
    assert "no shutdown record" in text


def test_runs_are_split_at_each_process_start(tmp_path):
    second = [
        ev(100, "state", state_after="STARTUP", reason="process start"),
        ev(100, "state", state_before="STARTUP", state_after="INITIALIZING", reason="starting children"),
        ev(105, "state", state_before="INITIALIZING", state_after="SHUTDOWN", reason="signal SIGINT"),
        ev(105, "shutdown", state_after="SHUTDOWN", reason="signal SIGINT", extra={"exit_code": 0}),
    ]
    report = analyze(read_events(write(tmp_path, CRASH_RUN[:5] + second)))
    assert [r.index for r in report.runs] == [1, 2]
    first, last = report.runs
    assert first.exit_code is None and first.final_state == "ORDERBOOK_CONNECT"
    assert last.exit_code == 0 and last.time_in_state_ns["INITIALIZING"] == 5 * S
    text = format_report(report, "log")
    assert "=== Run 2" in text and "ended:              exit code 0 (signal SIGINT)" in text


def test_hostile_log_text_is_escaped(tmp_path):
    lines = [
        ev(0, "state", state_after="STARTUP", reason="process start"),
        ev(1, "actor_failed", actor="x\x1b[2J", generation=1, reason="boom\x07\nsecond line" + "y" * 1000,
           traceback="Traceback\n\x1b[31mred\n"),
    ]
    text = postmortem(write(tmp_path, lines))
    assert "\x1b" not in text and "\x07" not in text
    assert max(len(line) for line in text.splitlines()) < 400


def test_written_by_the_real_supervisor_log(tmp_path):
    log = SupervisorLog(tmp_path / "supervisor.jsonl", wall_clock_ns=lambda: 1_767_225_600 * S)
    log.write("state", mono_ns=0, state_after="STARTUP", reason="process start")
    log.write("actor_failed", mono_ns=S, actor="broadcaster", generation=1, reason="on_start: OSError: port in use",
              traceback="Traceback...\nOSError: port in use", extra={"phase": "on_start"})
    log.close()
    text = postmortem(tmp_path / "supervisor.jsonl")
    assert "00:00:00.000  FAILURE    broadcaster#1 in on_start: on_start: OSError: port in use" in text
    assert "    | OSError: port in use" in text


def test_find_latest_log(tmp_path):
    assert find_latest_log(tmp_path / "missing") is None
    old = tmp_path / "supervisor.jsonl.1"
    new = tmp_path / "supervisor.jsonl"
    old.write_text("")
    new.write_text("")
    now = time.time()
    os.utime(old, (now - 100, now - 100))
    os.utime(new, (now, now))
    assert find_latest_log(tmp_path) == new
    os.utime(old, (now + 100, now + 100))
    assert find_latest_log(tmp_path) == old


def test_main_postmortem_subcommand(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    write(data, CRASH_RUN)
    assert main.main(["postmortem", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert f"Postmortem of {data / 'supervisor.jsonl'}" in out and "FAILURE    whale_tracker#1" in out

    assert main.main(["postmortem", str(data / "supervisor.jsonl")]) == 0
    assert "RESTART    whale_tracker gen 1 -> 2" in capsys.readouterr().out

    assert main.main(["postmortem", "--data-dir", str(tmp_path / "empty")]) == 1
    assert "no supervisor log" in capsys.readouterr().err
    assert main.main(["postmortem", str(tmp_path / "nope.jsonl")]) == 1
    assert "cannot read" in capsys.readouterr().err
