"""kalshi.auth: signing, key loading and its refusals, clock offset, secret hygiene (S1–S4)."""

from __future__ import annotations

import base64
import copy
import io
import logging
import os
import pickle
from email.utils import formatdate

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from kalshi.auth import (
    HEADER_KEY,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    AuthError,
    ClockOffset,
    Credentials,
    SecretFilter,
    generate_key_pair,
    load_public_key,
    redact_text,
    verify_signature,
    write_private_key,
)

CANARY_ID = "CANARY5e-7a1d-4c2b-9f00-canarykeyid0"


@pytest.fixture(scope="module")
def keypair() -> tuple[bytes, bytes]:
    return generate_key_pair()


@pytest.fixture(scope="module")
def creds(keypair) -> Credentials:
    return Credentials.from_pem_text(CANARY_ID, keypair[0].decode())


@pytest.fixture(scope="module")
def public_key(keypair):
    return load_public_key(keypair[1])


def _write(path, data: bytes, mode: int) -> str:
    path.write_bytes(data)
    os.chmod(path, mode)
    return str(path)


def _secret_fragments(keypair: tuple[bytes, bytes]) -> list[str]:
    """Strings that must never show up in any output: PEM markers, key body chunks, the full key id."""
    body = b"".join(keypair[0].splitlines()[1:-1]).decode()
    return ["PRIVATE KEY", CANARY_ID, body[:40], body[100:140], body[-40:]]


# ---------------------------------------------------------------- signing


def test_headers_shape_and_verification(creds, public_key):
    headers = creds.sign_headers("get", "/trade-api/v2/portfolio/balance", now_ms=1764000000000)
    assert set(headers) == {HEADER_KEY, HEADER_TIMESTAMP, HEADER_SIGNATURE}
    assert headers[HEADER_KEY] == CANARY_ID
    assert headers[HEADER_TIMESTAMP] == "1764000000000"
    sig = headers[HEADER_SIGNATURE]
    assert len(sig) % 4 == 0 and len(base64.b64decode(sig, validate=True)) == 256  # standard, padded
    assert verify_signature(public_key, "1764000000000", "GET", "/trade-api/v2/portfolio/balance", sig)


def test_signature_is_rsa_pss_sha256_with_digest_length_salt(creds, public_key):
    headers = creds.sign_headers("POST", "/trade-api/v2/portfolio/events/orders", now_ms=5)
    sig = base64.b64decode(headers[HEADER_SIGNATURE])
    message = b"5POST/trade-api/v2/portfolio/events/orders"
    # Exactly Kalshi's parameters: PSS, MGF1(SHA-256), salt = 32 bytes.
    public_key.verify(sig, message, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    with pytest.raises(InvalidSignature):
        public_key.verify(sig, message, padding.PKCS1v15(), hashes.SHA256())
    # PSS is randomized: two signatures of the same text differ.
    again = creds.sign_headers("POST", "/trade-api/v2/portfolio/events/orders", now_ms=5)
    assert again[HEADER_SIGNATURE] != headers[HEADER_SIGNATURE]


_methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "get", "Delete"])
_segments = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.", min_size=1,
                    max_size=20)
_queries = st.dictionaries(st.sampled_from(["status", "limit", "cursor", "ticker", "min_ts"]),
                           st.text(alphabet="abcXYZ0123456789-_", min_size=0, max_size=12), max_size=4)


@settings(max_examples=40, deadline=None)
@given(method=_methods, segments=st.lists(_segments, min_size=1, max_size=4), query=_queries,
       ts=st.integers(min_value=0, max_value=2**45))
def test_query_is_never_signed(creds, public_key, method, segments, query, ts):
    path = "/trade-api/v2/" + "/".join(segments)
    target = path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
    headers = creds.sign_headers(method, target, now_ms=ts)
    sig = headers[HEADER_SIGNATURE]
    # The server verifies against the real (upper-case) method and the path with or without query.
    assert verify_signature(public_key, str(ts), method.upper(), path, sig)
    assert verify_signature(public_key, str(ts), method.upper(), target, sig)
    raw = base64.b64decode(sig)
    pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO)
    if query:  # the signed text is exactly ts + METHOD + path, never the query
        with pytest.raises(InvalidSignature):
            public_key.verify(raw, f"{ts}{method.upper()}{target}".encode(), pss, hashes.SHA256())
    public_key.verify(raw, f"{ts}{method.upper()}{path}".encode(), pss, hashes.SHA256())


def test_verification_rejects_wrong_method_case_timestamp_path_and_key(creds, public_key):
    headers = creds.sign_headers("GET", "/trade-api/v2/markets?limit=5", now_ms=1000)
    sig = headers[HEADER_SIGNATURE]
    assert verify_signature(public_key, "1000", "GET", "/trade-api/v2/markets", sig)
    assert not verify_signature(public_key, "1000", "get", "/trade-api/v2/markets", sig)
    assert not verify_signature(public_key, "1001", "GET", "/trade-api/v2/markets", sig)
    assert not verify_signature(public_key, "1000", "GET", "/markets", sig)  # prefix is signed
    other = load_public_key(generate_key_pair()[1])
    assert not verify_signature(other, "1000", "GET", "/trade-api/v2/markets", sig)


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.none(), st.integers(), st.text(max_size=50), st.binary(max_size=50)),
       st.one_of(st.none(), st.text(max_size=10)), st.text(max_size=30))
def test_verify_never_raises_on_garbage(public_key, signature, timestamp, path):
    assert verify_signature(public_key, timestamp, "GET", path, signature) is False


def test_verify_with_garbage_key_object_returns_false(creds):
    sig = creds.sign_headers("GET", "/x", now_ms=1)[HEADER_SIGNATURE]
    assert verify_signature(object(), "1", "GET", "/x", sig) is False


def test_full_url_is_reduced_to_its_path(creds, public_key):
    headers = creds.sign_headers("GET", "https://demo-api.kalshi.co/trade-api/v2/portfolio/orders?status=resting",
                                 now_ms=42)
    assert verify_signature(public_key, "42", "GET", "/trade-api/v2/portfolio/orders", headers[HEADER_SIGNATURE])


def test_ws_handshake_path(creds, public_key):
    headers = creds.sign_headers("GET", "/trade-api/ws/v2", now_ms=7)
    assert verify_signature(public_key, "7", "GET", "/trade-api/ws/v2", headers[HEADER_SIGNATURE])


def test_bad_method_or_relative_path_is_a_programming_error(creds):
    with pytest.raises(ValueError):
        creds.sign_headers("GET /x", "/x")
    with pytest.raises(ValueError):
        creds.sign_headers("GET", "trade-api/v2/x")


# ---------------------------------------------------------------- key files (S1)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_key_file_with_owner_only_mode_is_accepted(tmp_path, keypair, public_key, mode):
    path = _write(tmp_path / "key.pem", keypair[0], mode)
    creds = Credentials.from_pem_file(CANARY_ID, path)
    sig = creds.sign_headers("GET", "/a", now_ms=1)[HEADER_SIGNATURE]
    assert verify_signature(public_key, "1", "GET", "/a", sig)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606])
def test_private_key_file_readable_by_others_is_refused(tmp_path, keypair, mode):
    path = _write(tmp_path / "key.pem", keypair[0], mode)
    with pytest.raises(AuthError, match=f"mode {mode:04o}"):
        Credentials.from_pem_file(CANARY_ID, path)


def test_pkcs1_key_is_accepted(tmp_path, keypair, public_key):
    key = serialization.load_pem_private_key(keypair[0], None)
    pkcs1 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption())
    assert b"BEGIN RSA PRIVATE KEY" in pkcs1
    creds = Credentials.from_pem_file(CANARY_ID, _write(tmp_path / "k1.pem", pkcs1, 0o600))
    assert verify_signature(public_key, "3", "PUT", "/b", creds.sign_headers("PUT", "/b", now_ms=3)[HEADER_SIGNATURE])


def _encrypted_pem() -> bytes:
    key = rsa.generate_private_key(65537, 2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(b"pw"))


def _ec_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _small_rsa_pem() -> bytes:
    return rsa.generate_private_key(65537, 1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "empty"),
        (b"\x00\x01garbage\xff" * 10, "not a PEM private key"),
        (b"-----BEGIN PRIVATE KEY-----\nnot base64 at all!!\n-----END PRIVATE KEY-----\n", "could not be parsed"),
        ("public", "public key"),
        ("ec", "unsupported key type"),
        ("encrypted", "encrypted"),
        ("small", "1024 bits"),
    ],
)
def test_bad_key_files_are_refused_with_a_clear_reason(tmp_path, keypair, content, expected):
    data = {"public": keypair[1], "ec": None, "encrypted": None, "small": None}.get(content, content)
    if content == "ec":
        data = _ec_pem()
    elif content == "encrypted":
        data = _encrypted_pem()
    elif content == "small":
        data = _small_rsa_pem()
    path = _write(tmp_path / "key.pem", data, 0o600)
    with pytest.raises(AuthError, match=expected) as info:
        Credentials.from_pem_file(CANARY_ID, path)
    text = str(info.value) + repr(info.value)
    for fragment in _secret_fragments(keypair) + ["MII"]:
        assert fragment not in text
    # No chained cryptography exception (its text could quote input) in the traceback either.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_missing_directory_symlink_and_fifo(tmp_path, keypair, public_key):
    with pytest.raises(AuthError, match="does not exist"):
        Credentials.from_pem_file(CANARY_ID, tmp_path / "nope.pem")
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(AuthError, match="directory"):
        Credentials.from_pem_file(CANARY_ID, tmp_path / "dir")
    target = _write(tmp_path / "real.pem", keypair[0], 0o600)
    (tmp_path / "link.pem").symlink_to(target)
    # A symlink is followed; the check applies to the file actually opened.
    assert Credentials.from_pem_file(CANARY_ID, tmp_path / "link.pem").key_id == CANARY_ID
    (tmp_path / "dangling.pem").symlink_to(tmp_path / "gone.pem")
    with pytest.raises(AuthError, match="does not exist"):
        Credentials.from_pem_file(CANARY_ID, tmp_path / "dangling.pem")
    os.mkfifo(tmp_path / "fifo", 0o600)
    with pytest.raises(AuthError, match="not a regular file"):
        Credentials.from_pem_file(CANARY_ID, tmp_path / "fifo")


def test_key_file_too_large(tmp_path, keypair):
    path = _write(tmp_path / "big.pem", keypair[0] + b"\n" * 70_000, 0o600)
    with pytest.raises(AuthError, match="too large"):
        Credentials.from_pem_file(CANARY_ID, path)


@pytest.mark.parametrize("key_id", ["", "   ", "has space", "tab\tid", "x" * 300, None])
def test_bad_key_ids_are_refused(keypair, key_id):
    with pytest.raises(AuthError, match="key id"):
        Credentials.from_pem_text(key_id, keypair[0].decode())


# ---------------------------------------------------------------- env / text


def test_pem_text_with_literal_backslash_n(keypair, public_key):
    escaped = keypair[0].decode().replace("\n", "\\n")
    assert "\n" not in escaped
    for text in (escaped, f'"{escaped}"', keypair[0].decode(), keypair[0]):
        creds = Credentials.from_pem_text(CANARY_ID, text)
        sig = creds.sign_headers("GET", "/z", now_ms=9)[HEADER_SIGNATURE]
        assert verify_signature(public_key, "9", "GET", "/z", sig)


def test_from_env(tmp_path, keypair):
    assert Credentials.from_env({}) is None
    assert Credentials.from_env({"KALSHI_API_KEY_ID": "  "}) is None
    path = _write(tmp_path / "k.pem", keypair[0], 0o600)
    by_path = Credentials.from_env({"KALSHI_API_KEY_ID": CANARY_ID, "KALSHI_PRIVATE_KEY_PATH": path})
    assert by_path is not None and by_path.key_id == CANARY_ID
    escaped = keypair[0].decode().replace("\n", "\\n")
    by_content = Credentials.from_env({"KALSHI_API_KEY_ID": CANARY_ID, "KALSHI_PRIVATE_KEY_CONTENT": escaped})
    assert by_content is not None and by_content.key_id == CANARY_ID
    with pytest.raises(AuthError, match="only one"):
        Credentials.from_env({"KALSHI_API_KEY_ID": CANARY_ID, "KALSHI_PRIVATE_KEY_PATH": path,
                              "KALSHI_PRIVATE_KEY_CONTENT": escaped})
    with pytest.raises(AuthError, match="neither") as info:
        Credentials.from_env({"KALSHI_API_KEY_ID": CANARY_ID})
    assert CANARY_ID not in str(info.value)
    with pytest.raises(AuthError, match="mode 0644"):
        Credentials.from_env({"KALSHI_API_KEY_ID": CANARY_ID,
                              "KALSHI_PRIVATE_KEY_PATH": _write(tmp_path / "open.pem", keypair[0], 0o644)})


# ---------------------------------------------------------------- no leaks (S2, S3)


def test_repr_str_and_pickling_never_leak(creds, keypair):
    for text in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert "CANA…" in text
        for fragment in _secret_fragments(keypair):
            assert fragment not in text
    assert creds.key_id_masked == "CANA…"
    for attempt in (lambda: pickle.dumps(creds), lambda: copy.copy(creds), lambda: copy.deepcopy(creds)):
        with pytest.raises(TypeError, match="cannot be pickled") as info:
            attempt()
        assert CANARY_ID not in str(info.value)
    assert not hasattr(creds, "__dict__")


def test_secret_filter_redacts_pem_signature_and_key_id(creds, keypair):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(SecretFilter())
    logger = logging.getLogger("test.auth.secretfilter")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        headers = creds.sign_headers("GET", "/trade-api/v2/portfolio/balance", now_ms=1)
        logger.info("headers %s", headers)
        logger.warning("key file content: %s", keypair[0].decode())
        logger.error("KALSHI-ACCESS-SIGNATURE: %s and id %s", headers[HEADER_SIGNATURE], CANARY_ID)
        try:
            raise RuntimeError(f"boom with {CANARY_ID} and {keypair[0].decode()[:80]}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "headers" in out and "failed" in out and "RuntimeError" in out
    for fragment in _secret_fragments(keypair) + [headers[HEADER_SIGNATURE][:30]]:
        assert fragment not in out
    assert "[REDACTED PEM]" in out and "CANA…" in out


def test_secret_filter_extra_ids_and_redact_text():
    filt = SecretFilter(["extra-key-id-0001"])
    filt.register("another-key-id-02")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "ids %s %s", ("extra-key-id-0001", "another-key-id-02"),
                               None)
    assert filt.filter(record) is True
    assert "extra-key-id-0001" not in record.getMessage() and "another-key-id-02" not in record.getMessage()
    assert redact_text("'KALSHI-ACCESS-SIGNATURE': 'abc+/def=='") == "'KALSHI-ACCESS-SIGNATURE': '[REDACTED]'"


# ---------------------------------------------------------------- clock offset (rule 9)


def test_clock_offset_from_date_headers():
    wall = [1_764_000_000_000]
    clock = ClockOffset(samples=3, wall_ms=lambda: wall[0])
    assert clock.offset_ms == 0 and clock.now_ms() == wall[0]
    server_s = 1_764_000_090  # server 90 s ahead
    date = formatdate(server_s, usegmt=True)
    # request sent at local t, answered 200 ms later; server stamps the middle second.
    offset = clock.observe(date, 1_764_000_000_000, 1_764_000_000_200)
    assert offset == 90_000 + 500 - 100
    assert clock.now_ms() == wall[0] + offset
    # Median of the last samples: one outlier does not move it.
    clock.observe(formatdate(server_s, usegmt=True), 1_764_000_000_000, 1_764_000_000_200)
    clock.observe(formatdate(server_s + 3600, usegmt=True), 1_764_000_000_000, 1_764_000_000_200)
    assert clock.offset_ms == 90_400
    # reset=True: only the new sample counts.
    assert clock.observe(formatdate(1_764_000_000, usegmt=True), 1_764_000_000_000, 1_764_000_000_000,
                         reset=True) == 500
    assert clock.sample_count == 1


@pytest.mark.parametrize("header", ["", "garbage", "Mon, 99 Foo 2026 99:99:99 GMT", None, "x" * 200])
def test_clock_offset_ignores_bad_dates(header):
    clock = ClockOffset()
    assert clock.observe(header, 0, 10) is None
    assert clock.offset_ms == 0 and clock.sample_count == 0


def test_credentials_sign_with_corrected_clock(keypair, public_key):
    clock = ClockOffset(wall_ms=lambda: 1_000_000)
    clock.observe(formatdate(1_090, usegmt=True), 1_000_000, 1_000_000)
    creds = Credentials.from_pem_text(CANARY_ID, keypair[0], clock_offset=clock)
    headers = creds.sign_headers("GET", "/p")
    assert headers[HEADER_TIMESTAMP] == str(1_000_000 + 90_500)
    assert verify_signature(public_key, headers[HEADER_TIMESTAMP], "GET", "/p", headers[HEADER_SIGNATURE])


# ---------------------------------------------------------------- server-side helpers


def test_generate_write_and_load(tmp_path):
    private_pem, public_pem = generate_key_pair()
    path = tmp_path / "sub" / "gen.pem"
    path.parent.mkdir()
    write_private_key(path, private_pem)
    assert (path.stat().st_mode & 0o777) == 0o600
    creds = Credentials.from_pem_file("gen-key", path)
    assert creds.public_key_pem() == public_pem
    with pytest.raises(AuthError, match="refusing to overwrite"):
        write_private_key(path, private_pem)
    write_private_key(path, private_pem, overwrite=True)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["gen.pem"]  # no temp file left behind
    pub = load_public_key(public_pem.decode())
    sig = creds.sign_headers("DELETE", "/q?x=1", now_ms=11)[HEADER_SIGNATURE]
    assert verify_signature(pub, "11", "DELETE", "/q", sig)


@pytest.mark.parametrize("pem", [b"", b"garbage", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"])
def test_load_public_key_refuses_garbage(pem):
    with pytest.raises(AuthError):
        load_public_key(pem)


def test_load_public_key_refuses_ec():
    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(AuthError, match="not an RSA"):
        load_public_key(pem)
