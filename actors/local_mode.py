"""Local mode: a key pair of our own and the local Kalshi-compatible exchange as a child process.

``python main.py`` with no credentials runs against ``kalshi.exchange`` on 127.0.0.1. The key pair is
generated once into ``<data_dir>/local-exchange/`` (private key 0600) and reused, so the exchange's
state file (accounts, orders, positions) stays ours across runs. The exchange runs as a child process in
its own session (a terminal Ctrl-C reaches only us, so we stop it last, after the actors); on Linux it
also gets SIGTERM if we die without stopping it, so no exchange is ever left behind.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import selectors
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from kalshi.auth import AuthError, Credentials, generate_key_pair, write_private_key

__all__ = [
    "LOCAL_DIR",
    "LocalKeys",
    "LocalExchangeError",
    "LocalExchangeProcess",
    "ensure_local_keys",
    "parse_start_line",
]

log = logging.getLogger(__name__)

LOCAL_DIR = "local-exchange"
PRIVATE_KEY_FILE = "private_key.pem"
PUBLIC_KEY_FILE = "public_key.pem"
KEY_ID_FILE = "key_id"
STATE_FILE = "state.json"
EXCHANGE_LOG_FILE = "exchange.log"

_START_RE = re.compile(r"REST (\S+) WS (\S+)")


class LocalExchangeError(RuntimeError):
    """The local exchange could not be started (the text says why; it never holds key material)."""


@dataclass(frozen=True, slots=True)
class LocalKeys:
    key_id: str
    private_key_path: Path
    public_key_path: Path
    state_path: Path
    directory: Path

    def credentials(self) -> Credentials:
        return Credentials.from_pem_file(self.key_id, self.private_key_path)


def ensure_local_keys(data_dir: str | os.PathLike[str]) -> LocalKeys:
    """The local key pair, generated on first use and reused afterwards.

    A missing public key or key id next to an existing private key is rebuilt from the private key;
    a private key with a loose mode is refused by ``Credentials`` (S1), never silently fixed.
    """
    Path(data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    directory = Path(data_dir) / LOCAL_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    private = directory / PRIVATE_KEY_FILE
    public = directory / PUBLIC_KEY_FILE
    key_id_file = directory / KEY_ID_FILE
    if not private.exists():
        private_pem, public_pem = generate_key_pair()
        write_private_key(private, private_pem)
        public.write_bytes(public_pem)
        _write_private_text(key_id_file, str(uuid.uuid4()) + "\n")
        log.info("local mode: generated a key pair in %s", directory)
    if not key_id_file.exists():
        _write_private_text(key_id_file, str(uuid.uuid4()) + "\n")
    key_id = key_id_file.read_text(encoding="ascii", errors="replace").strip()
    keys = LocalKeys(key_id, private, public, directory / STATE_FILE, directory)
    try:
        creds = keys.credentials()  # validates the key file (mode, format) before the exchange sees it
    except AuthError as exc:
        raise LocalExchangeError(f"local key pair in {directory} is unusable: {exc}") from None
    if not public.exists() or public.read_bytes() != creds.public_key_pem():
        public.write_bytes(creds.public_key_pem())
    return keys


def _write_private_text(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 from its first byte (S11) and write ``text``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file that already existed
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text)


def parse_start_line(line: str) -> tuple[str, str]:
    """(rest_url, ws_url) from the exchange's start line ``local Kalshi exchange: REST <url> WS <url>``."""
    match = _START_RE.search(line)
    if not match:
        raise LocalExchangeError(f"unexpected start line from the local exchange: {line.strip()[:200]!r}")
    rest_url, ws_url = match.group(1), match.group(2)
    if not rest_url.startswith("http://127.0.0.1:") or not ws_url.startswith("ws://127.0.0.1:"):
        raise LocalExchangeError(f"local exchange is not on 127.0.0.1: {rest_url} {ws_url}")
    return rest_url, ws_url


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies (Linux), so no orphan is left.

    Strictly the signal comes when the *thread* that started the child ends: start() runs in main.py's
    main thread, which lives as long as the process.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class LocalExchangeProcess:
    """``python -m kalshi.exchange.cli`` as a child process; ``start()`` returns once it listens."""

    def __init__(
        self,
        keys: LocalKeys,
        *,
        flow: str = "calm",
        port: int = 0,
        start_timeout_s: float = 30.0,
        extra_args: Sequence[str] = (),
        python: str = sys.executable,
    ) -> None:
        self.keys = keys
        self.argv = [
            python, "-m", "kalshi.exchange.cli",
            "--port", str(port),
            "--api-key", f"{keys.key_id}={keys.public_key_path}",
            "--state", str(keys.state_path),
            "--flow", flow,
            *extra_args,
        ]
        self.start_timeout_s = start_timeout_s
        self.log_path = keys.directory / EXCHANGE_LOG_FILE
        self.proc: subprocess.Popen[bytes] | None = None
        self.rest_url = ""
        self.ws_url = ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> LocalExchangeProcess:
        if self.proc is not None:
            raise RuntimeError("local exchange already started")
        repo_root = Path(__file__).resolve().parent.parent
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo_root), env.get("PYTHONPATH", "")) if p)
        # The child's log (0600, also when an older run left it looser), kept out of the live table's terminal.
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(log_fd, 0o600)
        stderr = os.fdopen(log_fd, "ab")
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, cwd=repo_root,
                env=env, start_new_session=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        except OSError as exc:
            raise LocalExchangeError(f"cannot start the local exchange: {exc}") from None
        finally:
            stderr.close()
        try:
            line = self._read_start_line()
            self.rest_url, self.ws_url = parse_start_line(line)
        except BaseException:
            self.stop()
            raise
        log.info("local exchange pid %s: REST %s WS %s", self.proc.pid, self.rest_url, self.ws_url)
        return self

    def _read_start_line(self) -> str:
        """The first stdout line, within the start deadline (never blocks past it)."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + self.start_timeout_s
        buffer = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LocalExchangeError(
                        f"local exchange did not report its address within {self.start_timeout_s:g}s"
                        f"{self._log_tail()}"
                    )
                if not sel.select(min(remaining, 0.5)):
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:  # stdout closed: the child exited
                    code = self.proc.wait(timeout=5)
                    raise LocalExchangeError(f"local exchange exited with status {code}{self._log_tail()}")
                buffer += chunk
                if len(buffer) > 65536:
                    raise LocalExchangeError("local exchange wrote an oversized start line")
        return buffer.split(b"\n", 1)[0].decode("utf-8", errors="replace")

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return ""
        return (": " + " | ".join(t.strip()[:200] for t in text)) if text else ""

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s`` (it saves its state), then SIGKILL. Idempotent."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("local exchange pid %s ignored SIGTERM for %.0fs: killing it", proc.pid, timeout_s)
                proc.kill()
                proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode
