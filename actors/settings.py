"""Application settings: ``actor_config.toml``, overlaid by the environment (the seed's variable names, and
``.env`` through python-dotenv), then by command-line flags. Everything is validated at start: a bad value
stops start-up with a message that names the setting and what is allowed, and never prints a secret.

The table ``SETTINGS`` is the single source of truth: each entry names the TOML key, the environment variable,
the type, the default and the rule. ``python main.py --help-config`` prints it.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from kalshi.units import safe_repr

__all__ = [
    "ConfigError",
    "Setting",
    "SETTINGS",
    "Settings",
    "load_settings",
    "KALSHI_HOSTS",
    "LIVE_OPT_IN_ENV",
    "LIVE_OPT_IN_VALUE",
]

# Production live trading needs this exact value in the environment AND `--execution live` with the typed
# confirmation on the command line.
LIVE_OPT_IN_ENV = "V3_ALLOW_LIVE_TRADING"
LIVE_OPT_IN_VALUE = "yes-real-money"

# Exact host allowlist per Kalshi environment (protocol doc §1.5). Demo and production never mix.
KALSHI_HOSTS = {
    "demo": {
        "rest": ("external-api.demo.kalshi.co", "demo-api.kalshi.co"),
        "ws": ("external-api-ws.demo.kalshi.co", "demo-api.kalshi.co"),
        "default_rest": "https://external-api.demo.kalshi.co/trade-api/v2",
        "default_ws": "wss://external-api-ws.demo.kalshi.co/trade-api/ws/v2",
    },
    "prod": {
        "rest": ("external-api.kalshi.com", "api.elections.kalshi.com"),
        "ws": ("external-api-ws.kalshi.com", "api.elections.kalshi.com"),
        "default_rest": "https://external-api.kalshi.com/trade-api/v2",
        "default_ws": "wss://external-api-ws.kalshi.com/trade-api/ws/v2",
    },
}

ENVIRONMENTS = ("local", "demo", "prod")
STRATEGIES = ("hold", "whale_follower", "paper_test", "rl_model")
EXECUTIONS = ("exchange", "paper", "live")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# The seed's ENVIRONMENT values: "production" is prod, "paper" was its demo-exchange mode.
_ENV_ALIASES = {"production": "prod", "paper": "demo"}


class ConfigError(ValueError):
    """A setting that is missing, malformed or not allowed. The text never contains a secret value."""


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _int(text: str) -> int:
    stripped = text.strip()
    if not stripped.lstrip("-").isdigit() or not stripped.isascii():
        raise ValueError("expected a whole number")
    return int(stripped)


def _tickers(text: str) -> tuple[str, ...]:
    items = tuple(t.strip().upper() for t in text.split(",") if t.strip())
    for t in items:
        if len(t) > 100 or not all(c.isascii() and (c.isalnum() or c in "-._") for c in t):
            raise ValueError(f"ticker {safe_repr(t)} is not a Kalshi ticker")
    return items


def _str(text: str) -> str:
    return text.strip()


@dataclass(frozen=True, slots=True)
class Setting:
    key: str  # attribute on Settings and key inside the TOML section
    section: str
    env: str | None
    parse: Callable[[str], Any]
    default: Any
    doc: str
    check: Callable[[Any], str | None] = lambda v: None  # returns a problem description or None
    secret: bool = False


def _positive(v: int) -> str | None:
    return None if v > 0 else "must be greater than zero"


def _non_negative(v: int) -> str | None:
    return None if v >= 0 else "must not be negative"


def _one_of(options: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda v: None if v in options else f"must be one of {', '.join(options)}"


def _port(v: int) -> str | None:
    return None if 0 <= v <= 65535 else "must be a TCP port (0-65535)"


def _cents_price(v: int) -> str | None:
    return None if 0 <= v <= 100 else "must be a price in cents between 0 and 100"


SETTINGS: tuple[Setting, ...] = (
    # --- connection -----------------------------------------------------------------------------------
    Setting("environment", "system", "ENVIRONMENT", lambda s: _ENV_ALIASES.get(s.strip().lower(), s.strip().lower()), "local",
            "local (built-in exchange), demo (Kalshi demo) or prod (Kalshi production)",
            _one_of(ENVIRONMENTS)),
    Setting("api_url", "system", "KALSHI_API_URL", _str, "",
            "REST base URL ending in /trade-api/v2; empty = the environment's default"),
    Setting("ws_url", "system", "KALSHI_WS_URL", _str, "",
            "WebSocket URL ending in /trade-api/ws/v2; empty = the environment's default"),
    Setting("api_key_id", "system", "KALSHI_API_KEY_ID", _str, "", "Kalshi API key id"),
    Setting("private_key_path", "system", "KALSHI_PRIVATE_KEY_PATH", _str, "",
            "PEM file of the API private key (mode 0600)"),
    Setting("private_key_content", "system", "KALSHI_PRIVATE_KEY_CONTENT", _str, "",
            "PEM text of the API private key (literal \\n allowed)", secret=True),
    Setting("data_dir", "system", "V3_DATA_DIR", _str, "data",
            "folder for the journal, supervisor logs and the local exchange's keys and state"),
    Setting("log_level", "system", "V3_LOG_LEVEL", lambda s: s.strip().upper(), "INFO",
            "DEBUG, INFO, WARNING or ERROR", _one_of(LOG_LEVELS)),
    # --- markets --------------------------------------------------------------------------------------
    Setting("rl_mode", "markets", "RL_MODE", _str, "discovery",
            "discovery (most active open markets) or config (RL_MARKET_TICKERS)",
            _one_of(("discovery", "config"))),
    Setting("market_tickers", "markets", "RL_MARKET_TICKERS", _tickers, (),
            "comma-separated market tickers for config mode"),
    Setting("orderbook_market_limit", "markets", "RL_ORDERBOOK_MARKET_LIMIT", _int, 10,
            "how many markets to keep order books for", _positive),
    # --- trading --------------------------------------------------------------------------------------
    Setting("enable_trading_client", "trading", "V3_ENABLE_TRADING_CLIENT", _bool, True,
            "connect the trading client (orders, positions, balance)"),
    Setting("trading_mode", "trading", "V3_TRADING_MODE", _str, "paper",
            "paper (the seed's name for non-live trading) or live", _one_of(("paper", "live"))),
    Setting("execution", "trading", "V3_EXECUTION", _str, "",
            "exchange, paper or live; empty = exchange for local/demo, paper for prod",
            lambda v: None if v == "" or v in EXECUTIONS else f"must be one of {', '.join(EXECUTIONS)}"),
    Setting("strategy", "trading", "V3_TRADING_STRATEGY", _str, "whale_follower",
            "hold, whale_follower, paper_test (rl_model is refused until a model exists)",
            _one_of(STRATEGIES)),
    Setting("cleanup_on_startup", "trading", "V3_CLEANUP_ON_STARTUP", _bool, True,
            "cancel our orphaned orders (not in our order group) at start"),
    Setting("order_group_contracts_limit", "trading", "V3_ORDER_GROUP_LIMIT", _int, 100,
            "contracts the session's order group may match per 15 s before Kalshi cancels it", _positive),
    Setting("cycle_seconds", "trading", "V3_CYCLE_SECONDS", _int, 30,
            "the seed's trading cycle interval for cycle-based strategies", _positive),
    # --- whales ---------------------------------------------------------------------------------------
    Setting("enable_whale_detection", "whale", "V3_ENABLE_WHALE_DETECTION", _bool, True,
            "watch the public trade stream for whales"),
    Setting("whale_queue_size", "whale", "WHALE_QUEUE_SIZE", _int, 10, "whales kept in the queue", _positive),
    Setting("whale_window_minutes", "whale", "WHALE_WINDOW_MINUTES", _int, 5,
            "sliding window of the whale queue", _positive),
    Setting("whale_min_size_cents", "whale", "WHALE_MIN_SIZE_CENTS", _int, 10_000,
            "minimum whale size (max of cost and payout) in cents", _positive),
    Setting("whale_max_trades_per_minute", "whale", "WHALE_MAX_TRADES_PER_MINUTE", _int, 3,
            "token bucket capacity for following", _positive),
    Setting("whale_token_refill_seconds", "whale", "WHALE_TOKEN_REFILL_SECONDS", _int, 20,
            "one token every N seconds", _positive),
    Setting("whale_max_age_seconds", "whale", "WHALE_MAX_AGE_SECONDS", _int, 120,
            "never follow a whale older than this", _positive),
    Setting("follow_count", "whale", "WHALE_FOLLOW_CONTRACTS", _int, 5,
            "contracts bought per followed whale", _positive),
    Setting("max_slippage_cents", "whale", "WHALE_MAX_SLIPPAGE_CENTS", _int, 3,
            "no chase: skip if our price is worse than the whale's by more than this", _non_negative),
    Setting("price_band_min_cents", "whale", "WHALE_PRICE_BAND_MIN_CENTS", _int, 5,
            "skip whales priced at or below this", _cents_price),
    Setting("price_band_max_cents", "whale", "WHALE_PRICE_BAND_MAX_CENTS", _int, 95,
            "skip whales priced at or above this", _cents_price),
    # --- risk -----------------------------------------------------------------------------------------
    Setting("max_open_positions", "risk", "RISK_MAX_OPEN_POSITIONS", _int, 20,
            "stop following when this many markets hold a position", _positive),
    Setting("max_cost_per_market_cents", "risk", "RISK_MAX_COST_PER_MARKET_CENTS", _int, 2_500,
            "maximum cost basis in one market", _positive),
    Setting("max_cost_per_event_cents", "risk", "RISK_MAX_COST_PER_EVENT_CENTS", _int, 5_000,
            "maximum cost basis across one event's markets", _positive),
    Setting("max_daily_loss_cents", "risk", "RISK_MAX_DAILY_LOSS_CENTS", _int, 10_000,
            "kill switch: no new follows after this realized + unrealized loss in a UTC day", _positive),
    # --- status API -----------------------------------------------------------------------------------
    Setting("status_host", "status_api", "V3_HOST", _str, "127.0.0.1",
            "bind address of the status API (non-loopback needs V3_STATUS_TOKEN)"),
    Setting("status_port", "status_api", "V3_PORT", _int, 8005, "status API port (0 = any free port)", _port),
    Setting("status_token", "status_api", "V3_STATUS_TOKEN", _str, "",
            "bearer token required when the status API is not on loopback", secret=True),
)

_BY_KEY = {s.key: s for s in SETTINGS}


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated settings. ``values`` is read-only; secrets are masked in repr."""

    values: Mapping[str, Any]
    sources: Mapping[str, str] = field(default_factory=dict)  # key -> "default" | "toml" | "env" | "flag"

    def __getattr__(self, name: str) -> Any:
        try:
            return object.__getattribute__(self, "values")[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        shown = {k: ("<redacted>" if _BY_KEY[k].secret and v else v) for k, v in self.values.items()}
        for key in ("api_url", "ws_url"):
            if shown.get(key):
                shown[key] = _strip_url(shown[key])
        if shown.get("api_key_id"):
            shown["api_key_id"] = str(shown["api_key_id"])[:4] + "…"
        return f"Settings({shown})"

    __str__ = __repr__

    @property
    def has_credentials(self) -> bool:
        return bool(self.api_key_id) and bool(self.private_key_path or self.private_key_content)

    @property
    def effective_execution(self) -> str:
        if self.execution:
            return self.execution
        return "paper" if self.environment == "prod" else "exchange"

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)


def _strip_url(url: str) -> str:
    """A URL without user info, query or fragment: safe to show in errors and reprs."""
    try:
        parts = urlsplit(url)
        return parts._replace(netloc=parts.hostname or "", query="", fragment="").geturl() if parts.netloc else url
    except ValueError:
        return "<unparseable URL>"


def _fail(setting: Setting, problem: str, raw: Any, origin: str) -> ConfigError:
    where = f"{setting.env}" if origin == "env" and setting.env else f"[{setting.section}] {setting.key}"
    shown = "" if setting.secret else f" (got {safe_repr(raw)})"
    return ConfigError(f"setting {where}: {problem}{shown}")


def _coerce(setting: Setting, raw: Any, origin: str) -> Any:
    """Parse a raw TOML/env/flag value with the setting's parser and rule."""
    if isinstance(raw, bool) or not isinstance(raw, str):
        if isinstance(raw, (list, tuple)) and setting.parse is _tickers:
            raw = ",".join(str(x) for x in raw)
        elif isinstance(raw, bool) and setting.parse is _bool:
            raw = "true" if raw else "false"
        elif isinstance(raw, int) and not isinstance(raw, bool) and setting.parse is _int:
            raw = str(raw)
        else:
            raise _fail(setting, f"has the wrong type {type(raw).__name__}", raw, origin)
    try:
        value = setting.parse(raw)
    except ValueError as exc:
        raise _fail(setting, str(exc), raw, origin) from None
    problem = setting.check(value)
    if problem:
        raise _fail(setting, problem, raw, origin)
    return value


def _validate_combination(values: dict[str, Any]) -> None:
    env = values["environment"]
    if values["strategy"] == "rl_model":
        raise ConfigError(
            "setting V3_TRADING_STRATEGY: rl_model needs a trained model and none exists yet; "
            "use hold, whale_follower or paper_test"
        )
    if values["price_band_min_cents"] >= values["price_band_max_cents"]:
        raise ConfigError("settings WHALE_PRICE_BAND_MIN_CENTS/MAX_CENTS: the minimum must be below the maximum")
    if values["rl_mode"] == "config" and not values["market_tickers"]:
        raise ConfigError("setting RL_MARKET_TICKERS: config mode needs at least one ticker")
    execution = values["execution"] or ("paper" if env == "prod" else "exchange")
    if execution == "live" and env != "prod":
        raise ConfigError("setting V3_EXECUTION: live is only for --env prod; local and demo use exchange")
    if execution == "paper" and env == "local":
        raise ConfigError("setting V3_EXECUTION: paper execution is for production data; local uses the exchange")
    if env in ("demo", "prod"):
        hosts = KALSHI_HOSTS[env]
        for key, kind in (("api_url", "rest"), ("ws_url", "ws")):
            url = values[key] or hosts[f"default_{kind}"]
            parts = urlsplit(url)
            extra = (
                "a user name or password" if parts.username is not None or parts.password is not None
                else "a query" if parts.query else "a fragment" if parts.fragment else None
            )
            if extra:  # never echoed: it may hold a secret; Kalshi authenticates by signature only
                raise ConfigError(f"setting {_BY_KEY[key].env}: the URL must not contain {extra}")
            url = _strip_url(url)
            scheme = "https" if kind == "rest" else "wss"
            if parts.scheme != scheme or parts.hostname not in hosts[kind]:
                other = "prod" if env == "demo" else "demo"
                hint = " (that host belongs to Kalshi " + other + ")" if parts.hostname in KALSHI_HOSTS[other][kind] else ""
                raise ConfigError(
                    f"setting {_BY_KEY[key].env}: {safe_repr(url, 80)} is not an allowed {env} {kind} URL{hint}; "
                    f"allowed hosts: {', '.join(hosts[kind])} over {scheme}://"
                )
        if not (values["api_key_id"] and (values["private_key_path"] or values["private_key_content"])):
            raise ConfigError(
                f"--env {env} needs credentials: set KALSHI_API_KEY_ID and KALSHI_PRIVATE_KEY_PATH "
                "(or KALSHI_PRIVATE_KEY_CONTENT)"
            )
    if values["status_host"] not in ("127.0.0.1", "::1", "localhost") and not values["status_token"]:
        raise ConfigError("setting V3_HOST: binding the status API beyond loopback requires V3_STATUS_TOKEN")


def load_settings(
    config_path: str | Path | None = "actor_config.toml",
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    dotenv_path: str | Path | None = ".env",
) -> Settings:
    """Defaults → TOML → ``.env`` (never overriding the real environment) → environment → flags."""
    env: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        from dotenv import dotenv_values

        env.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    env.update(os.environ if environ is None else environ)

    toml: dict[str, Any] = {}
    if config_path is not None:
        path = Path(config_path)
        if path.is_file():
            try:
                with path.open("rb") as fh:
                    toml = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        elif str(config_path) != "actor_config.toml":
            raise ConfigError(f"config file {safe_repr(str(config_path), 200)} does not exist")

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for s in SETTINGS:
        values[s.key], sources[s.key] = s.default, "default"
        section = toml.get(s.section)
        if isinstance(section, dict) and s.key in section:
            values[s.key], sources[s.key] = _coerce(s, section[s.key], "toml"), "toml"
        if s.env and env.get(s.env, "") != "":
            values[s.key], sources[s.key] = _coerce(s, env[s.env], "env"), "env"
        if flags and flags.get(s.key) is not None:
            values[s.key], sources[s.key] = _coerce(s, flags[s.key], "flag"), "flag"
    _validate_combination(values)
    return Settings(MappingProxyType(values), MappingProxyType(sources))


def describe_settings() -> str:
    """Human-readable list of every setting (for --help-config and the README)."""
    lines = []
    for s in SETTINGS:
        default = "" if s.secret else f" (default: {s.default!r})"
        env = f" / ${s.env}" if s.env else ""
        lines.append(f"[{s.section}] {s.key}{env}{default}\n    {s.doc}")
    return "\n".join(lines)
