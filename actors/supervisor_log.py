"""The supervisor log: JSON lines, one event per line, flushed per line, file mode 0600.

It is what a postmortem reads, so every line stands alone: ``ts`` (RFC 3339 UTC), ``mono_ns``,
``event``, ``actor``, ``generation``, ``state_before``, ``state_after``, ``reason``, ``traceback``,
``extra`` (a small JSON object). Events: state, degraded, gate, actor_spawned, actor_started, actor_stopped,
actor_failed (``extra.permanent``), actor_dead, failure_report, restart_scheduled, restart, restart_requested,
restart_refused (a permanent failure: no restart, ERROR at once), hang, stop_timeout, zombie, zombie_gone,
escalation, feed_up, feed_down, feed_gap, trading_client_up, trading_client_down (``extra.fatal``), data_synced,
transition_refused, shutdown.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kalshi.auth import redact_text

log = logging.getLogger(__name__)

FIELDS = (
    "ts",
    "mono_ns",
    "event",
    "actor",
    "generation",
    "state_before",
    "state_after",
    "reason",
    "traceback",
    "extra",
)
REASON_LIMIT = 500
TRACEBACK_LIMIT = 8000


def _clip(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 3] + "..."


def rfc3339(wall_ns: int) -> str:
    seconds, rest = divmod(wall_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest // 1000:06d}Z"


class SupervisorLog:
    """Append-only JSON-lines writer. Writing never raises: a failing disk is logged and counted."""

    def __init__(self, path: str | Path, wall_clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.path = Path(path)
        self._wall = wall_clock_ns
        self._lock = threading.Lock()  # the supervisor writes; main.py may write a final line
        self.write_errors = 0
        self.lines = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)  # also tighten a file created earlier with a looser mode
        self._fh = os.fdopen(fd, "a", encoding="utf-8")

    def write(
        self,
        event: str,
        *,
        mono_ns: int,
        actor: str | None = None,
        generation: int | None = None,
        state_before: str | None = None,
        state_after: str | None = None,
        reason: str | None = None,
        traceback: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        record = {
            "ts": rfc3339(self._wall()),
            "mono_ns": mono_ns,
            "event": event,
            "actor": actor,
            "generation": generation,
            "state_before": state_before,
            "state_after": state_after,
            # This file gets no logging filter: redact here (PEM blocks, signatures, key ids).
            "reason": _clip(redact_text(reason) if reason else reason, REASON_LIMIT),
            "traceback": _clip(redact_text(traceback) if traceback else traceback, TRACEBACK_LIMIT),
            "extra": dict(extra) if extra else {},
        }
        # ensure_ascii escapes control and non-ASCII characters: one event is always one line.
        line = json.dumps(record, ensure_ascii=True, default=str, separators=(",", ":")) + "\n"
        with self._lock:
            if self._fh.closed:
                self.write_errors += 1
                return
            try:
                self._fh.write(line)
                self._fh.flush()
                self.lines += 1
            except OSError as exc:
                self.write_errors += 1
                log.error("supervisor log %s: write failed: %s", self.path, exc)

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                try:
                    self._fh.close()
                except OSError as exc:
                    log.error("supervisor log %s: close failed: %s", self.path, exc)


@dataclass(frozen=True, slots=True)
class LogContents:
    events: tuple[dict[str, Any], ...]
    torn_tail: str | None  # the partial last line, when the file ends mid-record
    bad_lines: tuple[int, ...]  # 1-based numbers of complete lines that are not valid records


def read_events(path: str | Path) -> LogContents:
    """Read every event; a torn last line (crash mid-write) is reported, not raised."""
    data = Path(path).read_bytes()
    text = data.decode("utf-8", errors="replace")
    lines = text.split("\n")
    tail = lines.pop()  # text after the last newline: empty unless the last record is torn
    events: list[dict[str, Any]] = []
    bad: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad.append(number)
            continue
        if not isinstance(record, dict) or "event" not in record:
            bad.append(number)
            continue
        events.append(record)
    torn = None
    if tail:
        try:
            record = json.loads(tail)
            if isinstance(record, dict) and "event" in record:
                events.append(record)  # complete record, only the newline missing
            else:
                torn = tail
        except ValueError:
            torn = tail
    return LogContents(events=tuple(events), torn_tail=torn, bad_lines=tuple(bad))
