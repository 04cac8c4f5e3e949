"""``python main.py``: assembly (in-process, with probe actors), local mode's child exchange, and the whole
program end to end as a subprocess against the local exchange (marked slow; kept in the default run)."""

from __future__ import annotations

import os
import re
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import main
from actors.base import SupervisedActor
from actors.config import ActorSystemConfig, ChildSpec, ConfigError, SupervisorConfig, load_config
from actors.context import SystemContext
from actors.health_supervisor import EXIT_ESCALATED
from actors.local_mode import (
    LocalExchangeError,
    LocalExchangeProcess,
    ensure_local_keys,
    parse_start_line,
)
from actors.settings import LIVE_OPT_IN_ENV, LIVE_OPT_IN_VALUE, load_settings
from actors.system import ACTOR_CLASSES, StartupError, System, build_factories, effective_config, select_markets
from kalshi.auth import generate_key_pair, write_private_key
from tests.actors.conftest import Crash, probes  # noqa: F401  (probes is a fixture)
from tests.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
MAIN = REPO / "main.py"

# Settings that would change what the subprocess does if they leaked in from the developer's shell.
_OUR_PREFIXES = ("KALSHI_", "V3_", "RL_", "WHALE_", "RISK_", "ENVIRONMENT")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OUR_PREFIXES) and not k.lower().endswith("_proxy")}
    env["NO_PROXY"] = "127.0.0.1,localhost,::1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


# --- market selection -----------------------------------------------------------------------------


def _market(ticker: str, v24: int | None, v: int | None) -> SimpleNamespace:
    return SimpleNamespace(ticker=ticker, volume_24h=v24, volume=v)


class FakeRest:
    def __init__(self, pages):
        self.pages = list(pages)
        self.calls = []

    def get_markets(self, status=None, limit=None, cursor=None):
        self.calls.append((status, cursor))
        markets, next_cursor = self.pages.pop(0)
        return SimpleNamespace(markets=markets, cursor=next_cursor)


def settings(**env: str):
    return load_settings(config_path=None, environ=env, dotenv_path=None)


def test_discovery_picks_the_most_active_open_markets_across_pages():
    rest = FakeRest([
        ([_market("A", 5, 100), _market("B", None, 900), _market("C", 50, 1)], "c1"),
        ([_market("D", 50, 7), _market("E", 0, 0)], ""),
    ])
    chosen = select_markets(settings(RL_ORDERBOOK_MARKET_LIMIT="3"), rest)
    assert chosen == ("D", "C", "A")  # 24 h volume first, then total volume
    assert rest.calls == [("open", None), ("open", "c1")]


def test_config_mode_and_empty_discovery():
    s = settings(RL_MODE="config", RL_MARKET_TICKERS="X-1,Y-2,X-1,Z-3", RL_ORDERBOOK_MARKET_LIMIT="2")
    assert select_markets(s, rest=None) == ("X-1", "Y-2")
    with pytest.raises(StartupError, match="no open markets"):
        select_markets(settings(), FakeRest([([], "")]))


# --- assembly ---------------------------------------------------------------------------------------


def test_every_registered_actor_class_resolves():
    config = load_config(REPO / "actor_config.toml")
    assert {spec.name for spec in config.enabled_children} == set(ACTOR_CLASSES)
    ctx = SystemContext(settings=settings(), rest_url="http://127.0.0.1:1/trade-api/v2",
                        ws_url="ws://127.0.0.1:1/trade-api/ws/v2", credentials=None, data_dir=Path("."),
                        market_tickers=())
    factories = build_factories(config, ctx)
    assert set(factories) == set(ACTOR_CLASSES)


def test_unknown_actor_is_a_config_error():
    config = ActorSystemConfig(supervisor=SupervisorConfig(trading_enabled=False), children=(ChildSpec(name="mystery"),))
    ctx = SystemContext(settings=settings(), rest_url="", ws_url="", credentials=None, data_dir=Path("."),
                        market_tickers=())
    with pytest.raises(ConfigError, match="actors.mystery: no actor class"):
        build_factories(config, ctx)
    with pytest.raises(ConfigError, match="cannot import"):
        build_factories(config, ctx, classes={"mystery": "actors.nothing_here:Nope"})


def test_effective_config_switches_trading_off():
    config = load_config(REPO / "actor_config.toml")
    assert effective_config(config, trading_enabled=True).supervisor.trading_enabled is True
    assert effective_config(config, trading_enabled=False).supervisor.trading_enabled is False


class Recorder(SupervisedActor):
    """Records the config it was started with (to check what the factories hand to actors)."""

    seen: list = []

    def setup(self) -> None:
        Recorder.seen.append((self.name, dict(self.config)))


def test_system_with_probes_starts_reports_and_stops_in_reverse_order(tmp_path, probes):
    children = (ChildSpec(name="first", start_order=1), ChildSpec(name="broadcaster", start_order=2),
                ChildSpec(name="recorder", start_order=3, settings={"knob": 7}))
    config = ActorSystemConfig(supervisor=SupervisorConfig(trading_enabled=False, tick_interval_ns=20_000_000),
                               children=children)
    ctx = SystemContext(settings=settings(), rest_url="", ws_url="", credentials=None, data_dir=tmp_path,
                        market_tickers=("M-1",))
    Recorder.seen = []
    factories = build_factories(config, ctx, classes={"recorder": Recorder},
                                overrides=probes.factories(["first", "broadcaster"]))
    system = System(config, factories, data_dir=tmp_path).start()
    try:
        wait_for(lambda: system.status(1.0).get("state") == "READY", 10, message="READY")
        status = system.status(1.0)
        # the probe broadcaster does not answer GetStatus: the supervisor's view is shown instead
        assert status["source"] == "supervisor" and set(status["actors"]) == {"first", "broadcaster", "recorder"}
        assert Recorder.seen == [("recorder", {"knob": 7, "context": ctx})]
        assert system.ticker is not None and system.ticker.running
    finally:
        code = system.stop("test over")
    assert code == 0 and system.stop("again") == 0
    cleanups = [e[1] for e in probes.log.events("cleanup")]
    assert cleanups == ["broadcaster", "first"]  # reverse start order
    assert not system.ticker.running
    assert '"event":"shutdown"' in (tmp_path / "supervisor.jsonl").read_text()


def test_system_reports_the_supervisors_own_exit(tmp_path, probes):
    config = ActorSystemConfig(
        supervisor=SupervisorConfig(trading_enabled=False, max_restarts=0, max_errors=0, tick_interval_ns=20_000_000),
        children=(ChildSpec(name="crasher"),),
    )
    system = System(config, probes.factories(["crasher"]), data_dir=tmp_path).start()
    try:
        wait_for(lambda: system.status(1.0).get("state") == "READY", 10, message="READY")
        refs = system.supervisor_stats()["refs"]
        refs["crasher"].tell(Crash(text="kaboom"))
        assert system.exited.wait(10), "the supervisor did not escalate"
        assert system.exit_code == EXIT_ESCALATED
    finally:
        code = system.stop("test over")
    assert code == EXIT_ESCALATED


# --- local mode ---------------------------------------------------------------------------------------


def test_local_keys_are_generated_once_with_a_private_mode(tmp_path):
    keys = ensure_local_keys(tmp_path / "data")
    assert os.stat(keys.private_key_path).st_mode & 0o777 == 0o600
    assert os.stat(keys.directory / "key_id").st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "data").st_mode & 0o777 == 0o700
    assert b"PUBLIC KEY" in keys.public_key_path.read_bytes()
    again = ensure_local_keys(tmp_path / "data")
    assert again == keys and again.credentials().public_key_pem() == keys.public_key_path.read_bytes()
    keys.public_key_path.unlink()  # rebuilt from the private key
    assert ensure_local_keys(tmp_path / "data").public_key_path.read_bytes() == keys.credentials().public_key_pem()
    os.chmod(keys.private_key_path, 0o644)  # a loose key is refused, never silently fixed
    with pytest.raises(LocalExchangeError, match="unusable"):
        ensure_local_keys(tmp_path / "data")


def test_start_line_parsing():
    assert parse_start_line("local Kalshi exchange: REST http://127.0.0.1:5/trade-api/v2 WS ws://127.0.0.1:5/x\n") == (
        "http://127.0.0.1:5/trade-api/v2", "ws://127.0.0.1:5/x")
    with pytest.raises(LocalExchangeError, match="unexpected start line"):
        parse_start_line("hello")
    with pytest.raises(LocalExchangeError, match="not on 127.0.0.1"):
        parse_start_line("REST http://10.0.0.1:5/a WS ws://10.0.0.1:5/b")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_child_exchange_starts_serves_and_stops(tmp_path):
    from kalshi.rest import KalshiRest

    keys = ensure_local_keys(tmp_path)
    exchange = LocalExchangeProcess(keys, flow="off").start()
    try:
        assert exchange.running()
        with KalshiRest(exchange.rest_url, keys.credentials()) as rest:
            assert rest.get_balance().balance > 0  # our key is registered with the exchange
    finally:
        assert exchange.stop() == 0  # SIGTERM: a clean stop
    assert _gone(exchange.pid) and keys.state_path.exists()
    assert os.stat(exchange.log_path).st_mode & 0o777 == 0o600
    assert exchange.stop() == 0  # idempotent


def test_child_exchange_that_cannot_start_says_why(tmp_path):
    keys = ensure_local_keys(tmp_path)
    exchange = LocalExchangeProcess(keys, extra_args=["--markets", "0"], start_timeout_s=20)
    with pytest.raises(LocalExchangeError, match="exited with status 2.*must be at least 1"):
        exchange.start()
    assert not exchange.running()


# --- command line (in-process: the refusals never start anything) ---------------------------------------


def test_live_is_refused_without_the_opt_in(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(LIVE_OPT_IN_ENV, raising=False)
    assert main.main(["--execution", "live", "--data-dir", str(tmp_path)]) == main.EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"{LIVE_OPT_IN_ENV} is not set to {LIVE_OPT_IN_VALUE}" in err and "--confirm-live" in err
    assert not (tmp_path / "local-exchange").exists()  # nothing was started


def test_live_from_the_configuration_alone_is_refused(tmp_path, monkeypatch, capsys):
    key = tmp_path / "key.pem"
    write_private_key(key, generate_key_pair()[0])
    for name, value in {"ENVIRONMENT": "prod", "V3_EXECUTION": "live", "KALSHI_API_KEY_ID": "abcd-1234-efgh",
                        "KALSHI_PRIVATE_KEY_PATH": str(key), LIVE_OPT_IN_ENV: LIVE_OPT_IN_VALUE}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    assert main.main(["--data-dir", str(tmp_path / "d")]) == main.EXIT_CONFIG
    assert "V3_EXECUTION=live in the configuration is not enough" in capsys.readouterr().err


def test_live_needs_the_typed_confirmation(tmp_path, monkeypatch, capsys):
    key = tmp_path / "key.pem"
    write_private_key(key, generate_key_pair()[0])
    for name, value in {"KALSHI_API_KEY_ID": "abcd-1234-efgh", "KALSHI_PRIVATE_KEY_PATH": str(key),
                        LIVE_OPT_IN_ENV: LIVE_OPT_IN_VALUE}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # not a TTY: no prompt
    argv = ["--env", "prod", "--execution", "live", "--data-dir", str(tmp_path / "d")]
    assert main.main(argv) == main.EXIT_CONFIG
    assert 'pass --confirm-live "abcd… LIVE"' in capsys.readouterr().err
    assert main.main(argv + ["--confirm-live", "abcd LIVE"]) == main.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "did not match" in err and "abcd-1234-efgh" not in err  # the full key id never appears


def test_help_explains_everything(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for word in ("--run-for", "--plain", "--env", "--execution", "--confirm-live", "postmortem", "cleanup",
                 "exchange", "--help-config", LIVE_OPT_IN_ENV, "exit codes"):
        assert word in out
    assert main.main(["--help-config"]) == 0
    assert "WHALE_MIN_SIZE_CENTS" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:  # the exchange subcommand gets its own argv
        main.main(["exchange", "--help"])
    assert exit_info.value.code == 0 and "usage: main.py exchange" in capsys.readouterr().out


# --- the whole program as a subprocess -----------------------------------------------------------------


def _read_until(proc: subprocess.Popen, pattern: str, timeout: float) -> str:
    """Read the child's stdout until ``pattern`` appears (or fail at the deadline); returns what was read."""
    fd = proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while not re.search(pattern, seen.decode("utf-8", "replace")):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {pattern!r} within {timeout}s; output so far:\n{seen.decode()[-3000:]}")
            if sel.select(min(remaining, 0.5)):
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"process ended before {pattern!r}:\n{seen.decode()[-3000:]}")
                seen += chunk
    return seen.decode("utf-8", "replace")


def _exchange_pid(stderr: str) -> int:
    match = re.search(r"local exchange pid (\d+)", stderr)
    assert match, f"no exchange pid in the log:\n{stderr[-2000:]}"
    return int(match.group(1))


def _journal_actions(data_dir: Path) -> dict[str, int]:
    with sqlite3.connect(data_dir / "journal.sqlite") as conn:
        return dict(conn.execute("SELECT action, COUNT(*) FROM decisions GROUP BY action").fetchall())


def _start(tmp_path: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(MAIN), "--plain", "--port", "0", "--data-dir", str(tmp_path / "data"), *args],
        cwd=tmp_path, env=clean_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_local_mode_runs_follows_a_whale_and_stops_cleanly(tmp_path):
    # $20 whales (default $100): the synthetic flow then shows several within the run, not by chance.
    proc = _start(tmp_path, "--run-for", "20", WHALE_MIN_SIZE_CENTS="2000")
    try:
        out, err = proc.communicate(timeout=75)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    out_text, err_text = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out_text[-3000:]}\nstderr:\n{err_text[-5000:]}"
    assert "Traceback" not in err_text, err_text[-5000:]
    assert re.search(r"^state READY", out_text, re.M), out_text[-3000:]
    assert re.search(r"whales_queued=[1-9]|decision ", out_text), out_text[-3000:]
    assert "stopped: --run-for 20s elapsed; exit code 0" in out_text
    actions = _journal_actions(tmp_path / "data")
    assert actions.get("follow", 0) >= 1, f"no whale followed: {actions}\n{out_text[-3000:]}"
    assert _gone(_exchange_pid(err_text)), "the child exchange outlived main.py"
    log_text = (tmp_path / "data" / "supervisor.jsonl").read_text()
    assert '"event":"shutdown"' in log_text and '"exit_code":0' in log_text
    assert os.stat(tmp_path / "data" / "supervisor.jsonl").st_mode & 0o777 == 0o600


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_everything_cleanly(tmp_path, signum):
    proc = _start(tmp_path, "--run-for", "60")
    try:
        _read_until(proc, r"(?m)^state READY", timeout=40)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    out_text, err_text = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out_text[-2000:]}\n{err_text[-4000:]}"
    assert f"stopped: signal {signal.Signals(signum).name}; exit code 0" in out_text
    assert _gone(_exchange_pid(err_text))


@pytest.mark.slow
def test_bad_setting_exits_2_naming_it_without_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(MAIN), "--plain", "--data-dir", str(tmp_path / "data")], cwd=tmp_path,
        env=clean_env(WHALE_MIN_SIZE_CENTS="lots"), capture_output=True, timeout=60,
    )
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert "WHALE_MIN_SIZE_CENTS" in err and "Traceback" not in err
    assert not (tmp_path / "data").exists()  # refused before anything was created


@pytest.mark.slow
def test_live_without_opt_in_is_refused_by_the_program(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(MAIN), "--execution", "live", "--data-dir", str(tmp_path / "data")], cwd=tmp_path,
        env=clean_env(), capture_output=True, timeout=60,
    )
    assert proc.returncode == 2
    assert LIVE_OPT_IN_ENV in proc.stderr.decode() and "Traceback" not in proc.stderr.decode()


def test_readme_state_diagram_is_the_generated_one():
    from actors.lifecycle import render_mermaid, render_table

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "```mermaid\n" + render_mermaid() + "```" in readme
    assert "```\n" + render_table() + "```" in readme


def test_cleanup_cancels_orphans_on_the_saved_local_exchange(tmp_path, capsys):
    from kalshi.rest import KalshiRest

    data = tmp_path / "data"
    keys = ensure_local_keys(data)
    exchange = LocalExchangeProcess(keys, flow="off").start()
    try:
        with KalshiRest(exchange.rest_url, keys.credentials()) as rest:
            ticker = rest.get_markets(status="open").markets[0].ticker
            group = rest.create_order_group(contracts_limit=10_000).order_group_id
            orphan = rest.create_order(ticker, "bid", 100, 100, "good_till_canceled", "orphan-1").order_id
            grouped = rest.create_order(ticker, "bid", 100, 100, "good_till_canceled", "grouped-1",
                                        order_group_id=group).order_id
    finally:
        exchange.stop()  # the orders now live in the state file only

    assert main.main(["cleanup", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert f"canceled {orphan} {ticker}" in out and grouped not in out
    assert "1 canceled, 0 failed, 1 kept" in out

    assert main.main(["cleanup", "--all", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert f"canceled {grouped} {ticker}" in out and "1 canceled, 0 failed, 0 kept" in out


def test_live_confirmation_accepts_the_masked_id_typed_with_dots():
    """The masked key id ends in an ellipsis; typing three dots instead is accepted, anything else is not."""
    import argparse

    assert main._confirm_live(argparse.Namespace(confirm_live="abcd… LIVE"), "abcd…") is None
    assert main._confirm_live(argparse.Namespace(confirm_live=" abcd... LIVE "), "abcd…") is None
    assert main._confirm_live(argparse.Namespace(confirm_live="abcd.. LIVE"), "abcd…") is not None
    assert main._confirm_live(argparse.Namespace(confirm_live="abcd... live"), "abcd…") is not None
