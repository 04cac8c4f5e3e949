"""``python main.py postmortem [LOG]``: a readable story of a run from the supervisor log alone.

The supervisor log (``actors.supervisor_log``) is JSON lines, appended across runs. This module turns
it into a timeline (state transitions, failures with their tracebacks, restarts and backoffs, hangs,
escalations, gate changes, feed gaps/ups/downs, shutdown) and a summary per run (time in each state,
restarts and failures per actor, gaps per feed, gate changes, decisions by action when logged, how
the run ended). A torn last line (a crash mid-write) or an unreadable line is reported, never fatal.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from .supervisor_log import LogContents, read_events

__all__ = ["RunSummary", "Report", "analyze", "format_report", "find_latest_log", "postmortem"]

# Events that are bookkeeping, not story: left out of the timeline (still counted where relevant).
_QUIET = frozenset({"actor_spawned", "zombie_gone", "data_synced", "trading_client_up"})


@dataclass
class RunSummary:
    index: int
    first_ts: str | None = None
    last_ts: str | None = None
    events: int = 0
    time_in_state_ns: Counter[str] = field(default_factory=Counter)
    transitions: int = 0
    restarts: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    hangs: Counter[str] = field(default_factory=Counter)
    feed_gaps: Counter[str] = field(default_factory=Counter)
    feed_downs: Counter[str] = field(default_factory=Counter)
    gate_changes: Counter[str] = field(default_factory=Counter)  # "open" / "closed"
    escalations: list[str] = field(default_factory=list)
    decisions: Counter[str] = field(default_factory=Counter)
    final_state: str | None = None
    exit_code: int | None = None
    exit_reason: str | None = None
    timeline: list[str] = field(default_factory=list)


@dataclass
class Report:
    runs: list[RunSummary]
    torn_tail: str | None
    bad_lines: tuple[int, ...]
    total_events: int


def _s(value: Any, limit: int = 300) -> str:
    """Printable, one-line, bounded text (the log is data: never let it drive the terminal)."""
    text = "" if value is None else str(value)
    text = "".join(c if c.isprintable() else "?" for c in text.replace("\n", " "))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _time_of(ts: Any) -> str:
    """``HH:MM:SS.mmm`` from an RFC 3339 stamp, or the raw text when it is not one."""
    if isinstance(ts, str) and "T" in ts:
        clock = ts.split("T", 1)[1].rstrip("Z")
        return clock[:12]
    return _s(ts, 30) or "?"


def _mono(event: Mapping[str, Any]) -> int | None:
    """The event's monotonic time, or its wall time when mono_ns is absent (a hand-written log)."""
    value = event.get("mono_ns")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    ts = event.get("ts")
    if isinstance(ts, str):
        try:
            return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1e9)
        except ValueError:
            return None
    return None


def _who(event: Mapping[str, Any]) -> str:
    actor = _s(event.get("actor"), 60)
    gen = event.get("generation")
    return f"{actor}#{gen}" if actor and isinstance(gen, int) else actor or "?"


def _duration(ns: int) -> str:
    seconds = ns / 1e9
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _is_run_start(event: Mapping[str, Any]) -> bool:
    return event.get("event") == "state" and event.get("state_before") is None and event.get("state_after") == "STARTUP"


def _describe(event: Mapping[str, Any]) -> tuple[str, list[str]] | None:
    """(headline, extra lines) for one event, or None to leave it out of the timeline."""
    kind = _s(event.get("event"), 40)
    extra = event.get("extra") if isinstance(event.get("extra"), Mapping) else {}
    reason = _s(event.get("reason"))
    detail: list[str] = []
    if kind in _QUIET:
        return None
    if kind == "state":
        before = event.get("state_before")
        head = f"STATE      {_s(before) + ' -> ' if before else ''}{_s(event.get('state_after'))}"
        if extra.get("degraded"):
            head += " (degraded)"
        return (f"{head}: {reason}" if reason else head), detail
    if kind == "actor_started":
        gen = event.get("generation")
        return (f"UP         {_who(event)}", detail) if isinstance(gen, int) and gen > 1 else None
    if kind in ("actor_failed", "failure_report"):
        phase = extra.get("phase")
        label = "FAILURE   " if kind == "actor_failed" else "LATE FAIL "
        head = f"{label} {_who(event)}" + (f" in {_s(phase, 20)}" if phase else "") + f": {reason}"
        if extra.get("ignored"):
            head += " (older generation; already handled)"
        if extra.get("permanent"):
            head += " (permanent: a restart cannot fix it)"
        tb = event.get("traceback")
        if isinstance(tb, str) and tb.strip():
            detail = ["    | " + "".join(c if c.isprintable() else "?" for c in line)[:300]
                      for line in tb.rstrip().splitlines()[-40:]]
        return head, detail
    if kind == "actor_dead":
        return f"DEAD       {_who(event)}: {reason}", detail
    if kind == "actor_stopped":
        by = extra.get("by")
        return f"STOPPED    {_who(event)}" + (f" (by {_s(by, 20)})" if by else ""), detail
    if kind == "restart_scheduled":
        return (f"BACKOFF    {_who(event)} restarts in {_s(extra.get('delay_ms'))} ms "
                f"(attempt {_s(extra.get('attempt'))}): {reason}"), detail
    if kind == "restart":
        return (f"RESTART    {_s(event.get('actor'))} gen {_s(extra.get('previous_generation'))} -> "
                f"{_s(event.get('generation'))} (restart #{_s(extra.get('restarts'))})"), detail
    if kind == "restart_requested":
        return f"RESTART?   {_s(event.get('actor'))} requested: {reason}", detail
    if kind == "hang":
        return f"HANG       {_who(event)}: {reason} (policy {_s(extra.get('policy'), 20)})", detail
    if kind == "escalation":
        return f"ESCALATION {_s(event.get('state_before'))} -> {_s(event.get('state_after'))}: {reason}", detail
    if kind == "gate":
        return f"GATE       {'open' if extra.get('open') else 'closed'}: {reason}", detail
    if kind == "degraded":
        return f"DEGRADED   {'on' if extra.get('degraded') else 'off'} in {_s(event.get('state_after'))}", detail
    if kind == "feed_up":
        return f"FEED UP    {_who(event)} (conn {_s(extra.get('conn_id'))})", detail
    if kind == "feed_down":
        return f"FEED DOWN  {_who(event)}: {reason}", detail
    if kind == "feed_gap":
        return (f"FEED GAP   {_s(event.get('actor'))} {reason} sid={_s(extra.get('sid'))} "
                f"expected={_s(extra.get('expected'))} got={_s(extra.get('got'))}"), detail
    if kind == "trading_client_down":
        return f"TRADING ↓  {_who(event)}: {reason}" + (" (fatal)" if extra.get("fatal") else ""), detail
    if kind == "restart_refused":
        return f"NO RESTART {_who(event)}: {reason}", detail
    if kind == "transition_refused":
        return (f"REFUSED    {_s(event.get('state_before'))} -> {_s(event.get('state_after'))}: {reason}"), detail
    if kind in ("stop_timeout", "zombie"):
        return f"{kind.upper():<10} {_who(event)}: {reason}", detail
    if kind == "shutdown":
        return f"SHUTDOWN   exit code {_s(extra.get('exit_code'))}: {reason}", detail
    if kind == "decision":
        return None  # counted in the summary; one line per decision would drown the story
    return f"{kind.upper()[:10]:<10} {_who(event)}" + (f": {reason}" if reason else ""), detail


def analyze(contents: LogContents) -> Report:
    runs: list[RunSummary] = []
    current: RunSummary | None = None
    state: str | None = None
    state_since: int | None = None
    last_mono: int | None = None

    def close_state(run: RunSummary, until: int | None) -> None:
        if state is not None and state_since is not None and until is not None and until >= state_since:
            run.time_in_state_ns[state] += until - state_since

    for event in contents.events:
        if current is None or _is_run_start(event):
            if current is not None:
                close_state(current, last_mono)
            current = RunSummary(index=len(runs) + 1)
            runs.append(current)
            state, state_since, last_mono = None, None, None
        run = current
        mono = _mono(event)
        run.events += 1
        run.first_ts = run.first_ts or _s(event.get("ts"), 40)
        run.last_ts = _s(event.get("ts"), 40)
        kind = event.get("event")
        extra = event.get("extra") if isinstance(event.get("extra"), Mapping) else {}
        actor = _s(event.get("actor"), 60) or "?"
        if kind == "state":
            close_state(run, mono)
            state, state_since = _s(event.get("state_after"), 40), mono
            run.final_state = state
            if event.get("state_before") is not None:
                run.transitions += 1
        elif kind == "restart":
            run.restarts[actor] += 1
        elif kind in ("actor_failed", "actor_dead"):
            run.failures[actor] += 1
        elif kind == "hang":
            run.hangs[actor] += 1
        elif kind == "feed_gap":
            run.feed_gaps[actor] += 1
        elif kind == "feed_down":
            run.feed_downs[actor] += 1
        elif kind == "gate":
            run.gate_changes["open" if extra.get("open") else "closed"] += 1
        elif kind == "escalation":
            run.escalations.append(_s(event.get("reason")))
        elif kind == "decision":
            run.decisions[_s(extra.get("action") or event.get("reason"), 40) or "?"] += 1
        elif kind == "shutdown":
            code = extra.get("exit_code")
            run.exit_code = code if isinstance(code, int) and not isinstance(code, bool) else None
            run.exit_reason = _s(event.get("reason"))
        if mono is not None:
            last_mono = mono
        described = _describe(event)
        if described is not None:
            head, detail = described
            run.timeline.append(f"{_time_of(event.get('ts'))}  {head}")
            run.timeline.extend(detail)
    if current is not None:
        close_state(current, last_mono)
    return Report(runs=runs, torn_tail=contents.torn_tail, bad_lines=contents.bad_lines,
                  total_events=len(contents.events))


def _counter(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"


def format_report(report: Report, source: str) -> str:
    out = [f"Postmortem of {source}: {report.total_events} events in {len(report.runs)} run(s)"]
    for run in report.runs:
        out.append("")
        out.append(f"=== Run {run.index}: {run.first_ts or '?'} .. {run.last_ts or '?'} ({run.events} events)")
        out.extend(run.timeline or ["(no events worth showing)"])
        out.append("")
        out.append(f"--- Summary of run {run.index}")
        if run.time_in_state_ns:
            order = sorted(run.time_in_state_ns.items(), key=lambda kv: -kv[1])
            out.append("time in state:      " + ", ".join(f"{k} {_duration(v)}" for k, v in order))
        out.append(f"transitions:        {run.transitions}")
        out.append(f"restarts per actor: {_counter(run.restarts)}")
        out.append(f"failures per actor: {_counter(run.failures)}")
        if run.hangs:
            out.append(f"hangs:              {_counter(run.hangs)}")
        out.append(f"feed gaps:          {_counter(run.feed_gaps)}")
        if run.feed_downs:
            out.append(f"feeds down:         {_counter(run.feed_downs)}")
        out.append(f"gate changes:       {_counter(run.gate_changes)}")
        out.append(f"escalations:        {len(run.escalations)}" +
                   "".join(f"\n                    - {e}" for e in run.escalations))
        if run.decisions:
            out.append(f"decisions:          {_counter(run.decisions)}")
        if run.exit_code is not None or run.exit_reason:
            out.append(f"ended:              exit code {run.exit_code} ({run.exit_reason or 'no reason'}), "
                       f"last state {run.final_state}")
        else:
            out.append(f"ended:              no shutdown record (the process died or is still running); "
                       f"last state {run.final_state}")
    if report.bad_lines:
        shown = ", ".join(str(n) for n in report.bad_lines[:20])
        out.append("")
        out.append(f"warning: {len(report.bad_lines)} unreadable line(s) skipped: {shown}")
    if report.torn_tail is not None:
        out.append("")
        out.append(f"warning: the last line is torn (a crash mid-write?): {len(report.torn_tail)} bytes: "
                   f"{_s(report.torn_tail, 120)!r}")
    return "\n".join(out)


def find_latest_log(data_dir: str | Path, log_file: str = "supervisor.jsonl") -> Path | None:
    """The most recently written supervisor log in ``data_dir`` (``log_file`` or a rotated copy of it)."""
    folder = Path(data_dir)
    stem = Path(log_file).stem
    candidates = [p for p in folder.glob(f"{stem}*") if p.is_file()] if folder.is_dir() else []
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.stat().st_mtime_ns, p.name == log_file))


def postmortem(path: str | Path) -> str:
    """The report text for the log at ``path`` (OSError if it cannot be read)."""
    return format_report(analyze(read_events(path)), str(path))
