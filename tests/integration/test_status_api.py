"""The status API for real: the broadcaster's aiohttp server on 127.0.0.1, spoken to with requests and
websocket-client. Endpoints, the /v3/ws message sequence and shapes, the cleanup round trip through a fake
executor actor, and the S9 checks (token, Origin, Host, query-string token, oversized headers, bind address).
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
import requests
import websocket

from actors.base import PeerTable, SupervisedActor, handles
from actors.broadcaster import Broadcaster
from actors.status_api import StatusServer, _Client
from messages.control import PeersChanged, RequestStats, SystemStateChanged, Tick
from messages.state import AccountView, StateChanged
from messages.status import GetStatus
from messages.whale import (
    CleanupCompleted,
    CleanupRequested,
    Decision,
    QueueStats,
    Whale,
    WhaleDecisionMade,
    WhaleProcessing,
    WhaleQueueUpdated,
)
from tests.helpers import wait_for

TIMEOUT = 5


class FakeExecutor(SupervisedActor):
    """Answers CleanupRequested with CleanupCompleted to ``reply_to`` (unless config says to stay silent)."""

    @handles(CleanupRequested)
    def on_cleanup(self, msg: CleanupRequested) -> None:
        self.requests.append(msg)
        if not self.config.get("silent"):
            canceled = ("o1",) if msg.orphaned_only else ("o1", "o2")
            filled = () if msg.orphaned_only else ("o3",)  # filled before the cancel reached it (F17)
            self.peers.tell(msg.reply_to, CleanupCompleted(request_id=msg.request_id, canceled=canceled,
                                                           failed=(), filled=filled, detail="done"))

    def setup(self) -> None:
        self.requests: list[CleanupRequested] = []

    def on_request_stats(self, message: RequestStats) -> dict[str, Any]:
        return {"requests": [(r.request_id, r.orphaned_only, r.reply_to) for r in self.requests]}


class System:
    def __init__(self, config: dict[str, Any], executor: bool = True, silent: bool = False) -> None:
        self.executor = None
        peers = PeerTable()
        if executor:
            self.executor = FakeExecutor.start("whale_executor", 1, None, PeerTable(), {"silent": silent})
            peers.set("whale_executor", self.executor)
        cfg = {"status_port": 0, "ping_interval_s": 15.0, **config}
        self.ref = Broadcaster.start("broadcaster", 1, None, peers, cfg)
        if self.executor is not None:
            self.executor.tell(PeersChanged(peers=(("broadcaster", self.ref),)))
        stats = self.ref.ask(RequestStats(), timeout=TIMEOUT)
        self.host, self.port = stats["status_address"]
        self.base = f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.base + path, timeout=TIMEOUT, **kw)

    def ws(self, **kw: Any) -> websocket.WebSocket:
        return websocket.create_connection(f"ws://127.0.0.1:{self.port}/v3/ws", timeout=TIMEOUT, **kw)

    def barrier(self) -> dict[str, Any]:
        """The broadcaster handled everything told before; push its snapshot to the server."""
        self.ref.tell(Tick(now_mono_ns=time.monotonic_ns(), now_wall_ms=1_767_225_600_000))
        return self.ref.ask(GetStatus(), timeout=TIMEOUT)

    def stop(self) -> None:
        self.ref.stop(block=True, timeout=10)
        if self.executor is not None:
            self.executor.stop(block=True, timeout=10)


@pytest.fixture
def system():
    systems: list[System] = []

    def make(config: dict[str, Any] | None = None, **kw: Any) -> System:
        s = System(config or {}, **kw)
        systems.append(s)
        return s

    yield make
    for s in systems:
        s.stop()


def ready(s: System, degraded: bool = False, state: str = "READY") -> None:
    s.ref.tell(SystemStateChanged(previous="KALSHI_DATA_SYNC", state=state, reason="all ready", degraded=degraded,
                                  at_ms=1_767_225_600_000))
    s.barrier()


def recv(ws: websocket.WebSocket) -> dict[str, Any]:
    return json.loads(ws.recv())


def recv_until(ws: websocket.WebSocket, kind: str, limit: int = 50) -> dict[str, Any]:
    for _ in range(limit):
        msg = recv(ws)
        if msg["type"] == kind:
            return msg
    raise AssertionError(f"no {kind} message")


# --- endpoints ---------------------------------------------------------------------------------------


def test_binds_loopback_by_default(system):
    s = system()
    assert s.host == "127.0.0.1"


def test_health_is_503_until_ready_and_when_degraded(system):
    s = system()
    r = s.get("/v3/health")
    assert r.status_code == 503 and r.json()["healthy"] is False and r.json()["state"] == "STARTUP"
    ready(s)
    r = s.get("/v3/health")
    assert r.status_code == 200 and r.json()["healthy"] is True
    ready(s, state="ACTING")
    assert s.get("/v3/health").status_code == 200
    ready(s, degraded=True)
    assert s.get("/v3/health").status_code == 503
    ready(s, state="ERROR")
    assert s.get("/v3/health").json()["state"] == "ERROR"


def test_status_has_every_section(system):
    s = system()
    s.ref.tell(StateChanged(version=3, changed=frozenset({"balance"}), books=(), at_ms=1, account=AccountView(
        version=3, balance=5_000_000, portfolio_value=5_100_000, positions=(), resting_orders=(),
        unsynced_fill_markets=frozenset(), synced_at_ms=1)))
    s.barrier()
    body = s.get("/v3/status").json()
    for key in ("state", "degraded", "trading_gate", "uptime_s", "actors", "feeds", "whales", "decisions", "orders",
                "balance", "positions", "open_orders", "recent_decisions", "status_api"):
        assert key in body, key
    for key in ("trades_seen", "trades_discarded", "queue_size", "queue"):
        assert key in body["whales"]
    assert set(body["orders"]) >= {"submitted", "accepted", "filled", "rejected", "unknown"}
    assert body["balance"] == "500.0000" and body["state_version"] == 3


def test_unknown_paths_methods_and_plain_get_on_ws(system):
    s = system()
    assert s.get("/v3/nope").status_code == 404
    assert s.get("/").status_code == 404
    assert s.get("/v3/cleanup").status_code == 405  # read-only except the POST
    assert requests.post(s.base + "/v3/status", timeout=TIMEOUT).status_code == 405
    assert requests.delete(s.base + "/v3/health", timeout=TIMEOUT).status_code == 405
    r = s.get("/v3/ws")
    assert r.status_code in (400, 426)


# --- cleanup -------------------------------------------------------------------------------------------


def test_cleanup_round_trip_through_the_executor(system):
    s = system()
    r = requests.post(s.base + "/v3/cleanup?orphaned_only=false", timeout=20)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["canceled"] == ["o1", "o2"] and body["failed"] == [] and body["detail"] == "done"
    assert body["filled"] == ["o3"] and body["filled_count"] == 1
    r = requests.post(s.base + "/v3/cleanup", timeout=20)  # orphaned_only defaults to true
    assert r.json()["canceled"] == ["o1"]
    seen = s.executor.ask(RequestStats(), timeout=TIMEOUT)["requests"]
    assert [(o, reply) for _, o, reply in seen] == [(False, "broadcaster"), (True, "broadcaster")]
    assert seen[0][0] != seen[1][0]  # each request has its own id
    assert s.barrier()["last_cleanup"]["canceled_count"] == 1


def test_cleanup_bad_parameter_is_400(system):
    s = system()
    r = requests.post(s.base + "/v3/cleanup?orphaned_only=maybe", timeout=TIMEOUT)
    assert r.status_code == 400
    assert s.executor.ask(RequestStats(), timeout=TIMEOUT)["requests"] == []


def test_cleanup_without_executor_is_503(system):
    s = system(executor=False)
    r = requests.post(s.base + "/v3/cleanup", timeout=TIMEOUT)
    assert r.status_code == 503


def test_cleanup_times_out_with_504(system):
    s = system({"cleanup_timeout_s": 0.3}, silent=True)
    started = time.monotonic()
    r = requests.post(s.base + "/v3/cleanup", timeout=TIMEOUT)
    assert r.status_code == 504 and time.monotonic() - started < 3
    # A late answer after the timeout is harmless.
    (req_id, _, _), = s.executor.ask(RequestStats(), timeout=TIMEOUT)["requests"]
    s.ref.tell(CleanupCompleted(request_id=req_id, canceled=(), failed=(), detail="late"))
    assert s.barrier()["last_cleanup"]["detail"] == "late"


# --- /v3/ws --------------------------------------------------------------------------------------------


def whale_queue() -> WhaleQueueUpdated:
    w = Whale(whale_id="INXD-25JAN03:1703700000000", market="INXD-25JAN03", side="yes", count=20_000,
              price_volume=20_000 * 6500, cost=1_300_000, payout=2_000_000, whale_size=2_000_000, min_price=6500,
              max_price=6500, levels=1, trade_ids=("t1",), ts_ms=1_703_700_000_000)
    stats = QueueStats(trades_seen=1500, trades_discarded=1450, duplicates=0, discard_rate_bp=9667, queue_size=1,
                       window_minutes=5, min_size=1_000_000)
    return WhaleQueueUpdated(queue=(w,), stats=stats, ts_ms=1_703_700_045_200)


def test_ws_sequence_and_seed_shapes(system):
    s = system()
    ready(s)
    ws = s.ws()
    try:
        first, second = recv(ws), recv(ws)
        assert first["type"] == "connection" and first["data"]["state"] == "READY"
        assert second["type"] == "history_replay"
        (transition,) = second["data"]["transitions"]
        assert transition["from_state"] == "KALSHI_DATA_SYNC" and transition["to_state"] == "READY"
        assert recv(ws)["type"] == "trader_status"  # the latest one, at once

        s.ref.tell(whale_queue())
        msg = recv_until(ws, "whale_queue")
        data = msg["data"]
        assert set(data) == {"queue", "stats", "timestamp"} and data["timestamp"] == 1_703_700_045.2
        entry = data["queue"][0]
        assert entry["market_ticker"] == "INXD-25JAN03" and entry["side"] == "yes"
        assert entry["cost_dollars"] == "130.0000" and entry["payout_dollars"] == "200.0000"
        assert entry["age_seconds"] == 45.2 and entry["timestamp_ms"] == 1_703_700_000_000
        assert data["stats"]["discard_rate_percent"] == 96.67 and data["stats"]["min_size_dollars"] == "100.0000"

        s.ref.tell(WhaleProcessing(whale_id="INXD-25JAN03:1703700000000", status="processing", action=None,
                                   ts_ms=1_703_700_001_500))
        s.ref.tell(WhaleProcessing(whale_id="INXD-25JAN03:1703700000000", status="complete", action="follow",
                                   ts_ms=1_703_700_002_300))
        p1, p2 = recv_until(ws, "whale_processing"), recv_until(ws, "whale_processing")
        assert p1["data"] == {"whale_id": "INXD-25JAN03:1703700000000", "status": "processing", "action": None,
                              "timestamp": 1_703_700_001.5}
        assert p2["data"]["status"] == "complete" and p2["data"]["action"] == "followed"

        s.ref.tell(WhaleDecisionMade(decision=Decision(action="skipped_age", reason="too old", whale_id="w",
                                                       market="M1", final=True, decided_ms=5)))
        act = recv_until(ws, "system_activity")
        assert act["data"]["activity_type"] == "trading_decision" and "skipped_age" in act["data"]["message"]

        s.ref.tell(StateChanged(version=9, changed=frozenset({"positions"}), books=(), at_ms=1, account=AccountView(
            version=9, balance=10_000, portfolio_value=0, positions=(), resting_orders=(),
            unsynced_fill_markets=frozenset(), synced_at_ms=0)))
        ts = recv_until(ws, "trading_state")
        assert ts["data"]["balance"] == "1.0000" and ts["data"]["positions"] == [] and ts["data"]["orders"] == []

        s.ref.tell(Tick(now_mono_ns=time.monotonic_ns() + 5 * 10**9, now_wall_ms=1))
        status = recv_until(ws, "trader_status")
        assert status["data"]["state"] == "READY" and "metrics" in status["data"]
    finally:
        ws.close()


def test_ws_ping_keepalive(system):
    s = system({"ping_interval_s": 0.2})
    ws = s.ws()
    try:
        assert recv_until(ws, "ping")["type"] == "ping"
    finally:
        ws.close()


def test_ws_late_joiner_gets_latest_queue_and_state(system):
    s = system()
    s.ref.tell(whale_queue())
    s.barrier()
    ws = s.ws()
    try:
        kinds = [recv(ws)["type"] for _ in range(4)]
        assert kinds == ["connection", "history_replay", "trader_status", "whale_queue"]
    finally:
        ws.close()


def test_slow_ws_client_never_blocks_the_broadcaster(system):
    s = system()
    ws = s.ws()  # connected, never reads
    try:
        wait_for(lambda: s.ref.ask(RequestStats(), timeout=TIMEOUT)["status_clients"] == 1, message="client")
        big = "x" * 2000
        started = time.monotonic()
        for i in range(3000):
            s.ref.tell(WhaleProcessing(whale_id=f"{big}{i}", status="processing", action=None, ts_ms=i))
        s.ref.ask(GetStatus(), timeout=TIMEOUT)
        assert time.monotonic() - started < 5
        assert s.get("/v3/health").status_code == 503  # the server still answers
        api = s.get("/v3/status").json()["status_api"]
        # Either the client's buffer dropped old messages or the client was cut off as too slow.
        assert api["dropped"] > 0 or api["clients"] == 0
    finally:
        ws.close()


def test_client_buffer_conflates_latest_wins_and_bounds_the_rest():
    c = _Client(ws=None, cap=3)  # type: ignore[arg-type]
    for i in range(10):
        c.put("trader_status", f"s{i}")
        c.put("whale_processing", f"p{i}")
    c.put("whale_queue", "q")
    assert c.conflated == 9 and c.dropped == 7
    items = c.take()
    assert sorted(items) == ["p7", "p8", "p9", "q", "s9"] and items[-1] == "q"
    c.put("whale_processing", "a")
    c.put("trader_status", "b")
    assert c.take() == ["a", "b"] and c.take() == []


# --- security (S9) -------------------------------------------------------------------------------------


def test_foreign_host_and_origin_are_refused(system):
    s = system()
    r = s.get("/v3/status", headers={"Host": "evil.example"})
    assert r.status_code == 403 and r.headers.get("Connection", "").lower() == "close"
    assert s.get("/v3/status", headers={"Host": f"localhost:{s.port}"}).status_code == 200
    assert s.get("/v3/status", headers={"Origin": "http://evil.example"}).status_code == 403
    assert s.get("/v3/status", headers={"Origin": f"http://127.0.0.1:{s.port}"}).status_code == 200
    r = requests.post(s.base + "/v3/cleanup", headers={"Origin": "https://evil.example"}, timeout=TIMEOUT)
    assert r.status_code == 403  # no cross-site POST
    assert s.executor.ask(RequestStats(), timeout=TIMEOUT)["requests"] == []
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        s.ws(origin="http://evil.example")
    assert err.value.status_code == 403
    ws = s.ws(origin=f"http://localhost:{s.port}")
    ws.close()


def test_token_is_required_when_configured_and_never_in_the_query(system):
    s = system({"status_token": "s3cret-token"})
    assert s.get("/v3/health").status_code == 403
    assert s.get("/v3/health", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert s.get("/v3/health", headers={"Authorization": "Basic s3cret-token"}).status_code == 403
    ok = s.get("/v3/status", headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200 and "s3cret" not in ok.text
    r = s.get("/v3/status?token=s3cret-token", headers={"Authorization": "Bearer s3cret-token"})
    assert r.status_code == 403 and "s3cret" not in r.text
    with pytest.raises(websocket.WebSocketBadStatusException):
        s.ws()
    ws = s.ws(header=["Authorization: Bearer s3cret-token"])
    assert recv(ws)["type"] == "connection"
    ws.close()


def test_non_loopback_bind_needs_a_token():
    with pytest.raises(ValueError, match="token"):
        StatusServer("0.0.0.0", 0)


def test_oversized_headers_are_rejected(system):
    s = system()
    r = s.get("/v3/status", headers={"X-Big": "a" * 20_000})
    assert r.status_code in (400, 431)
    r = s.get("/v3/status", headers={f"X-H{i}": "v" for i in range(200)})
    assert r.status_code in (400, 431)
    assert s.get("/v3/status").status_code == 200


def test_garbage_request_does_not_hurt_the_server(system):
    s = system()
    with socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"\x16\x03\x01\x00\xff garbage \r\n\r\n")
        sock.recv(1024)
    assert s.get("/v3/status").status_code == 200


def test_port_in_use_fails_setup_cleanly(system):
    s = system()
    with pytest.raises(OSError):
        server = StatusServer("127.0.0.1", s.port)
        server.start()


def test_websocket_clients_are_capped(system):
    s = system({"max_ws_clients": 2})
    a, b = s.ws(), s.ws()
    try:
        wait_for(lambda: s.ref.ask(RequestStats(), timeout=TIMEOUT)["status_clients"] == 2, message="two clients")
        with pytest.raises(websocket.WebSocketBadStatusException) as err:
            s.ws()
        assert err.value.status_code == 503
        assert s.get("/v3/status").json()["status_api"]["refused_clients"] == 1
    finally:
        a.close()
        b.close()


def test_a_restarted_broadcaster_binds_the_same_port_again(system):
    s = system()
    port = s.port
    s.stop()
    again = system({"status_port": port})
    assert again.port == port and again.get("/v3/health").status_code == 503
