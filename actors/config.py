"""Loading and validating the ``[supervisor]`` and ``[actors.<name>]`` sections of actor_config.toml.

Other sections (whale, risk, ...) belong to other modules and are ignored here. Supervision keys are
checked strictly (unknown key, wrong type or out-of-range value → ``ConfigError`` naming the field);
any other key in an ``[actors.<name>]`` section is passed to that actor untouched as ``settings``.
Durations are seconds in the file and integer nanoseconds in the loaded values.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

NS = 1_000_000_000

RestartType = Literal["permanent", "transient", "temporary"]
HangPolicy = Literal["restart", "error"]


class ConfigError(ValueError):
    """Invalid configuration; the message names the field (values are shown only when harmless)."""


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How the supervisor runs one child actor (OTP child spec)."""

    name: str
    start_order: int = 100
    restart: RestartType = "permanent"
    shutdown_timeout_ns: int = 5 * NS
    on_hang: HangPolicy = "restart"
    critical: bool = False
    feed: bool = False  # reports FeedReady/FeedDown; critical feeds gate ORDERBOOK_CONNECT
    ping_timeout_ns: int = 10 * NS
    ticks: bool = True  # the supervisor forwards Tick to it
    enabled: bool = True
    class_path: str | None = None  # "package.module:Class" when no factory is given in code
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    max_restarts: int = 5
    restart_window_ns: int = 60 * NS
    backoff_initial_ns: int = NS // 2
    backoff_max_ns: int = 30 * NS
    backoff_multiplier: float = 2.0
    backoff_jitter: float = 0.2  # ± fraction of the delay
    backoff_reset_after_ns: int = 60 * NS
    ping_interval_ns: int = 5 * NS
    error_cooldown_ns: int = 30 * NS
    max_errors: int = 3
    error_window_ns: int = 600 * NS
    trading_enabled: bool = True
    trading_client: str = "whale_executor"  # whose TradingClientReady counts; its hang → ERROR
    sync_targets: tuple[str, ...] = ("whale_executor",)  # told SyncAccount in KALSHI_DATA_SYNC
    notify: tuple[str, ...] = ()  # told SystemStateChanged and TradingGateChanged
    log_file: str = "supervisor.jsonl"
    tick_interval_ns: int = NS // 10
    report_interval_ns: int = NS // 2  # how often SupervisorReport goes to the notify peers


_SUPERVISOR_KEYS: dict[str, tuple[str, type | tuple[type, ...]]] = {
    # toml key: (field, accepted python type)
    "max_restarts": ("max_restarts", int),
    "restart_window_s": ("restart_window_ns", (int, float)),
    "backoff_initial_s": ("backoff_initial_ns", (int, float)),
    "backoff_max_s": ("backoff_max_ns", (int, float)),
    "backoff_multiplier": ("backoff_multiplier", (int, float)),
    "backoff_jitter": ("backoff_jitter", (int, float)),
    "backoff_reset_after_s": ("backoff_reset_after_ns", (int, float)),
    "ping_interval_s": ("ping_interval_ns", (int, float)),
    "error_cooldown_s": ("error_cooldown_ns", (int, float)),
    "max_errors": ("max_errors", int),
    "error_window_s": ("error_window_ns", (int, float)),
    "trading_enabled": ("trading_enabled", bool),
    "trading_client": ("trading_client", str),
    "sync_targets": ("sync_targets", list),
    "notify": ("notify", list),
    "log_file": ("log_file", str),
    "tick_interval_ms": ("tick_interval_ns", (int, float)),
    "report_interval_ms": ("report_interval_ns", (int, float)),
}

_CHILD_KEYS: dict[str, tuple[str, type | tuple[type, ...]]] = {
    "start_order": ("start_order", int),
    "restart": ("restart", str),
    "shutdown_timeout_s": ("shutdown_timeout_ns", (int, float)),
    "on_hang": ("on_hang", str),
    "critical": ("critical", bool),
    "feed": ("feed", bool),
    "ping_timeout_s": ("ping_timeout_ns", (int, float)),
    "ticks": ("ticks", bool),
    "enabled": ("enabled", bool),
    "class": ("class_path", str),
}


def _check_type(where: str, key: str, value: Any, kind: type | tuple[type, ...]) -> None:
    # bool is an int subclass: never accept true/false where a number is expected.
    if isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"{where}.{key}: expected a number, got a boolean")
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}.{key}: expected {expected}, got {type(value).__name__}")


def _duration_ns(where: str, key: str, value: float, scale: int = NS, allow_zero: bool = False) -> int:
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{where}.{key}: must be a finite number")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{where}.{key}: must be {'>= 0' if allow_zero else '> 0'}")
    return int(round(value * scale))


def _names(where: str, key: str, value: list[Any]) -> tuple[str, ...]:
    if not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}.{key}: expected a list of non-empty names")
    return tuple(value)


def parse_supervisor(section: Mapping[str, Any]) -> SupervisorConfig:
    where = "supervisor"
    values: dict[str, Any] = {}
    for key, raw in section.items():
        if key not in _SUPERVISOR_KEYS:
            raise ConfigError(f"{where}.{key}: unknown key")
        attr, kind = _SUPERVISOR_KEYS[key]
        _check_type(where, key, raw, kind)
        if attr in ("tick_interval_ns", "report_interval_ns"):
            values[attr] = _duration_ns(where, key, raw, scale=1_000_000)
        elif attr.endswith("_ns"):
            values[attr] = _duration_ns(where, key, raw)
        elif key in ("sync_targets", "notify"):
            values[attr] = _names(where, key, raw)
        else:
            values[attr] = raw
    cfg = SupervisorConfig(**values)
    if cfg.max_restarts < 0:
        raise ConfigError(f"{where}.max_restarts: must be >= 0")
    if cfg.max_errors < 0:
        raise ConfigError(f"{where}.max_errors: must be >= 0")
    if cfg.backoff_multiplier < 1:
        raise ConfigError(f"{where}.backoff_multiplier: must be >= 1")
    if not 0 <= cfg.backoff_jitter < 1:
        raise ConfigError(f"{where}.backoff_jitter: must be in [0, 1)")
    if cfg.backoff_max_ns < cfg.backoff_initial_ns:
        raise ConfigError(f"{where}.backoff_max_s: must be >= backoff_initial_s")
    if cfg.error_cooldown_ns >= 300 * NS:  # ERROR's own timeout (actors.lifecycle) escalates first
        raise ConfigError(f"{where}.error_cooldown_s: must be below ERROR's 300 s timeout")
    if not cfg.log_file or "/" in cfg.log_file or cfg.log_file.startswith("."):
        raise ConfigError(f"{where}.log_file: must be a plain file name inside the data directory")
    return cfg


def parse_child(name: str, section: Mapping[str, Any]) -> ChildSpec:
    where = f"actors.{name}"
    if not name.isidentifier():
        raise ConfigError(f"{where}: actor names must be identifiers")
    values: dict[str, Any] = {"name": name}
    settings: dict[str, Any] = {}
    for key, raw in section.items():
        if key not in _CHILD_KEYS:
            settings[key] = raw  # the actor's own settings
            continue
        attr, kind = _CHILD_KEYS[key]
        _check_type(where, key, raw, kind)
        if attr.endswith("_ns"):
            values[attr] = _duration_ns(where, key, raw)
        else:
            values[attr] = raw
    if values.get("restart", "permanent") not in ("permanent", "transient", "temporary"):
        raise ConfigError(f"{where}.restart: must be permanent, transient or temporary")
    if values.get("on_hang", "restart") not in ("restart", "error"):
        raise ConfigError(f"{where}.on_hang: must be restart or error")
    class_path = values.get("class_path")
    if class_path is not None and (class_path.count(":") != 1 or not all(class_path.split(":"))):
        raise ConfigError(f"{where}.class: expected 'package.module:Class'")
    values["settings"] = MappingProxyType(settings)
    return ChildSpec(**values)


@dataclass(frozen=True, slots=True)
class ActorSystemConfig:
    supervisor: SupervisorConfig
    children: tuple[ChildSpec, ...]  # enabled and disabled, sorted by (start_order, name)

    def child(self, name: str) -> ChildSpec:
        for spec in self.children:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def enabled_children(self) -> tuple[ChildSpec, ...]:
        return tuple(spec for spec in self.children if spec.enabled)


def parse_config(document: Mapping[str, Any]) -> ActorSystemConfig:
    sup_section = document.get("supervisor", {})
    if not isinstance(sup_section, Mapping):
        raise ConfigError("supervisor: expected a table")
    actors_section = document.get("actors", {})
    if not isinstance(actors_section, Mapping):
        raise ConfigError("actors: expected a table of [actors.<name>] sections")
    children = []
    for name, section in actors_section.items():
        if not isinstance(section, Mapping):
            raise ConfigError(f"actors.{name}: expected a table")
        children.append(parse_child(name, section))
    children.sort(key=lambda spec: (spec.start_order, spec.name))
    supervisor = parse_supervisor(sup_section)
    names = {spec.name for spec in children}
    for key, listed in (("notify", supervisor.notify), ("sync_targets", supervisor.sync_targets)):
        # Names given explicitly must be declared actors (disabled ones count): catches typos.
        if key not in sup_section:
            continue
        unknown = [n for n in listed if names and n not in names]
        if unknown:
            raise ConfigError(f"supervisor.{key}: unknown actor(s) {', '.join(sorted(unknown))}")
    return ActorSystemConfig(supervisor=supervisor, children=tuple(children))


def load_config(path: str | Path) -> ActorSystemConfig:
    """Read actor_config.toml; a missing file or bad TOML is a ``ConfigError``."""
    try:
        with open(path, "rb") as fh:
            document = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_config(document)
