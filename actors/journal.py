"""The execution journal: an append-only SQLite record of whales, decisions, order intents,
order outcomes and fills, written before any side effect (reliability rules 1, 2 and 12).

- WAL mode with ``synchronous=FULL``: a commit is on disk when the call returns. The PRAGMAs are
  read back at open; a journal that cannot guarantee them refuses to open.
- Every record carries a global ``seq`` (1, 2, 3 … across all tables) and a checksum of
  (seq, table, body). Replay walks the records in seq order; a gap, a checksum mismatch or an
  unreadable body raises ``JournalCorrupt`` naming the table and seq — never skipped silently.
  A torn tail (a transaction cut by a crash) is SQLite's job: the WAL drops it whole. We report it (D2):
  before SQLite opens the file, the WAL's frames after its last commit frame are measured
  (``torn_tail_bytes``, logged as a warning); the records before it replay intact.
- Any write failure raises ``JournalError`` and the journal stays failed: the caller stops trading.
- ``batch()`` groups records into one transaction, so one evaluation costs one fsync instead of one per
  record. ``record_intent`` is durable when it returns, inside a batch too: it commits the batch so far.

Single writer: one actor owns the journal. An exclusive flock on ``journal.sqlite.lock`` refuses a
second writer (another process, or a hung old executor); the kernel drops it if the process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator, Mapping

log = logging.getLogger(__name__)

from messages.whale import FINAL_ACTIONS, FOLLOW, Decision, OrderPlan, Whale

__all__ = [
    "JOURNAL_FILE",
    "JournalError",
    "JournalCorrupt",
    "PendingIntent",
    "EvaluatedWhale",
    "RecoveryView",
    "Journal",
]

JOURNAL_FILE = "journal.sqlite"  # .gitignore covers *.sqlite and its -wal/-shm files
OUTCOME_STATUSES = ("accepted", "rejected", "unknown", "resolved")
# An intent is closed by a definitive answer; "unknown" keeps it open until it is resolved.
CLOSING_STATUSES = frozenset({"accepted", "rejected", "resolved"})

TABLES = ("whales_seen", "decisions", "order_intents", "order_outcomes", "fills")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS whales_seen (
    seq INTEGER PRIMARY KEY, whale_id TEXT NOT NULL, body TEXT NOT NULL, sum TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY, whale_id TEXT NOT NULL, action TEXT NOT NULL, body TEXT NOT NULL,
    sum TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS order_intents (
    seq INTEGER PRIMARY KEY, client_order_id TEXT NOT NULL UNIQUE, whale_id TEXT NOT NULL,
    body TEXT NOT NULL, sum TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS order_outcomes (
    seq INTEGER PRIMARY KEY, client_order_id TEXT NOT NULL, status TEXT NOT NULL,
    order_id TEXT, body TEXT NOT NULL, sum TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fills (
    seq INTEGER PRIMARY KEY, fill_id TEXT NOT NULL UNIQUE, body TEXT NOT NULL, sum TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS decisions_action ON decisions(action);
"""


class JournalError(Exception):
    """The journal could not be opened or written: stop trading."""


class JournalCorrupt(JournalError):
    """A record that fails its checks, or a gap in the sequence; ``table``/``seq`` say where."""

    # A restart replays the same bytes: the supervisor goes to ERROR instead of restarting (D3).
    # Only corruption: an unopenable or full disk (plain JournalError) may heal by itself.
    permanent = True

    def __init__(self, table: str, seq: int | None, problem: str) -> None:
        self.table = table
        self.seq = seq
        self.problem = problem
        super().__init__(f"journal corrupt at {table} seq {seq}: {problem}")


def _canonical(body: Mapping[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _checksum(seq: int, table: str, body: str) -> str:
    return hashlib.sha256(f"{seq}|{table}|{body}".encode()).hexdigest()[:32]


def _plan_body(plan: OrderPlan) -> dict:
    return {
        "client_order_id": plan.client_order_id,
        "whale_id": plan.whale_id,
        "market": plan.market,
        "outcome": plan.outcome,
        "side": plan.side,
        "price": plan.price,
        "count": plan.count,
        "time_in_force": plan.time_in_force,
    }


@dataclass(frozen=True, slots=True)
class PendingIntent:
    """An intent without a definitive outcome: resolve it at the exchange by client_order_id."""

    seq: int
    client_order_id: str
    whale_id: str
    market: str
    plan: OrderPlan
    last_status: str | None  # None (never answered) or "unknown"
    ts_ms: int


@dataclass(frozen=True, slots=True)
class EvaluatedWhale:
    """A whale with a final decision (or an intent), with the trade time its memory is aged by."""

    whale_id: str
    trade_ids: tuple[str, ...]
    sweep: tuple[str, str, int] | None  # (market, outcome, whale ts_ms); None when only an intent names it
    ts_ms: int  # the whale's trade time (else the time of the decision or intent that names it)


@dataclass(frozen=True, slots=True)
class RecoveryView:
    """What a restart needs, rebuilt from the journal alone."""

    last_seq: int
    evaluated_whale_ids: frozenset[str]  # whales with a final decision: never evaluated again
    evaluated_trade_ids: frozenset[str]  # their trades (a backfill may regroup prints differently)
    evaluated_sweeps: frozenset[tuple[str, str, int]]  # their (market, side, ts_ms)
    followed_whale_ids: frozenset[str]
    pending_intents: tuple[PendingIntent, ...]
    known_orders: tuple[tuple[str, str], ...]  # (client_order_id, order_id), sorted
    fill_ids: frozenset[str]
    intent_times_ms: tuple[int, ...]  # when each intent was written (rebuilds the token bucket)
    state_hash: str
    evaluated: tuple[EvaluatedWhale, ...] = ()  # the evaluated sets above, per whale and with its time
    torn_tail_bytes: int = 0  # an unfinished transaction a crash left in the WAL, ignored (not in state_hash)
    # The bodies of the paper fills (source "paper"), in journal order: paper execution rebuilds its
    # in-process account from them at start. Covered by state_hash through ``fill_ids``.
    paper_fills: tuple[Mapping[str, Any], ...] = ()

    @property
    def unknown_outcomes(self) -> int:
        """Orders that may exist at the exchange without our knowing: every pending intent, since
        one never answered may have been sent just before a crash. No new order until resolved."""
        return len(self.pending_intents)


_WAL_MAGIC = (0x377F0682, 0x377F0683)
_WAL_HEADER, _WAL_FRAME_HEADER = 32, 24


def wal_uncommitted_tail(wal: Path) -> int:
    """Bytes at the end of a SQLite WAL file after its last commit frame (a transaction a crash cut short,
    including a partly written frame), which SQLite ignores on recovery. 0 when there is no WAL or nothing
    after the last commit. Frames are followed while their salts match the header's (older frames left from
    before a WAL reset carry other salts and are not counted)."""
    try:
        data = wal.read_bytes()
    except OSError:
        return 0
    if len(data) < _WAL_HEADER or int.from_bytes(data[0:4], "big") not in _WAL_MAGIC:
        return 0
    page_size = int.from_bytes(data[8:12], "big")
    if page_size == 1:  # the format stores 65536 as 1
        page_size = 65536
    salts = data[16:24]
    frame = _WAL_FRAME_HEADER + page_size
    pos = committed_end = _WAL_HEADER
    while pos + _WAL_FRAME_HEADER <= len(data) and data[pos + 8:pos + 16] == salts:
        if pos + frame > len(data):
            break  # a frame cut mid-write
        if int.from_bytes(data[pos + 4:pos + 8], "big"):  # "database size after commit": a commit frame
            committed_end = pos + frame
        pos += frame
    if pos + _WAL_FRAME_HEADER > len(data) or data[pos + 8:pos + 16] == salts:
        end = len(data)  # our frames (or a torn piece of one) run to the end of the file
    else:
        end = pos  # what follows belongs to an older WAL generation
    return max(0, end - committed_end)


class Journal:
    """Open (creating if needed) ``<data_dir>/journal.sqlite`` with mode 0600."""

    def __init__(self, data_dir: str | os.PathLike, filename: str = JOURNAL_FILE) -> None:
        self.path = Path(data_dir) / filename
        self._lock = threading.RLock()  # reentrant: a batch holds it while its records are appended
        self._failed: str | None = None
        self._in_batch = False
        try:
            # Create the file ourselves so it is 0600 from its first byte (SQLite copies the mode
            # of the database file to its -wal and -shm files).
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock_fd = self._take_writer_lock()
            # Read before SQLite's own recovery, which drops an unfinished transaction without a word.
            self.torn_tail_bytes = wal_uncommitted_tail(Path(str(self.path) + "-wal"))
            if self.torn_tail_bytes:
                log.warning("journal %s: %d bytes of a transaction a crash left unfinished are ignored; every "
                            "committed record replays", self.path.name, self.torn_tail_bytes)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            os.chmod(self.path, 0o600)
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5)
        except (OSError, sqlite3.Error) as exc:
            self._release_writer_lock()
            raise JournalError(f"cannot open journal {self.path}: {exc}") from None
        try:
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._conn.execute("PRAGMA synchronous=FULL")
            sync = self._conn.execute("PRAGMA synchronous").fetchone()[0]
            if str(mode).lower() != "wal" or sync != 2:
                raise JournalError(f"journal PRAGMAs not in force: journal_mode={mode} synchronous={sync}")
            self._conn.executescript(_SCHEMA)
            self._seq = self._max_seq()  # the last committed record
            self._next = self._seq  # the last record written, committed or in the open transaction
            for suffix in ("-wal", "-shm"):
                side = Path(str(self.path) + suffix)
                if side.exists():
                    os.chmod(side, 0o600)
        except JournalError:
            self._conn.close()
            self._release_writer_lock()
            raise
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            self._release_writer_lock()
            if isinstance(exc, sqlite3.OperationalError):  # locked, I/O error, ...: may pass; a restart may help
                raise JournalError(f"cannot initialise journal {self.path}: {exc}") from None
            # "file is not a database", "malformed": the file itself is bad and stays bad (permanent).
            raise JournalCorrupt("database", None, f"{self.path.name}: {exc}") from None
        except (OSError, sqlite3.Error) as exc:
            self._conn.close()
            self._release_writer_lock()
            raise JournalError(f"cannot initialise journal {self.path}: {exc}") from None

    def _take_writer_lock(self) -> int:
        """One writer per journal: an exclusive flock the kernel drops if the process dies."""
        fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise JournalError(f"journal {self.path} is already open by another writer") from None
        return fd

    def _release_writer_lock(self) -> None:
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            self._lock_fd = None
            os.close(fd)  # closing the descriptor releases the flock

    # -- plumbing --

    def pragmas(self) -> tuple[str, int]:
        """(journal_mode, synchronous) as SQLite reports them now."""
        with self._lock:
            mode = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
            sync = self._conn.execute("PRAGMA synchronous").fetchone()[0]
        return str(mode), int(sync)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            self._release_writer_lock()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def failed(self) -> str | None:
        return self._failed

    def _max_seq(self) -> int:
        union = " UNION ALL ".join(f"SELECT MAX(seq) FROM {t}" for t in TABLES)
        values = [row[0] for row in self._conn.execute(union) if row[0] is not None]
        return max(values, default=0)

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise JournalError(f"journal read failed: {exc}") from None

    def _append(self, table: str, columns: Mapping[str, Any], body: Mapping[str, Any]) -> int:
        """Insert one record; outside a batch, commit it and return its seq only once that is durable.
        Inside a batch the record is durable when the batch commits."""
        with self._lock:
            if self._failed:
                raise JournalError(f"journal failed earlier: {self._failed}")
            seq = self._next + 1
            text = _canonical(body)
            names = ["seq", *columns, "body", "sum"]
            values = [seq, *columns.values(), text, _checksum(seq, table, text)]
            sql = f"INSERT INTO {table} ({','.join(names)}) VALUES ({','.join('?' * len(names))})"
            try:
                if not self._conn.in_transaction:
                    self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.execute(sql, values)
                except sqlite3.IntegrityError:
                    if not self._in_batch:
                        self._rollback()
                    # In a batch SQLite undid this statement alone: the batch's earlier records stay.
                    raise
                except BaseException:
                    self._rollback()
                    raise
                self._next = seq
                if not self._in_batch:
                    self._commit(table)
            except sqlite3.IntegrityError as exc:
                if f"{table}.seq" in str(exc):
                    # Our seq is taken: someone else wrote this journal (the flock should stop that).
                    self._rollback()
                    self._failed = f"{table}: seq {seq} already used by another writer"
                    raise JournalError(f"journal write failed ({table}): {self._failed}") from None
                raise  # a uniqueness question (fill_id, client_order_id), answered by the caller
            except (sqlite3.Error, OSError) as exc:
                self._rollback()
                self._failed = f"{table}: {exc}"
                raise JournalError(f"journal write failed ({table}): {exc}") from None
            return seq

    def _commit(self, what: str) -> None:
        """Commit the open transaction (if any); the records in it are durable when this returns."""
        if not self._conn.in_transaction:
            return
        try:
            self._conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            self._rollback()
            self._failed = f"{what}: {exc}"
            raise JournalError(f"journal write failed ({what}): {exc}") from None
        self._seq = self._next

    def _rollback(self) -> None:
        """Undo the open transaction: its records (and their seqs) are gone."""
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite may already have rolled back (e.g. a failed COMMIT)
        self._next = self._seq

    @contextlib.contextmanager
    def batch(self) -> Iterator["Journal"]:
        """Records written inside are ONE transaction, committed (one fsync) when the block ends.

        An exception from the block rolls back what is not yet committed and propagates. Nested
        batches join the outer one. ``record_intent`` still returns only once its intent is durable:
        it commits the batch so far, and the rest of the block continues in a new transaction. The
        journal's lock is held for the whole block (one writer at a time).
        """
        with self._lock:
            if self._in_batch:
                yield self
                return
            if self._failed:
                raise JournalError(f"journal failed earlier: {self._failed}")
            self._in_batch = True
            try:
                yield self
            except BaseException:
                self._in_batch = False
                self._rollback()
                raise
            self._in_batch = False
            self._commit("batch")

    # -- records --

    def record_whale_seen(self, whale: Whale, now_ms: int, event: str = "seen", trade_id: str = "") -> int:
        """A whale signal (``event`` "seen"), or a repeated sighting of one of its trades
        (``event`` "duplicate", with that ``trade_id``; F04)."""
        if event not in ("seen", "duplicate"):
            raise ValueError("whale event must be 'seen' or 'duplicate'")
        body = {
            "event": event,
            "trade_id": trade_id,
            "whale_id": whale.whale_id,
            "market": whale.market,
            "side": whale.side,
            "count": whale.count,
            "price_volume": whale.price_volume,
            "whale_size": whale.whale_size,
            "trade_ids": list(whale.trade_ids),
            "whale_ts_ms": whale.ts_ms,
            "ts_ms": now_ms,
        }
        return self._append("whales_seen", {"whale_id": whale.whale_id}, body)

    def record_decision(self, decision: Decision) -> int:
        body = {
            "action": decision.action,
            "reason": decision.reason,
            "whale_id": decision.whale_id,
            "market": decision.market,
            "final": decision.final,
            "outcome": decision.outcome,
            "side": decision.side,
            "price": decision.price,
            "count": decision.count,
            "client_order_id": decision.client_order_id,
            "trade_ids": list(decision.trade_ids),
            "whale_ts_ms": decision.whale_ts_ms,
            "ts_ms": decision.decided_ms,
        }
        return self._append("decisions", {"whale_id": decision.whale_id, "action": decision.action}, body)

    def record_intent(self, plan: OrderPlan, now_ms: int) -> int:
        """Write the order we are about to send; returns only after the commit is on disk.

        Writing the same intent again (a retry) is a no-op returning the first seq; a different
        intent under an existing client_order_id raises JournalError (it would be a second order).
        """
        body = {**_plan_body(plan), "ts_ms": now_ms}
        with self._lock:
            try:
                seq = self._append(
                    "order_intents", {"client_order_id": plan.client_order_id, "whale_id": plan.whale_id}, body
                )
            except sqlite3.IntegrityError:
                [row] = self._query(
                    "SELECT seq, body FROM order_intents WHERE client_order_id = ?", (plan.client_order_id,)
                )
                earlier = json.loads(row[1])
                earlier.pop("ts_ms", None)
                if earlier != _plan_body(plan):
                    raise JournalError(
                        f"client_order_id {plan.client_order_id} already journaled for a different intent"
                    ) from None
                seq = int(row[0])
            # Inside a batch: commit it now — the order may be sent as soon as this returns.
            self._commit("order_intents")
            return seq

    def record_outcome(
        self,
        client_order_id: str,
        status: str,
        now_ms: int,
        order_id: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> int:
        """accepted (order_id) / rejected / unknown / resolved (order_id, or None: not created)."""
        if status not in OUTCOME_STATUSES:
            raise ValueError(f"outcome status must be one of {OUTCOME_STATUSES}")
        if not self._query("SELECT 1 FROM order_intents WHERE client_order_id = ?", (client_order_id,)):
            raise ValueError(f"no journaled intent for client_order_id {client_order_id!r}")
        body = {
            "client_order_id": client_order_id,
            "status": status,
            "order_id": order_id,
            "details": dict(details or {}),
            "ts_ms": now_ms,
        }
        return self._append(
            "order_outcomes", {"client_order_id": client_order_id, "status": status, "order_id": order_id}, body
        )

    def record_fill(self, fill_id: str, body: Mapping[str, Any]) -> bool:
        """Journal a fill once; a fill id seen before returns False and changes nothing."""
        try:
            self._append("fills", {"fill_id": fill_id}, {**body, "fill_id": fill_id})
        except sqlite3.IntegrityError:
            return False
        return True

    # -- queries --

    def counts_by_action(self) -> dict[str, int]:
        rows = self._query("SELECT action, COUNT(*) FROM decisions GROUP BY action ORDER BY action")
        return {action: n for action, n in rows}

    def recent_decisions(self, n: int) -> list[dict]:
        """The last ``n`` decisions, most recent first, as journaled."""
        rows = self._query("SELECT body FROM decisions ORDER BY seq DESC LIMIT ?", (max(0, n),))
        return [json.loads(r[0]) for r in rows]

    # -- replay --

    def _records(self):
        """All records in seq order, verified: (table, seq, body dict)."""
        union = " UNION ALL ".join(f"SELECT seq, '{t}', body, sum FROM {t}" for t in TABLES)
        try:
            with self._lock:
                rows = self._conn.execute(f"SELECT * FROM ({union}) ORDER BY 1").fetchall()
        except sqlite3.OperationalError as exc:  # locked, I/O error: not proof of a corrupt file
            raise JournalError(f"journal unreadable: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise JournalCorrupt("database", None, str(exc)) from None
        expected = 1
        for seq, table, body, checksum in rows:
            if not isinstance(seq, int) or seq != expected:
                raise JournalCorrupt(table, seq, f"sequence gap: expected seq {expected}")
            if not isinstance(body, str) or _checksum(seq, table, body) != checksum:
                raise JournalCorrupt(table, seq, "checksum mismatch")
            try:
                data = json.loads(body)
            except ValueError:
                raise JournalCorrupt(table, seq, "unreadable body") from None
            if not isinstance(data, dict):
                raise JournalCorrupt(table, seq, "body is not an object")
            expected += 1
            yield table, seq, data

    def load(self) -> RecoveryView:
        """Replay every record into a recovery view; raises JournalCorrupt instead of guessing."""
        evaluated: set[str] = set()
        evaluated_trades: set[str] = set()
        sweeps: set[tuple[str, str, int]] = set()
        followed: set[str] = set()
        intents: dict[str, tuple[int, dict]] = {}
        last_status: dict[str, str] = {}
        orders: dict[str, str] = {}
        fills: set[str] = set()
        paper_fills: list[Mapping[str, Any]] = []
        records: list[EvaluatedWhale] = []
        last_seq = 0
        for table, seq, data in self._records():
            last_seq = seq
            try:
                if table == "decisions":
                    if data["action"] in FINAL_ACTIONS:
                        sweep = (data["market"], data["outcome"], data["whale_ts_ms"])
                        evaluated.add(data["whale_id"])
                        evaluated_trades.update(data["trade_ids"])
                        sweeps.add(sweep)
                        ts = data["whale_ts_ms"] or data["ts_ms"]
                        records.append(EvaluatedWhale(data["whale_id"], tuple(data["trade_ids"]), sweep, ts))
                    if data["action"] == FOLLOW:
                        followed.add(data["whale_id"])
                elif table == "order_intents":
                    intents[data["client_order_id"]] = (seq, data)
                    if data["whale_id"] not in evaluated:  # normally its follow decision came first
                        records.append(EvaluatedWhale(data["whale_id"], (), None, data["ts_ms"]))
                    evaluated.add(data["whale_id"])  # an intent always means followed
                    followed.add(data["whale_id"])
                elif table == "order_outcomes":
                    coid = data["client_order_id"]
                    if coid not in intents:
                        raise JournalCorrupt(table, seq, "outcome for an unknown intent")
                    last_status[coid] = data["status"]
                    if data.get("order_id"):
                        orders[coid] = data["order_id"]
                elif table == "fills":
                    fills.add(data["fill_id"])
                    if data.get("source") == "paper":
                        paper_fills.append(MappingProxyType(data))  # read-only; checked field by field when restored
            except (KeyError, TypeError) as exc:
                raise JournalCorrupt(table, seq, f"missing field {exc}") from None

        pending = []
        for coid, (seq, data) in sorted(intents.items(), key=lambda kv: kv[1][0]):
            status = last_status.get(coid)
            if status in CLOSING_STATUSES:
                continue
            try:
                plan = OrderPlan(
                    client_order_id=coid,
                    whale_id=data["whale_id"],
                    market=data["market"],
                    outcome=data["outcome"],
                    side=data["side"],
                    price=data["price"],
                    count=data["count"],
                    time_in_force=data["time_in_force"],
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise JournalCorrupt("order_intents", seq, f"bad intent: {exc}") from None
            pending.append(PendingIntent(seq, coid, data["whale_id"], data["market"], plan, status, data["ts_ms"]))
        # The hash covers the rebuilt state itself (D5: two replays must agree on it).
        state = {
            "last_seq": last_seq,
            "evaluated": sorted(evaluated),
            "evaluated_trades": sorted(evaluated_trades),
            "sweeps": sorted(sweeps),
            "followed": sorted(followed),
            "pending": [[p.seq, p.client_order_id, p.last_status] for p in pending],
            "orders": sorted(orders.items()),
            "fills": sorted(fills),
        }
        return RecoveryView(
            last_seq=last_seq,
            evaluated_whale_ids=frozenset(evaluated),
            evaluated_trade_ids=frozenset(evaluated_trades),
            evaluated_sweeps=frozenset(sweeps),
            followed_whale_ids=frozenset(followed),
            pending_intents=tuple(pending),
            known_orders=tuple(sorted(orders.items())),
            fill_ids=frozenset(fills),
            intent_times_ms=tuple(d["ts_ms"] for _, d in sorted(intents.values(), key=lambda v: v[0])),
            state_hash=hashlib.sha256(_canonical(state).encode()).hexdigest(),
            evaluated=tuple(records),
            torn_tail_bytes=self.torn_tail_bytes,
            paper_fills=tuple(paper_fills),
        )
