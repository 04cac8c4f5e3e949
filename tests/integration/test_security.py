"""Security checks that need running pieces (reliability.md §7.4): S2 no secret in any output of a real run,
S3 config errors through the program, S10 hostile exchange text in logs, S11 modes of files the running
pieces create.

The S2 run is the real program (``main.main`` in-process, local mode, DEBUG logging) against the child
exchange, with a canary key id and a freshly generated key seeded into the data folder; every signature
the run produces is recorded by wrapping ``Credentials.sign_headers``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import sqlite3
import threading
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import pytest
import websocket
from cryptography.hazmat.primitives import serialization

import main
from actors.local_mode import KEY_ID_FILE, LOCAL_DIR, PRIVATE_KEY_FILE
from kalshi.auth import Credentials, generate_key_pair, write_private_key
from tests.helpers import wait_for

CANARY_KEY_ID = "CANARY-KEYID-0123456789"
_OUR_PREFIXES = ("KALSHI_", "V3_", "RL_", "WHALE_", "RISK_", "ENVIRONMENT")
_B64_RUN = re.compile(r"[A-Za-z0-9+/]{40,}")
WINDOW = 40


# --- the secret scanner ---------------------------------------------------------------------------


class SecretScanner:
    """Finds any trace of one private key, its key id and the signatures made with it in a text.

    Key material is matched as any 40-character slice of the DER base64 (PKCS#8 as stored, and PKCS#1),
    the PEM body lines and the leading digits of the private numbers; signatures by their full value and
    their first and last 40 characters (what a truncating log would keep).
    """

    def __init__(self, private_pem: bytes, key_id: str, extra: Iterable[str] = ()) -> None:
        key = serialization.load_pem_private_key(private_pem, password=None)
        pkcs1 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption())
        lines = [ln for ln in private_pem.decode("ascii").splitlines() if ln and not ln.startswith("-----")]
        self.pem_lines = [ln for ln in lines if len(ln) >= 16]
        self.windows: set[str] = set()
        for body in ("".join(lines), base64.b64encode(pkcs1).decode("ascii")):
            self.windows.update(body[i:i + WINDOW] for i in range(len(body) - WINDOW + 1))
        # The modulus is inside the private DER too: slices that also occur in the public key are not secret.
        public = key.public_key()
        for der in (public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
                    public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)):
            body = base64.b64encode(der).decode("ascii")
            self.windows.difference_update(body[i:i + WINDOW] for i in range(len(body) - WINDOW + 1))
        numbers = key.private_numbers()
        self.literals = [key_id, *extra, *(str(n)[:40] for n in (numbers.p, numbers.q, numbers.d))]
        self.signatures: list[str] = []
        self._lock = threading.Lock()

    def add_signature(self, signature: str) -> None:
        with self._lock:
            self.signatures.append(signature)
            self.windows.add(signature[:WINDOW])
            self.windows.add(signature.rstrip("=")[-WINDOW:])  # padding is not part of a base64 run

    def find(self, text: str) -> list[str]:
        hits = [f"literal {lit[:8]}…" for lit in self.literals if lit and lit in text]
        if "PRIVATE KEY-----" in text:
            hits.append("PEM private key marker")
        hits += [f"PEM line {ln[:8]}…" for ln in self.pem_lines if ln in text]
        for run in _B64_RUN.finditer(text):
            s = run.group()
            for i in range(len(s) - WINDOW + 1):
                if s[i:i + WINDOW] in self.windows:
                    hits.append(f"base64 fragment {s[i:i + 8]}… at {run.start() + i}")
                    break
        with self._lock:
            signatures = list(self.signatures)
        hits += [f"signature {sig[:8]}…" for sig in signatures if sig in text]
        return hits

    def assert_clean(self, what: str, text: str) -> None:
        hits = self.find(text)
        assert not hits, f"secret material in {what}: {hits[:5]}"


def test_scanner_finds_what_it_must():  # the S2 test below is only as good as this
    pem, _ = generate_key_pair()
    scanner = SecretScanner(pem, CANARY_KEY_ID)
    body = "".join(ln for ln in pem.decode().splitlines() if not ln.startswith("-----"))
    assert scanner.find("nothing here, CANA…, a1b2c3") == []
    assert scanner.find(f"key {CANARY_KEY_ID} used")
    assert scanner.find(f"x={body[500:541]}!")  # a bare slice, not aligned to PEM lines
    assert scanner.find(pem.decode().splitlines()[3])
    assert scanner.find("-----BEGIN " + "PRIVATE KEY-----")  # split: no PEM header in tracked files
    assert scanner.find(str(Credentials.from_pem_text("k", pem)._key.private_numbers().d))
    public = Credentials.from_pem_text("k", pem).public_key_pem().decode()
    assert scanner.find(public) == []  # the public key is not a secret
    signature = Credentials.from_pem_text(CANARY_KEY_ID, pem).sign_headers("GET", "/x")["KALSHI-ACCESS-SIGNATURE"]
    scanner.add_signature(signature)
    assert scanner.find(f"sig={signature[:60]}...") and scanner.find(f"...{signature[-50:]}")
    assert scanner.find(json.dumps({"headers": {"KALSHI-ACCESS-SIGNATURE": signature}}))


def _record_signatures(monkeypatch, scanner: SecretScanner) -> None:
    """Wrap ``Credentials.sign_headers`` so every signature made from now on is known to ``scanner``."""
    original = Credentials.sign_headers

    def recording_sign_headers(self, method, path, now_ms=None):
        headers = original(self, method, path, now_ms)
        scanner.add_signature(headers["KALSHI-ACCESS-SIGNATURE"])
        return headers

    monkeypatch.setattr(Credentials, "sign_headers", recording_sign_headers)


@contextlib.contextmanager
def program_logging(level: str = "DEBUG", log_file: Path | None = None):
    """main.py's logging set-up (its handler and SecretFilter) for the block; the root logger restored after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        main._setup_logging(level, log_file)
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


# --- S2: a real run leaks nothing ---------------------------------------------------------------------


def _seed_local_keys(data: Path, key_id: str) -> bytes:
    """The local-mode key folder as ensure_local_keys would find it, with a canary key id."""
    folder = data / LOCAL_DIR
    folder.mkdir(mode=0o700, parents=True)
    pem, _ = generate_key_pair()
    write_private_key(folder / PRIVATE_KEY_FILE, pem)
    fd = os.open(folder / KEY_ID_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key_id + "\n")
    return pem


def _clean_environment(monkeypatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(_OUR_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no developer .env is read


class _AddressCatcher(logging.Handler):
    """Learns the status API address from the broadcaster's start-up line."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.url: str | None = None
        self.found = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        match = re.search(r"status API on (http://127\.0\.0\.1:\d+)/v3/status", record.getMessage())
        if match:
            self.url = match.group(1)
            self.found.set()


class _StatusWatcher:
    """A thread that reads /v3/status, /v3/health and the /v3/ws stream while the program runs."""

    def __init__(self, catcher: _AddressCatcher) -> None:
        self.catcher = catcher
        self.bodies: list[str] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="status-watcher", daemon=True)

    def _get(self, url: str) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=3) as resp:
                self.bodies.append(resp.read().decode("utf-8", "replace"))
        except OSError as exc:  # a 503 while starting or a refused connect during shutdown
            body = exc.read().decode("utf-8", "replace") if hasattr(exc, "read") else ""
            self.errors.append(f"{url}: {exc} {body}")

    def _run(self) -> None:
        while not self.catcher.found.wait(0.1):
            if self.stop.is_set():
                return
        base = self.catcher.url
        try:
            ws = websocket.create_connection(base.replace("http", "ws", 1) + "/v3/ws", timeout=3,
                                             http_proxy_host=None, suppress_origin=True)
        except Exception as exc:  # noqa: BLE001 - recorded; the test asserts on what was read
            self.errors.append(f"ws: {type(exc).__name__}: {exc}")
            ws = None
        try:
            while not self.stop.wait(0.5):
                self._get(base + "/v3/status")
                self._get(base + "/v3/health")
                if ws is not None:
                    try:
                        while True:  # drain what is waiting; the first recv may wait up to its timeout
                            ws.settimeout(0.2)
                            self.bodies.append(ws.recv())
                    except websocket.WebSocketTimeoutException:
                        pass
                    except Exception as exc:  # noqa: BLE001
                        self.errors.append(f"ws recv: {type(exc).__name__}")
                        ws.close()
                        ws = None
        finally:
            if ws is not None:
                ws.close()


def _journal_text(path: Path) -> tuple[str, int]:
    """Every row of every table as text, and the number of rows."""
    rows: list[str] = []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            rows += [repr(row) for row in conn.execute(f'SELECT * FROM "{table}"')]
    return "\n".join(rows), len(rows)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_real_run_never_outputs_key_material_key_id_or_signatures(tmp_path, monkeypatch, capsys):
    _clean_environment(monkeypatch, tmp_path)
    data = tmp_path / "data"
    pem = _seed_local_keys(data, CANARY_KEY_ID)
    scanner = SecretScanner(pem, CANARY_KEY_ID)

    _record_signatures(monkeypatch, scanner)
    # Small whales: decisions (and so journal rows to scan) come within seconds, not by chance.
    monkeypatch.setenv("WHALE_MIN_SIZE_CENTS", "500")
    catcher = _AddressCatcher()
    broadcaster_log = logging.getLogger("actors.broadcaster")
    broadcaster_log.addHandler(catcher)
    watcher = _StatusWatcher(catcher)
    watcher.thread.start()
    try:
        code = main.main(["--plain", "--run-for", "15", "--port", "0", "--log-level", "DEBUG",
                          "--data-dir", str(data)])
    finally:
        watcher.stop.set()
        watcher.thread.join(10)
        broadcaster_log.removeHandler(catcher)
    out, err = capsys.readouterr()
    assert code == 0, f"exit {code}\n{out[-2000:]}\n{err[-4000:]}"
    assert not watcher.thread.is_alive()

    # The run did what it must for the scan to mean something.
    assert len(scanner.signatures) >= 10, "too few signed requests"
    journal, rows = _journal_text(data / "journal.sqlite")
    assert rows > 0, "nothing journaled"
    assert any('"state"' in b for b in watcher.bodies), f"no status payload read: {watcher.errors[:3]}"

    scanner.assert_clean("stdout", out)
    scanner.assert_clean("log output (stderr)", err)
    scanner.assert_clean("supervisor log", (data / "supervisor.jsonl").read_text(encoding="utf-8"))
    scanner.assert_clean("journal rows", journal)
    scanner.assert_clean("status API payloads", "\n".join(watcher.bodies + watcher.errors))
    for extra in sorted(data.rglob("*")):
        # Every file the run left (raw journal and WAL, exchange log and state, public key) but the key files.
        if extra.is_file() and extra.name not in (PRIVATE_KEY_FILE, KEY_ID_FILE):
            scanner.assert_clean(str(extra.relative_to(data)), extra.read_bytes().decode("utf-8", "replace"))


# --- S2: authentication failures ---------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_rejected_credentials_leave_no_secret_in_errors_or_logs(monkeypatch, caplog):
    from kalshi.exchange.server import LocalExchange
    from kalshi.rest import AuthenticationError, KalshiRest
    from kalshi.ws import KalshiWebSocket

    pem, _ = generate_key_pair()
    _, other_public = generate_key_pair()  # the exchange knows our key id with a different key
    scanner = SecretScanner(pem, CANARY_KEY_ID)
    _record_signatures(monkeypatch, scanner)
    creds = Credentials.from_pem_text(CANARY_KEY_ID, pem)
    caplog.set_level(logging.DEBUG)
    events: list[object] = []
    with LocalExchange(markets=1, flow="off", api_keys={CANARY_KEY_ID: other_public}, rate_limits=False) as exchange:
        with KalshiRest(exchange.rest_url, creds, read_retries=0) as rest:
            with pytest.raises(AuthenticationError) as info:
                rest.get_balance()
        ws = KalshiWebSocket(exchange.ws_url, creds, on_frames=lambda *_: None, on_event=events.append,
                             backoff_initial=0.05, backoff_max=0.1, name="canary-ws")
        ws.start()
        try:
            wait_for(lambda: ws.stats().auth_failures >= 2, 10, message="two refused handshakes")
        finally:
            ws.stop()
    assert len(scanner.signatures) >= 3
    # Raw records (before any filter), formatted as a handler would, with their tracebacks.
    raw = "\n".join(logging.Formatter("%(name)s %(message)s").format(r) for r in caplog.records)
    for what, text in (("exception text", f"{info.value} {info.value!r} {info.value.args}"),
                       ("events", repr(events)), ("log records", raw)):
        scanner.assert_clean(what, text)


# --- S10: hostile text from the exchange reaches the terminal escaped and bounded ----------------------

EVIL = "KX\x1b[2J\x1b]0;pwned\x07\r\n2026-01-01 INFO trader: forged line\x00\u202e" + "X" * 10_000


class _EvilExchange:
    """A loopback HTTP server answering like Kalshi, with control characters and 10 kB strings in every
    exchange-supplied text: an order listing and order-cancel errors."""

    def __init__(self, order_body: dict, evil_ticker: bool = False) -> None:
        import http.server

        self.requests: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.evil_ticker = evil_ticker
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                owner.requests.append(f"GET {self.path}")
                owner.headers.append(dict(self.headers))
                if self.path.startswith("/trade-api/v2/portfolio/orders"):
                    # Tickers are validated by the decoder (a hostile one fails the page, see the test below);
                    # ids and client ids are free text and reach the output.
                    evil_text = dict(order_body, client_order_id=EVIL, order_group_id=None)
                    evil_id = dict(order_body, order_id="id-" + EVIL, order_group_id=None)
                    orders = [dict(order_body, ticker=EVIL)] if owner.evil_ticker else [evil_text, evil_id]
                    self._send(200, {"orders": orders, "cursor": ""})
                else:
                    self._send(404, {"error": {"code": "not_found", "message": EVIL}})

            def do_DELETE(self) -> None:  # noqa: N802
                owner.requests.append(f"DELETE {self.path}")
                self._send(400, {"error": {"code": "bad\x1b[0m" + "c" * 500, "message": EVIL, "details": EVIL}})

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="evil-exchange", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/trade-api/v2"

    def __enter__(self) -> _EvilExchange:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _resting_order(wire_dir: Path) -> dict:
    return json.loads((wire_dir / "orders__get_after_create.json").read_text())["order"]


def _assert_terminal_safe(text: str, limit: int = 1000) -> None:
    bad = [c for c in set(text) if not c.isprintable() and c != "\n"]
    assert not bad, f"raw control characters reached the output: {bad}"
    long_lines = [ln[:80] for ln in text.splitlines() if len(ln) > limit]
    assert not long_lines, f"unbounded lines: {long_lines}"
    assert "forged line" not in "\n".join(ln[:30] for ln in text.splitlines())  # no line starts forged


def test_cleanup_shows_hostile_ids_tickers_and_errors_escaped(tmp_path, monkeypatch, capsys, wire_dir):
    _clean_environment(monkeypatch, tmp_path)
    with _EvilExchange(_resting_order(wire_dir)) as evil:
        monkeypatch.setenv("KALSHI_API_URL", evil.url)
        code = main.main(["cleanup", "--data-dir", str(tmp_path / "data")])
    out, err = capsys.readouterr()
    assert code == main.EXIT_STARTUP, f"{out[-2000:]}\n{err[-2000:]}"  # both cancels failed
    assert "Traceback" not in err
    assert out.count("could not cancel") == 2 and "0 canceled, 2 failed, 0 kept" in out
    assert "\\x1b[2J" in out  # shown, escaped
    assert sum(r.startswith("DELETE") for r in evil.requests) == 1  # the bad id was never put in a URL
    _assert_terminal_safe(out + err)


def test_rest_errors_from_the_exchange_are_escaped_and_bounded_in_logs(tmp_path, capsys, wire_dir):
    from kalshi.rest import KalshiApiError, KalshiRest

    with program_logging("DEBUG"):
        with _EvilExchange(_resting_order(wire_dir)) as evil, KalshiRest(evil.url, None, read_retries=0) as rest:
            orders = list(rest.iter_orders(status="resting"))
            logging.getLogger("trader").warning("resting: %s", [o.client_order_id for o in orders])
            with pytest.raises(KalshiApiError) as info:
                rest.cancel_order("abc-1", orders[0].ticker)
            logging.getLogger("trader").error("cancel failed: %s", info.value)
            try:
                raise RuntimeError(orders[0].client_order_id)
            except RuntimeError:
                logging.getLogger("trader").exception("handler failed")
    err = capsys.readouterr().err
    assert "resting:" in err and "cancel failed: HTTP 400" in err and "handler failed" in err
    assert len(str(info.value)) < 1000
    _assert_terminal_safe(err, limit=4200)


def test_a_hostile_ticker_fails_the_page_with_an_escaped_bounded_error(tmp_path, capsys, wire_dir):
    from kalshi.rest import KalshiApiError, KalshiRest

    with program_logging("DEBUG"):
        with _EvilExchange(_resting_order(wire_dir), evil_ticker=True) as evil, \
                KalshiRest(evil.url, None, read_retries=0) as rest:
            with pytest.raises(KalshiApiError) as info:
                list(rest.iter_orders(status="resting"))
            logging.getLogger("trader").error("orders failed: %s", info.value)
    text = str(info.value)
    assert "ticker" in text and len(text) < 1000
    _assert_terminal_safe(text + capsys.readouterr().err, limit=4200)


def test_rest_client_never_sends_netrc_credentials(tmp_path, monkeypatch, wire_dir):
    from kalshi.rest import KalshiRest

    netrc = tmp_path / "netrc"
    netrc.write_text("default login someone password NETRC-CANARY-SECRET\n")
    os.chmod(netrc, 0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    with _EvilExchange(_resting_order(wire_dir)) as evil, KalshiRest(evil.url, None, read_retries=0) as rest:
        list(rest.iter_orders(status="resting"))
    assert evil.headers, "no request reached the server"
    assert not [h for h in evil.headers if "Authorization" in h], "a netrc password was sent to the exchange"


# --- S11: the local exchange's state file -------------------------------------------------------------


def test_local_exchange_state_file_is_private_whatever_the_umask(tmp_path):
    from kalshi.exchange.server import LocalExchange

    state = tmp_path / "state.json"
    previous = os.umask(0)
    try:
        with LocalExchange(markets=1, flow="off", state_file=state, rate_limits=False) as exchange:
            assert exchange.save_state()
            assert os.stat(state).st_mode & 0o777 == 0o600
        (tmp_path / "probe").touch()
        assert os.stat(tmp_path / "probe").st_mode & 0o777 == 0o666  # the umask really was open
    finally:
        os.umask(previous)
    assert os.stat(state).st_mode & 0o777 == 0o600  # also after the save on stop
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_child_exchange_log_and_key_id_are_tightened_if_left_loose(tmp_path):
    from actors.local_mode import LocalExchangeProcess, ensure_local_keys

    keys = ensure_local_keys(tmp_path)
    log_path = keys.directory / "exchange.log"
    log_path.write_text("an older run\n")
    os.chmod(log_path, 0o644)
    exchange = LocalExchangeProcess(keys, flow="off")
    try:
        exchange.start()
        assert os.stat(log_path).st_mode & 0o777 == 0o600
    finally:
        exchange.stop()
    # A key pair regenerated next to a loose key_id file: the rewritten file is private.
    keys.private_key_path.unlink()
    os.chmod(keys.directory / KEY_ID_FILE, 0o644)
    ensure_local_keys(tmp_path)
    assert os.stat(keys.directory / KEY_ID_FILE).st_mode & 0o777 == 0o600
