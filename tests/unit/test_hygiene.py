"""Security hygiene without a running system (reliability.md §7.4): S3 redacted reprs and config errors,
S5 TLS on by default (static scan + client defaults), S6 production guard through ``main.main`` exit codes,
S8 repository hygiene, S10 the log filter's escaping and bounds, S11 file modes under a permissive umask.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

import main
from actors.context import SystemContext
from actors.journal import Journal
from actors.local_mode import ensure_local_keys
from actors.settings import LIVE_OPT_IN_ENV, LIVE_OPT_IN_VALUE, SETTINGS, load_settings
from actors.supervisor_log import SupervisorLog
from kalshi.auth import Credentials, SecretFilter, generate_key_pair, sanitize_log_text, write_private_key
from kalshi.rest import KalshiRest
from kalshi.ws import KalshiWebSocket
from tests.integration.test_security import CANARY_KEY_ID, SecretScanner, program_logging

REPO = Path(__file__).resolve().parents[2]
TOKEN_CANARY = "TOKEN-CANARY-5f3a9c"
PEM_CANARY = "CANARYPEMBODYSECRET0123456789abcdefghijklmnop"
_OUR_PREFIXES = ("KALSHI_", "V3_", "RL_", "WHALE_", "RISK_", "ENVIRONMENT")


@pytest.fixture(scope="module")
def keypair() -> tuple[bytes, bytes]:
    return generate_key_pair()


@pytest.fixture(scope="module")
def scanner(keypair) -> SecretScanner:
    return SecretScanner(keypair[0], CANARY_KEY_ID, extra=(TOKEN_CANARY, PEM_CANARY))


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No setting leaks in from the developer's shell or a .env in the working directory."""
    for name in list(os.environ):
        if name.startswith(_OUR_PREFIXES) or name == LIVE_OPT_IN_ENV:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)


def _tracked_files() -> list[Path]:
    return [REPO / name for name in _git("ls-files", "-z").stdout.split("\0") if name]


# --- S3: reprs and config errors show no secret -------------------------------------------------------


def test_reprs_of_credential_carrying_objects_show_no_secret(keypair, scanner):
    creds = Credentials.from_pem_text(CANARY_KEY_ID, keypair[0])
    env = {"ENVIRONMENT": "demo", "KALSHI_API_KEY_ID": CANARY_KEY_ID, "KALSHI_PRIVATE_KEY_CONTENT": keypair[0].decode(),
           "V3_STATUS_TOKEN": TOKEN_CANARY}
    settings = load_settings(config_path=None, environ=env, dotenv_path=None)
    context = SystemContext(settings=settings, rest_url="https://external-api.demo.kalshi.co/trade-api/v2",
                            ws_url="wss://external-api-ws.demo.kalshi.co/trade-api/ws/v2", credentials=creds,
                            data_dir=Path("data"), market_tickers=("M-1",))
    rest = KalshiRest(context.rest_url, creds)
    ws = KalshiWebSocket(context.ws_url, creds, on_frames=lambda *_: None, on_event=lambda *_: None)
    try:
        for obj in (creds, settings, context, rest, ws):
            for text in (repr(obj), str(obj), f"{obj!r:>10}", repr([obj]), repr({"x": obj})):
                scanner.assert_clean(type(obj).__name__, text)
        assert "CANA…" in repr(creds) and "CANA…" in repr(rest) and "<redacted>" in repr(settings)
    finally:
        rest.close()


def _run_main(argv: list[str], capsys) -> tuple[int, str]:
    code = main.main(argv)
    out, err = capsys.readouterr()
    return code, out + err


def test_bad_credentials_are_refused_without_echoing_them(clean_env, tmp_path, capsys, keypair, scanner):
    data = str(tmp_path / "data")
    # A PEM that does not parse: its body must not be echoed.
    clean_env.setenv("ENVIRONMENT", "demo")
    clean_env.setenv("KALSHI_API_KEY_ID", CANARY_KEY_ID)
    clean_env.setenv("KALSHI_PRIVATE_KEY_CONTENT",
                     f"-----BEGIN PRIVATE KEY-----\\n{PEM_CANARY}\\n-----END PRIVATE KEY-----")
    code, text = _run_main(["--plain", "--data-dir", data], capsys)
    assert code == main.EXIT_CONFIG and "could not be parsed" in text
    scanner.assert_clean("bad PEM error", text)

    # The real key, but in a file others can read: refused, and neither path content nor key shown.
    loose = tmp_path / "loose.pem"
    loose.write_bytes(keypair[0])
    os.chmod(loose, 0o644)
    clean_env.delenv("KALSHI_PRIVATE_KEY_CONTENT")
    clean_env.setenv("KALSHI_PRIVATE_KEY_PATH", str(loose))
    code, text = _run_main(["--plain", "--data-dir", data], capsys)
    assert code == main.EXIT_CONFIG and "chmod 600" in text
    scanner.assert_clean("loose key error", text)

    # Both sources at once: refused rather than one silently preferred.
    clean_env.setenv("KALSHI_PRIVATE_KEY_CONTENT", keypair[0].decode())
    code, text = _run_main(["cleanup", "--data-dir", data], capsys)
    assert code == main.EXIT_CONFIG and "set only one of" in text
    scanner.assert_clean("two key sources error", text)
    assert not Path(data).exists()  # nothing was started or written


@pytest.mark.parametrize("bad", [{"V3_PORT": "80x"}, {"WHALE_QUEUE_SIZE": "many"}, {"V3_HOST": "0.0.0.0", "V3_PORT": "-1"}])
def test_status_token_never_appears_in_config_errors(clean_env, tmp_path, capsys, scanner, bad):
    clean_env.setenv("V3_STATUS_TOKEN", TOKEN_CANARY)
    for name, value in bad.items():
        clean_env.setenv(name, value)
    code, text = _run_main(["--plain", "--data-dir", str(tmp_path / "d")], capsys)
    assert code == main.EXIT_CONFIG and "configuration error" in text
    scanner.assert_clean("config error", text)


def test_secret_settings_of_the_wrong_type_are_not_echoed(tmp_path, scanner):
    from actors.settings import ConfigError

    for key, section in (("status_token", "status_api"), ("private_key_content", "system")):
        config = tmp_path / f"{key}.toml"
        config.write_text(f"[{section}]\n{key} = ['{TOKEN_CANARY}', '{PEM_CANARY}']\n")
        with pytest.raises(ConfigError) as info:
            load_settings(config_path=config, environ={}, dotenv_path=None)
        assert "wrong type" in str(info.value)
        scanner.assert_clean(f"{key} type error", str(info.value))


# --- S5: TLS verification ------------------------------------------------------------------------------

_TLS_OFF = [
    re.compile(r"verify\s*=\s*False"),
    re.compile(r"\bCERT_NONE\b"),
    re.compile(r"check_hostname\s*=\s*False"),
    re.compile(r"_create_unverified_context"),
    re.compile(r"sslopt\s*=\s*\{[^}]*cert_reqs"),
    re.compile(r"ssl\s*=\s*False"),  # aiohttp's way of turning verification off
]


def test_no_source_file_turns_tls_verification_off():
    offenders = []
    for path in _tracked_files():
        rel = path.relative_to(REPO).as_posix()
        if path.suffix != ".py" or rel.startswith("tests/") or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if any(p.search(code) for p in _TLS_OFF):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, "TLS verification turned off in:\n" + "\n".join(offenders)


def test_the_scan_catches_each_pattern():
    for line in ("s.verify = False", "ctx.verify_mode = ssl.CERT_NONE", "ctx.check_hostname=False",
                 "ssl._create_unverified_context()", "ws.run(sslopt={'cert_reqs': 0})", "session.get(u, ssl=False)"):
        assert any(p.search(line) for p in _TLS_OFF), line


def test_clients_verify_tls_by_default(keypair):
    rest = KalshiRest("https://external-api.demo.kalshi.co/trade-api/v2", None)
    try:
        assert rest._session.verify is True
    finally:
        rest.close()
    ws = KalshiWebSocket("wss://external-api-ws.demo.kalshi.co/trade-api/ws/v2", None,
                         on_frames=lambda *_: None, on_event=lambda *_: None)
    ctx = ws._ssl_context
    assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname is True


# --- S6: production guard through the program's exit codes ----------------------------------------------


def _key_file(tmp_path: Path, keypair) -> str:
    path = tmp_path / "key.pem"
    if not path.exists():
        write_private_key(path, keypair[0])
    return str(path)


def test_prod_without_credentials_is_refused(clean_env, tmp_path, capsys):
    code, text = _run_main(["--env", "prod", "--plain", "--data-dir", str(tmp_path / "d")], capsys)
    assert code == main.EXIT_CONFIG and "needs credentials" in text
    assert not (tmp_path / "d").exists()


def test_prod_live_needs_the_exact_environment_opt_in(clean_env, tmp_path, capsys, keypair, scanner):
    clean_env.setenv("KALSHI_API_KEY_ID", CANARY_KEY_ID)
    clean_env.setenv("KALSHI_PRIVATE_KEY_PATH", _key_file(tmp_path, keypair))
    argv = ["--env", "prod", "--execution", "live", "--plain", "--data-dir", str(tmp_path / "d"),
            "--confirm-live", "CANA… LIVE"]
    for opt_in in (None, "yes", "1", LIVE_OPT_IN_VALUE.upper(), f" {LIVE_OPT_IN_VALUE}"):
        if opt_in is None:
            clean_env.delenv(LIVE_OPT_IN_ENV, raising=False)
        else:
            clean_env.setenv(LIVE_OPT_IN_ENV, opt_in)
        code, text = _run_main(argv, capsys)
        assert code == main.EXIT_CONFIG, opt_in
        assert f"{LIVE_OPT_IN_ENV} is not set to {LIVE_OPT_IN_VALUE}" in text
        scanner.assert_clean("live refusal", text)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("env, variable, url", [
    ("demo", "KALSHI_API_URL", "https://external-api.kalshi.com/trade-api/v2"),
    ("demo", "KALSHI_WS_URL", "wss://api.elections.kalshi.com/trade-api/ws/v2"),
    ("prod", "KALSHI_API_URL", "https://demo-api.kalshi.co/trade-api/v2"),
    ("prod", "KALSHI_API_URL", "https://127.0.0.1:8443/trade-api/v2"),
    ("prod", "KALSHI_WS_URL", "ws://external-api-ws.kalshi.com/trade-api/ws/v2"),
])
def test_mixed_demo_and_prod_endpoints_are_refused(clean_env, tmp_path, capsys, keypair, env, variable, url):
    clean_env.setenv("KALSHI_API_KEY_ID", CANARY_KEY_ID)
    clean_env.setenv("KALSHI_PRIVATE_KEY_PATH", _key_file(tmp_path, keypair))
    clean_env.setenv(variable, url)
    code, text = _run_main(["--env", env, "--plain", "--data-dir", str(tmp_path / "d")], capsys)
    assert code == main.EXIT_CONFIG and f"not an allowed {env}" in text
    assert CANARY_KEY_ID not in text


def test_urls_carrying_a_password_are_refused_without_echoing_it(clean_env, tmp_path, capsys, keypair):
    clean_env.setenv("KALSHI_API_KEY_ID", CANARY_KEY_ID)
    clean_env.setenv("KALSHI_PRIVATE_KEY_PATH", _key_file(tmp_path, keypair))
    clean_env.setenv("KALSHI_API_URL", f"https://user:{TOKEN_CANARY}@evil.example/trade-api/v2")
    code, text = _run_main(["--env", "demo", "--plain", "--data-dir", str(tmp_path / "d")], capsys)
    assert code == main.EXIT_CONFIG
    assert TOKEN_CANARY not in text


# --- S8: repository hygiene ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    ".env", "kalshi-demo.pem", "keys/anything", "my.key", "data/journal.sqlite", "data/journal.sqlite-wal",
    "journal.sqlite", "journal.sqlite-shm", "supervisor.jsonl", "data/local-exchange/state.json",
    "data/local-exchange/key_id", "data/trader.log",
])
def test_gitignore_covers_secrets_and_runtime_data(path):
    result = _git("check-ignore", "--no-index", "-q", path)
    assert result.returncode == 0, f"{path} is not ignored by .gitignore"


@pytest.mark.parametrize("path", ["run1/trader.log", "run1/local-exchange/state.json",
                                  "run1/local-exchange/key_id", "run1/local-exchange/exchange.log"])
def test_gitignore_covers_a_data_dir_outside_data(path):
    result = _git("check-ignore", "--no-index", "-q", path)
    assert result.returncode == 0, f"{path} is not ignored by .gitignore"


_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----(.*?)(?:-----END|\Z)", re.DOTALL)


def _looks_like_key(body: str) -> bool:
    """A PEM body with real key material: several base64 lines (a 2048-bit key has ~25 of 64 chars)."""
    body = body.replace("\\n", "\n")
    lines = [ln.strip() for ln in body.splitlines() if re.fullmatch(r"[A-Za-z0-9+/=]{40,}", ln.strip())]
    return len(lines) >= 3 or len(re.sub(r"[^A-Za-z0-9+/=]", "", body)) >= 400


def test_no_tracked_file_holds_a_private_key():
    found = []
    for path in _tracked_files():
        if not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", "replace")
        for match in _PEM_BLOCK.finditer(text):
            if _looks_like_key(match.group(2)):
                found.append(str(path.relative_to(REPO)))
    assert not found, f"private keys committed: {found}"


def test_the_key_detector_works(keypair):
    assert _looks_like_key(_PEM_BLOCK.search(keypair[0].decode()).group(2))
    escaped = keypair[0].decode().replace("\n", "\\n")  # as in an env file
    assert _looks_like_key(_PEM_BLOCK.search(escaped).group(2))
    assert not _looks_like_key(_PEM_BLOCK.search("-----BEGIN PRIVATE KEY-----\\nCANARY\\n-----END").group(2))


def test_env_example_has_no_secret_values():
    secret_vars = {s.env for s in SETTINGS if s.secret} | {"KALSHI_API_KEY_ID"}
    assert {"KALSHI_PRIVATE_KEY_CONTENT", "V3_STATUS_TOKEN"} <= secret_vars
    seen = set()
    for line in (REPO / ".env.example").read_text(encoding="utf-8").splitlines():
        match = re.match(r"\s*#?\s*([A-Z][A-Z0-9_]*)\s*=(.*)", line)
        if not match or match.group(1) not in secret_vars:
            continue
        seen.add(match.group(1))
        value = match.group(2).split("#", 1)[0].strip()
        assert value == "", f".env.example gives {match.group(1)} a value"
    assert "KALSHI_API_KEY_ID" in seen and "KALSHI_PRIVATE_KEY_CONTENT" in seen


# --- S10: the log filter escapes and bounds ------------------------------------------------------------


def _filtered_output(*records: tuple[str, tuple], exc: BaseException | None = None) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(SecretFilter())
    logger = logging.getLogger("tests.hygiene.filter")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        for msg, args in records:
            logger.warning(msg, *args)
        if exc is not None:
            try:
                raise exc
            except BaseException:
                logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return stream.getvalue()


EVIL = "KX\x1b[2J\x1b[31mEVIL\r\n2026-01-01 INFO trader: forged line\x00\u202e" + "A-" * 5000


def test_control_characters_are_escaped_and_long_text_cut():
    out = _filtered_output(("markets: %s", (EVIL,)), ("ok %s", ("KXTICKER-1",)))
    lines = out.splitlines()
    assert len(lines) == 2, lines[:3]  # the forged line stayed inside its record
    assert "\x1b" not in out and "\x00" not in out and "\r" not in out and "\u202e" not in out
    assert "\\x1b[2J" in lines[0] and "\\r\\n2026-01-01" in lines[0] and "\\u202e" in lines[0]
    assert len(lines[0]) < 4200 and "chars cut]" in lines[0]
    assert lines[1] == "WARNING ok KXTICKER-1"


def test_tracebacks_keep_their_lines_but_not_foreign_controls():
    out = _filtered_output(exc=RuntimeError("bad ticker " + EVIL))
    assert "Traceback (most recent call last)" in out and "RuntimeError: bad ticker" in out
    assert "\x1b" not in out and "\r" not in out and len(out) < 17_000


def test_bare_signatures_and_key_bodies_are_redacted(keypair):
    creds = Credentials.from_pem_text(CANARY_KEY_ID, keypair[0])
    signature = creds.sign_headers("GET", "/trade-api/v2/portfolio/balance")["KALSHI-ACCESS-SIGNATURE"]
    body = "".join(ln for ln in keypair[0].decode().splitlines() if not ln.startswith("-----"))
    out = _filtered_output(("headers %s", (list(creds.sign_headers("GET", "/x").values()),)),
                           ("sig %s", (signature,)), ("unwrapped key %s", (body,)))
    scanner = SecretScanner(keypair[0], CANARY_KEY_ID)
    scanner.add_signature(signature)
    scanner.assert_clean("filtered log", out)
    assert out.count("[REDACTED BASE64]") == 3


@pytest.mark.parametrize("url, problem", [
    (f"https://user:{TOKEN_CANARY}@external-api.demo.kalshi.co/trade-api/v2", "KALSHI_API_URL: the URL must not"),
    (f"https://external-api.demo.kalshi.co/trade-api/v2?t={TOKEN_CANARY}", "KALSHI_API_URL: the URL must not contain a query"),
])
def test_bad_url_on_an_allowed_host_is_a_config_error_not_a_crash(clean_env, tmp_path, capsys, keypair, url,
                                                                   problem):
    clean_env.setenv("KALSHI_API_KEY_ID", CANARY_KEY_ID)
    clean_env.setenv("KALSHI_PRIVATE_KEY_PATH", _key_file(tmp_path, keypair))
    clean_env.setenv("KALSHI_API_URL", url)
    for argv in (["--env", "demo", "--plain"], ["cleanup", "--env", "demo"]):
        code, text = _run_main([*argv, "--data-dir", str(tmp_path / "d")], capsys)
        assert code == main.EXIT_CONFIG and problem in text, text
        assert TOKEN_CANARY not in text and "Traceback" not in text


def test_cleanup_with_an_unusable_local_url_is_a_config_error(clean_env, tmp_path, capsys):
    clean_env.setenv("KALSHI_API_URL", "ftp://127.0.0.1:1/trade-api/v2")
    code, text = _run_main(["cleanup", "--data-dir", str(tmp_path / "d")], capsys)
    assert code == main.EXIT_CONFIG and "REST URL: base_url must be an http(s) URL" in text
    assert "Traceback" not in text


def test_short_key_ids_mask_whole_tokens_only(keypair):
    Credentials.from_pem_text("k", keypair[0])  # registered for redaction process-wide, like every key id
    out = _filtered_output(("ok, key %s, token k", ("k",)), ("Traceback of work", ()))
    assert out.splitlines() == ["WARNING ok, key …, token …", "WARNING Traceback of work"]


def test_sanitize_log_text_unchanged_for_ordinary_text():
    text = "GET /trade-api/v2/markets -> 200 in 16 ms; key CANA… (masked), price 0.5200"
    assert sanitize_log_text(text, 4000) is text
    assert sanitize_log_text("a\nb", 100, keep_newlines=True) == "a\nb"
    assert sanitize_log_text("x" * 50, 10, keep_tail=True).endswith("x" * 10)


def test_main_logging_uses_the_filter(capsys):
    with program_logging("INFO"):
        logging.getLogger("trader").info("markets (%s mode): %s", "discovery", EVIL)
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "\x1b" not in err and "chars cut]" in err


# --- S11: files are created 0600 whatever the umask ---------------------------------------------------


@pytest.fixture
def open_umask():
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def test_journal_and_its_side_files_are_private(tmp_path, open_umask):
    journal = Journal(tmp_path / "data")
    try:
        journal.path.parent.joinpath("probe").touch()  # the umask is really open
        assert _mode(tmp_path / "data" / "probe") == 0o666
        files = [p for p in (tmp_path / "data").iterdir() if p.name.startswith("journal")]
        assert {p.name for p in files} >= {"journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm"}
        for path in files:
            assert _mode(path) == 0o600, path.name
        assert _mode(tmp_path / "data") == 0o700
    finally:
        journal.close()


def test_an_existing_loose_journal_is_tightened(tmp_path, open_umask):
    first = Journal(tmp_path)
    first.close()
    os.chmod(first.path, 0o644)
    again = Journal(tmp_path)
    try:
        assert _mode(again.path) == 0o600
    finally:
        again.close()


def test_supervisor_log_is_private_even_if_it_existed(tmp_path, open_umask):
    loose = tmp_path / "logs" / "supervisor.jsonl"
    loose.parent.mkdir()
    loose.write_text("")
    os.chmod(loose, 0o644)
    for path in (tmp_path / "new.jsonl", loose):
        log = SupervisorLog(path)
        try:
            log.write("probe", mono_ns=1)
        finally:
            log.close()
        assert _mode(path) == 0o600, path.name


def test_local_keys_and_trader_log_are_private(tmp_path, open_umask):
    keys = ensure_local_keys(tmp_path / "data")
    assert _mode(keys.private_key_path) == 0o600
    assert _mode(keys.directory / "key_id") == 0o600
    assert _mode(keys.directory) == 0o700 and _mode(tmp_path / "data") == 0o700
    log_file = tmp_path / "data" / "trader.log"
    log_file.write_text("")
    os.chmod(log_file, 0o644)  # left loose by something else: tightened
    with program_logging("INFO", log_file):
        logging.getLogger("trader").info("probe")
    assert _mode(log_file) == 0o600 and "probe" in log_file.read_text()


def test_written_private_key_is_private(tmp_path, open_umask, keypair):
    write_private_key(tmp_path / "k.pem", keypair[0])
    assert _mode(tmp_path / "k.pem") == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_tests_cannot_reach_outside_loopback():
    """S7: the conftest guard refuses a connect outside loopback and reports it; loopback still works."""
    import socket as _socket

    import tests.conftest as guard

    outside = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        with pytest.raises(PermissionError, match="loopback only"):
            outside.connect(("203.0.113.7", 443))  # TEST-NET-3: never routed
        assert guard._blocked_connects == ["('203.0.113.7', 443)"]
    finally:
        outside.close()
        guard._blocked_connects.clear()  # seen: this test's own violation is the point
    listener = _socket.create_server(("127.0.0.1", 0))
    try:
        inside = _socket.create_connection(listener.getsockname(), timeout=5)
        inside.close()
    finally:
        listener.close()
    assert guard._is_loopback(("::1", 80, 0, 0)) and guard._is_loopback(("localhost", 80))
    assert not guard._is_loopback(("example.com", 80)) and not guard._is_loopback(("10.0.0.1", 80))
