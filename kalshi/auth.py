"""Kalshi API-key authentication: RSA-PSS request signing, key loading, server clock offset.

Client side: ``Credentials`` loads the private key (file checked on the opened fd for 0600-style
permissions, or PEM text from the environment) and produces the three ``KALSHI-ACCESS-*`` headers
over ``timestamp_ms + METHOD + path_without_query``. ``ClockOffset`` estimates the server clock
from HTTP ``Date`` headers so signatures stay inside Kalshi's ±5 s window on a skewed host.

Server side (the local exchange): ``load_public_key``, ``verify_signature``, ``generate_key_pair``
and ``write_private_key``.

Secrets never leave ``Credentials``: repr/str show a masked key id, pickling is refused, errors name
the problem but never the content, and ``SecretFilter`` scrubs PEM blocks, signatures (also bare long
base64) and known key ids from log records, and escapes and bounds them (exchange text cannot forge lines).
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import functools
import logging
import os
import re
import stat
import statistics
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = [
    "AuthError",
    "Credentials",
    "ClockOffset",
    "SecretFilter",
    "redact_text",
    "sanitize_log_text",
    "strip_query",
    "load_public_key",
    "verify_signature",
    "generate_key_pair",
    "write_private_key",
    "HEADER_KEY",
    "HEADER_TIMESTAMP",
    "HEADER_SIGNATURE",
]

HEADER_KEY = "KALSHI-ACCESS-KEY"
HEADER_TIMESTAMP = "KALSHI-ACCESS-TIMESTAMP"
HEADER_SIGNATURE = "KALSHI-ACCESS-SIGNATURE"

MAX_KEY_FILE_BYTES = 64 * 1024  # a 4096-bit PEM is ~3.3 KiB; anything huge is not a key
MIN_RSA_BITS = 2048

_PSS_SIGN = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
# Verification accepts any salt length (AUTO), which includes Kalshi's 32-byte digest-length salt.
_PSS_VERIFY = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)


class AuthError(Exception):
    """A credential or key problem. The message names the problem, never key material."""


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _mask(key_id: str) -> str:
    return key_id[:4] + "…" if len(key_id) > 4 else "…"


def strip_query(path: str) -> str:
    """The signed part of a request target: the path without ``?query`` or ``#fragment``."""
    return path.split("?", 1)[0].split("#", 1)[0]


# ---------------------------------------------------------------- known secrets for redaction

_known_lock = threading.Lock()
_known_key_ids: set[str] = set()


def _register_key_id(key_id: str) -> None:
    with _known_lock:
        _known_key_ids.add(key_id)


_PEM_RE = re.compile(r"-----BEGIN [A-Z0-9 ]*-----.*?(?:-----END [A-Z0-9 ]*-----|\Z)", re.DOTALL)
_SIG_RE = re.compile(r"(KALSHI-ACCESS-SIGNATURE['\"]?\s*[:=]\s*['\"]?)[A-Za-z0-9+/=_-]+", re.IGNORECASE)
# A bare signature (344 base64 characters for RSA-2048) or an unwrapped key body, logged without its header
# name or PEM armour: no legitimate log text holds a base64 run this long.
_LONG_B64_RE = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{256,}={0,2}")  # tried at run starts only

MAX_LOG_MESSAGE_CHARS = 4000  # one log message; exchange-supplied floods are cut (S10)
MAX_LOG_TRACEBACK_CHARS = 16000  # a traceback keeps its tail, where the error is


def redact_text(text: str, extra_key_ids: Iterable[str] = ()) -> str:
    """Remove PEM blocks, signature values (with or without their header name), long base64 runs and every
    registered key id from ``text``."""
    if "-----BEGIN" in text:
        text = _PEM_RE.sub("[REDACTED PEM]", text)
    if "SIGNATURE" in text.upper():
        text = _SIG_RE.sub(r"\1[REDACTED]", text)
    if len(text) >= 256:
        text = _LONG_B64_RE.sub("[REDACTED BASE64]", text)
    with _known_lock:
        ids = set(_known_key_ids)
    ids.update(extra_key_ids)
    present = frozenset(k for k in ids if k and k in text)
    if present:
        text = _key_id_pattern(present).sub(lambda m: _mask(m.group()), text)
    return text


@functools.lru_cache(maxsize=64)
def _key_id_pattern(ids: frozenset[str]) -> re.Pattern[str]:
    """Whole-token matches only: a short key id (a test's "k") must not mask every "k" in every line."""
    alternatives = "|".join(re.escape(k) for k in sorted(ids, key=len, reverse=True))
    return re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])")


def _escape(char: str) -> str:
    return ascii(char)[1:-1]


def sanitize_log_text(text: str, limit: int, *, keep_newlines: bool = False, keep_tail: bool = False) -> str:
    """``text`` safe to write as log output: control and other non-printable characters escaped (so text from
    the exchange cannot forge log lines or drive the terminal) and cut to ``limit`` characters."""
    if not text.isprintable():
        text = "".join(
            c if c.isprintable() or (keep_newlines and c == "\n") else _escape(c) for c in text
        )
    if len(text) > limit:
        cut = len(text) - limit
        text = f"[{cut} chars cut]..." + text[-limit:] if keep_tail else text[:limit] + f"...[{cut} chars cut]"
    return text


class SecretFilter(logging.Filter):
    """Logging filter that redacts secrets in place and keeps each record one bounded line; it never
    drops a record.

    Key ids of every ``Credentials`` created in this process are redacted automatically; more can be
    passed in or added with ``register``. Install it on handlers (``handler.addFilter``) so records
    from every logger pass through it. Messages also get non-printable characters escaped and are cut to
    ``max_chars`` (S10: tickers and error strings come from the exchange); tracebacks keep their newlines
    and their last ``max_traceback_chars``.
    """

    def __init__(
        self,
        key_ids: Iterable[str] = (),
        name: str = "",
        *,
        max_chars: int = MAX_LOG_MESSAGE_CHARS,
        max_traceback_chars: int = MAX_LOG_TRACEBACK_CHARS,
    ) -> None:
        super().__init__(name)
        self._extra = {k for k in key_ids if k}
        self._max = max_chars
        self._max_tb = max_traceback_chars

    def register(self, key_id: str) -> None:
        if key_id:
            self._extra.add(key_id)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: redact the raw template instead
            message = str(record.msg)
        clean = sanitize_log_text(redact_text(message, self._extra), self._max)
        if clean != message:
            record.msg = clean
            record.args = None
        if record.exc_info and not record.exc_text:
            # Format the traceback now so the redacted text is what handlers print.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._clean_block(record.exc_text)
        if record.stack_info:
            record.stack_info = self._clean_block(record.stack_info)
        return True

    def _clean_block(self, text: str) -> str:
        return sanitize_log_text(redact_text(text, self._extra), self._max_tb, keep_newlines=True, keep_tail=True)


# ---------------------------------------------------------------- clock offset


class ClockOffset:
    """Server-minus-local clock offset estimated from HTTP ``Date`` headers (median of recent samples).

    ``Date`` has one-second resolution, so the server time is taken as the middle of that second and
    compared with the middle of the request (``(sent + received) / 2``). Thread-safe.
    """

    def __init__(self, samples: int = 5, wall_ms=_wall_ms) -> None:
        if samples < 1:
            raise ValueError("samples must be >= 1")
        self._samples: deque[int] = deque(maxlen=samples)
        self._lock = threading.Lock()
        self._offset = 0
        self._wall_ms = wall_ms

    def observe(self, date_header: str, sent_ms: int, received_ms: int, *, reset: bool = False) -> int | None:
        """Add one sample; returns the new offset, or None when the header is unusable.

        ``reset=True`` drops older samples first (used after the server rejected our timestamp: the
        old estimate is evidently wrong, e.g. the host clock jumped).
        """
        server_ms = _parse_http_date_ms(date_header)
        if server_ms is None or received_ms < sent_ms:
            return None
        sample = server_ms + 500 - (sent_ms + received_ms) // 2
        with self._lock:
            if reset:
                self._samples.clear()
            self._samples.append(sample)
            self._offset = int(statistics.median_low(self._samples))
            return self._offset

    @property
    def offset_ms(self) -> int:
        with self._lock:
            return self._offset

    @property
    def sample_count(self) -> int:
        with self._lock:
            return len(self._samples)

    def wall_ms(self) -> int:
        """The uncorrected local wall clock, Unix milliseconds (injectable for tests)."""
        return self._wall_ms()

    def now_ms(self) -> int:
        """Wall clock corrected to the server's clock, in Unix milliseconds."""
        return self._wall_ms() + self.offset_ms

    def __repr__(self) -> str:
        return f"ClockOffset(offset_ms={self.offset_ms}, samples={self.sample_count})"


def _parse_http_date_ms(value: object) -> int | None:
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None or parsed.tzinfo is None:
        return None
    try:
        return int(parsed.timestamp()) * 1000
    except (OverflowError, OSError, ValueError):
        return None


# ---------------------------------------------------------------- credentials


def _check_key_id(key_id: object) -> str:
    if not isinstance(key_id, str) or not key_id.strip():
        raise AuthError("API key id is empty")
    key_id = key_id.strip()
    if len(key_id) > 256 or not key_id.isprintable() or any(c.isspace() for c in key_id):
        raise AuthError("API key id contains invalid characters")
    return key_id


def _load_private_key(data: bytes, source: str) -> rsa.RSAPrivateKey:
    text = data.strip()
    if not text:
        raise AuthError(f"{source}: private key is empty")
    if b"-----BEGIN" not in text:
        raise AuthError(f"{source}: not a PEM private key (no BEGIN line)")
    if b"PRIVATE KEY-----" not in text:
        if b"PUBLIC KEY-----" in text or b"CERTIFICATE-----" in text:
            raise AuthError(f"{source}: this is a public key or certificate, not a private key")
        raise AuthError(f"{source}: not a PEM private key")
    if b"ENCRYPTED" in text:
        raise AuthError(f"{source}: private key is encrypted; provide an unencrypted PKCS#8 or PKCS#1 key")
    try:
        key = serialization.load_pem_private_key(text, password=None)
    except TypeError:
        raise AuthError(f"{source}: private key is encrypted; provide an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise AuthError(f"{source}: private key PEM could not be parsed") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        kind = type(key).__name__.replace("_", "").replace("PrivateKey", "") or "non-RSA"
        raise AuthError(f"{source}: unsupported key type {kind}; Kalshi API keys are RSA")
    if key.key_size < MIN_RSA_BITS:
        raise AuthError(f"{source}: RSA key is {key.key_size} bits; at least {MIN_RSA_BITS} required")
    return key


def _read_key_file(path: str | os.PathLike[str]) -> bytes:
    """Open once, then check the opened fd: a regular, non-empty file readable only by its owner."""
    shown = Path(path).name or str(path)
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise AuthError(f"private key file {shown!r} does not exist") from None
    except IsADirectoryError:
        raise AuthError(f"private key path {shown!r} is a directory") from None
    except PermissionError:
        raise AuthError(f"private key file {shown!r} is not readable by this user") from None
    except OSError as exc:
        raise AuthError(f"private key file {shown!r} cannot be opened ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise AuthError(f"private key path {shown!r} is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise AuthError(f"private key path {shown!r} is not a regular file")
        if st.st_mode & 0o077:
            raise AuthError(
                f"private key file {shown!r} has mode {stat.S_IMODE(st.st_mode):04o}; it must not be "
                "readable by group or others (chmod 600)"
            )
        if st.st_size == 0:
            raise AuthError(f"private key file {shown!r} is empty")
        if st.st_size > MAX_KEY_FILE_BYTES:
            raise AuthError(f"private key file {shown!r} is too large to be a key")
        chunks = []
        total = 0
        while True:
            chunk = os.read(fd, 16384)
            if not chunk:
                break
            total += len(chunk)
            if total > MAX_KEY_FILE_BYTES:
                raise AuthError(f"private key file {shown!r} is too large to be a key")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class Credentials:
    """An API key id plus its RSA private key; signs requests. Never reveals either."""

    __slots__ = ("_key_id", "_key", "_clock")

    def __init__(self, key_id: str, private_key: rsa.RSAPrivateKey, clock_offset: ClockOffset | None = None) -> None:
        key_id = _check_key_id(key_id)
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise AuthError("private key must be an RSA private key")
        self._key_id = key_id
        self._key = private_key
        self._clock = clock_offset
        _register_key_id(key_id)

    # -- construction

    @classmethod
    def from_pem_text(cls, key_id: str, text: str | bytes, clock_offset: ClockOffset | None = None) -> Credentials:
        """PEM text, e.g. from an environment variable; literal ``\\n`` sequences become newlines."""
        if isinstance(text, str):
            text = text.strip().strip("'\"").replace("\\r\\n", "\n").replace("\\n", "\n")
            data = text.encode("utf-8", "replace")
        elif isinstance(text, (bytes, bytearray)):
            data = bytes(text)
        else:
            raise AuthError("private key text must be str or bytes")
        return cls(_check_key_id(key_id), _load_private_key(data, "private key text"), clock_offset)

    @classmethod
    def from_pem_file(
        cls, key_id: str, path: str | os.PathLike[str], clock_offset: ClockOffset | None = None
    ) -> Credentials:
        key_id = _check_key_id(key_id)
        data = _read_key_file(path)
        shown = Path(path).name or "key file"
        return cls(key_id, _load_private_key(data, f"private key file {shown!r}"), clock_offset)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], clock_offset: ClockOffset | None = None) -> Credentials | None:
        """``KALSHI_API_KEY_ID`` plus ``KALSHI_PRIVATE_KEY_PATH`` or ``KALSHI_PRIVATE_KEY_CONTENT``.

        Returns None when no key id is set (public-data-only mode).
        """
        key_id = (environ.get("KALSHI_API_KEY_ID") or "").strip()
        if not key_id:
            return None
        path = (environ.get("KALSHI_PRIVATE_KEY_PATH") or "").strip()
        content = environ.get("KALSHI_PRIVATE_KEY_CONTENT") or ""
        if path and content.strip():
            raise AuthError("set only one of KALSHI_PRIVATE_KEY_PATH and KALSHI_PRIVATE_KEY_CONTENT")
        if path:
            return cls.from_pem_file(key_id, os.path.expanduser(path), clock_offset)
        if content.strip():
            return cls.from_pem_text(key_id, content, clock_offset)
        raise AuthError("KALSHI_API_KEY_ID is set but neither KALSHI_PRIVATE_KEY_PATH nor KALSHI_PRIVATE_KEY_CONTENT is")

    # -- properties

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def key_id_masked(self) -> str:
        return _mask(self._key_id)

    @property
    def clock_offset(self) -> ClockOffset | None:
        return self._clock

    def public_key_pem(self) -> bytes:
        """The matching public key (SubjectPublicKeyInfo PEM), e.g. to register with the local exchange."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    # -- signing

    def now_ms(self) -> int:
        return self._clock.now_ms() if self._clock is not None else _wall_ms()

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self._key.sign(message, _PSS_SIGN, hashes.SHA256())).decode("ascii")

    def sign_headers(self, method: str, path: str, now_ms: int | None = None) -> dict[str, str]:
        """The three Kalshi auth headers for ``METHOD path`` (query stripped; full path incl. prefix)."""
        if not isinstance(method, str) or not method.isalpha():
            raise ValueError("method must be an HTTP method name")
        if "://" in path:
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        path = strip_query(path)
        if not path.startswith("/"):
            raise ValueError("path must start with '/' (the full path including /trade-api/v2)")
        ts = str(int(now_ms) if now_ms is not None else self.now_ms())
        signature = self.sign(f"{ts}{method.upper()}{path}".encode("utf-8"))
        return {HEADER_KEY: self._key_id, HEADER_TIMESTAMP: ts, HEADER_SIGNATURE: signature}

    # -- no leaks

    def __repr__(self) -> str:
        return f"Credentials(key_id={self.key_id_masked!r}, key=<redacted>)"

    __str__ = __repr__

    def __reduce_ex__(self, protocol: object) -> object:
        raise TypeError("Credentials cannot be pickled or copied")

    def __reduce__(self) -> object:
        raise TypeError("Credentials cannot be pickled or copied")

    def __getstate__(self) -> object:
        raise TypeError("Credentials cannot be pickled or copied")


# ---------------------------------------------------------------- server side (local exchange)


def load_public_key(pem: bytes | str) -> rsa.RSAPublicKey:
    """A PEM public key (SubjectPublicKeyInfo or PKCS#1) for verifying client signatures."""
    if isinstance(pem, str):
        pem = pem.encode("utf-8")
    try:
        key = serialization.load_pem_public_key(bytes(pem).strip())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise AuthError("public key PEM could not be parsed") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise AuthError("public key is not an RSA key")
    return key


def verify_signature(public_key, timestamp: str, method: str, path: str, signature_b64: str) -> bool:
    """True iff ``signature_b64`` is a valid RSA-PSS/SHA-256 signature of ``timestamp + method +
    path_without_query``. The method is used as given (a lower-case signed method fails against the
    real upper-case request method, as on Kalshi). Never raises."""
    try:
        if not (isinstance(timestamp, str) and isinstance(method, str) and isinstance(path, str)):
            return False
        if not isinstance(signature_b64, str) or not signature_b64 or len(signature_b64) > 4096:
            return False
        signature = base64.b64decode(signature_b64.encode("ascii"), validate=True)
        message = f"{timestamp}{method}{strip_query(path)}".encode("utf-8")
        public_key.verify(signature, message, _PSS_VERIFY, hashes.SHA256())
        return True
    except (InvalidSignature, binascii.Error, ValueError, TypeError, UnicodeError):
        return False
    except Exception:  # noqa: BLE001 - a verifier must answer False, not crash the server
        return False


def generate_key_pair(bits: int = 2048) -> tuple[bytes, bytes]:
    """A fresh RSA key pair: (private key PKCS#8 PEM, public key SubjectPublicKeyInfo PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def write_private_key(path: str | os.PathLike[str], pem: bytes, *, overwrite: bool = False) -> None:
    """Write a private key file created with mode 0600 (never briefly world-readable)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise AuthError(f"refusing to overwrite existing key file {path.name!r}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(pem)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
