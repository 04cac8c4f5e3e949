"""State file (atomic, 0600, periodic, resume after restart or kill) and the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from kalshi.exchange.server import read_state, write_atomic
from tests.helpers import wait_for
from tests.integration.test_exchange_support import (  # noqa: F401
    KEY_A,
    Client,
    auth_headers,
    keypair,
    make_exchange,
)

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]
ORDER = {"ticker": "FAKE-M1", "side": "no", "price": "0.3500", "count": "3.00", "client_order_id": "keep-1"}


def test_state_survives_clean_restart(make_exchange, tmp_path):
    state = tmp_path / "exchange.json"
    ex = make_exchange(rate_limits=False, state_file=state)
    assert Client(ex).post("/portfolio/events/orders", ORDER).status_code == 201
    port = ex.port
    ex.stop()
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    ex2 = make_exchange(rate_limits=False, state_file=state, port=port)  # same port, like a restarted process
    c = Client(ex2)
    assert [o["client_order_id"] for o in c.get("/portfolio/orders").json()["orders"]] == ["keep-1"]
    book = c.get("/markets/FAKE-M1/orderbook").json()["orderbook_fp"]
    assert book["no_dollars"] == [["0.3500", "3.00"]]
    assert c.post("/portfolio/events/orders", ORDER).status_code == 409  # used client_order_ids survive


def test_state_is_saved_soon_after_a_write_so_a_kill_loses_nothing(make_exchange, tmp_path):
    state = tmp_path / "exchange.json"
    ex = make_exchange(rate_limits=False, state_file=state, state_save_interval_s=60)
    assert Client(ex).post("/portfolio/events/orders", ORDER).status_code == 201

    def saved() -> bool:
        return state.exists() and "keep-1" in state.read_text()

    wait_for(saved, 5, message="state written after the order")
    killed = tmp_path / "as-killed.json"
    shutil.copy(state, killed)  # what a SIGKILL right now would leave behind
    ex2 = make_exchange(rate_limits=False, state_file=killed)
    assert len(Client(ex2).get("/portfolio/orders").json()["orders"]) == 1


def test_saving_a_big_state_is_paced_to_a_tenth_of_the_loop(tmp_path):
    from kalshi.exchange.server import ExchangeServer
    from tests.integration.test_exchange_support import FakeConfig, FakeEngine

    server = ExchangeServer(FakeEngine(FakeConfig(), 0), state_file=tmp_path / "s.json", state_save_interval_s=2.0)
    t0 = server._last_save
    assert not server.save_due(t0 + 0.05)
    server._dirty = True
    assert not server.save_due(t0 + 0.05) and server.save_due(t0 + 0.11)  # soon after a write
    assert server.save_state() and not server._dirty and server.stats["state_saves"] == 1
    server._save_cost = 0.5  # a save that took 0.5 s: at most one every 5 s, even when dirty
    t1 = server._last_save
    server._dirty = True
    assert not server.save_due(t1 + 4.9) and server.save_due(t1 + 5.01)
    server._dirty = False
    assert not server.save_due(t1 + 4.9) and server.save_due(t1 + 5.01)
    server._save_cost = 0.0
    assert not server.save_due(t1 + 1.9) and server.save_due(t1 + 2.01)  # the periodic save
    assert read_state(tmp_path / "s.json")["config"]["n_markets"] == 4


def test_cli_parses_the_ws_limits():
    from kalshi.exchange.cli import build_parser

    args = build_parser().parse_args(["--ws-max-markets", "50", "--ws-commands-per-s", "10"])
    assert (args.ws_max_markets, args.ws_commands_per_s) == (50, 10)
    assert build_parser().parse_args([]).ws_max_markets is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--ws-commands-per-s", "0"])


def test_bad_state_file_is_refused_clearly(make_exchange, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        make_exchange(state_file=bad)
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a local-exchange state file"):
        read_state(bad)


def test_write_atomic_mode_and_replace(tmp_path):
    p = tmp_path / "s.json"
    write_atomic(p, b"one")
    os.chmod(p, 0o644)
    write_atomic(p, b"two")
    assert p.read_bytes() == b"two" and stat.S_IMODE(p.stat().st_mode) == 0o600
    assert [x.name for x in tmp_path.iterdir()] == ["s.json"]


# ---- CLI subprocess (real engine) ---------------------------------------------------------------------
def _engine_works() -> bool:
    try:
        from kalshi.exchange.engine import Engine, EngineConfig  # noqa: F401

        eng = Engine(EngineConfig(n_markets=2), 1_800_000_000_000)
        eng.handle("GET", "/exchange/status", {}, None, None, 1_800_000_000_000)
        eng.is_private("GET", "/portfolio/balance")
        return True
    except Exception:
        return False


needs_engine = pytest.mark.skipif(not _engine_works(), reason="kalshi/exchange/engine.py not usable yet")


def start_cli(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, str, str]:
    pub = tmp_path / "pub.pem"
    pub.write_bytes(keypair(0)[1])
    cmd = [sys.executable, "-m", "kalshi.exchange.cli", "--port", "0", "--flow", "calm",
           "--api-key", f"{KEY_A}={pub}", *extra]
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()  # the one line (the read ends when the child prints or dies)
    if not line:
        proc.kill()
        raise AssertionError("exchange CLI printed nothing: " + proc.stderr.read()[-2000:])
    words = line.split()
    rest = next(w for w in words if w.startswith("http://"))
    ws = next(w for w in words if w.startswith("ws://"))
    return proc, rest, ws


@needs_engine
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_prints_one_line_and_stops_cleanly(tmp_path, sig):
    proc, rest, ws = start_cli(tmp_path)
    try:
        assert rest.startswith("http://127.0.0.1:") and rest.endswith("/trade-api/v2")
        assert ws.startswith("ws://127.0.0.1:") and ws.endswith("/trade-api/ws/v2")
        r = requests.get(rest + "/exchange/status", timeout=5)
        assert r.status_code == 200
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err[-2000:]
        assert out == ""  # nothing after the one line
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


@needs_engine
def test_cli_sigkill_and_restart_with_state(tmp_path):
    state = tmp_path / "state.json"
    proc, rest, _ = start_cli(tmp_path, "--state", str(state))
    port = rest.split(":")[2].split("/")[0]
    try:
        tickers = [m["ticker"] for m in requests.get(rest + "/markets?status=open", timeout=5).json()["markets"]]
        body = {"ticker": tickers[0], "side": "bid", "count": "2.00", "price": "0.0200", "client_order_id": "cli-1",
                "time_in_force": "good_till_canceled", "self_trade_prevention_type": "taker_at_cross"}
        path = "/trade-api/v2/portfolio/events/orders"
        r = requests.post(rest + "/portfolio/events/orders", json=body, timeout=5,
                          headers=auth_headers(KEY_A, keypair(0)[0], "POST", path))
        assert r.status_code == 201, r.text
        wait_for(lambda: state.exists() and "cli-1" in state.read_text(), 10, message="state saved")
    finally:
        proc.kill()  # SIGKILL: no chance to save on the way out
        proc.communicate(timeout=10)
    proc2, rest2, _ = start_cli(tmp_path, "--state", str(state), "--port", port)
    try:
        path = "/trade-api/v2/portfolio/orders"
        r = requests.get(rest2 + "/portfolio/orders", timeout=5, headers=auth_headers(KEY_A, keypair(0)[0], "GET", path))
        assert "cli-1" in [o["client_order_id"] for o in r.json()["orders"]], r.text
    finally:
        proc2.send_signal(signal.SIGTERM)
        proc2.communicate(timeout=30)
        assert proc2.returncode == 0
