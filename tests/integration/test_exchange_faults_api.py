"""F20 (2xx with an error object and no order) and F21 (pagination loop) against the real engine, driven
with plain requests, through the control endpoint, and with kalshi.rest.KalshiRest; plus the flow
switch (LocalExchange.set_flow and POST /_control/flow)."""

from __future__ import annotations

import pytest
import requests

from kalshi.auth import Credentials
from kalshi.exchange import LocalExchange
from kalshi.exchange.faults import ERROR_2XX_BODY, LOOP_CURSOR
from kalshi.rest import KalshiRest, PaginationError, UnknownOutcomeError
from kalshi.units import COUNT_ONE
from tests.helpers import wait_for
from tests.integration.test_exchange_state_cli import needs_engine
from tests.integration.test_exchange_support import KEY_A, Client, keypair

pytestmark = [pytest.mark.timeout(60), needs_engine]


@pytest.fixture
def ex():
    exchange = LocalExchange(api_keys={KEY_A: keypair(0)[1]}, flow="off", rate_limits=False).start()
    yield exchange
    exchange.stop()


@pytest.fixture
def control():
    s = requests.Session()
    s.trust_env = False
    yield s
    s.close()


@pytest.fixture
def rest(ex):
    client = KalshiRest(ex.rest_url, Credentials(KEY_A, keypair(0)[0]), total_timeout=5.0, read_retries=0,
                        sleep=lambda s: None)
    yield client
    client.close()


def an_order(ex: LocalExchange, cid: str) -> dict:
    ticker = ex.call(lambda e: e.active_tickers()[0])
    return {"ticker": ticker, "side": "bid", "price": "0.3000", "count": "1.00", "time_in_force": "good_till_canceled",
            "self_trade_prevention_type": "taker_at_cross", "client_order_id": cid}


def my_orders(c: Client) -> list[dict]:
    r = c.get("/portfolio/orders")
    assert r.status_code == 200, r.text
    return r.json()["orders"]


# ---- F20 ------------------------------------------------------------------------------------------
def test_error_2xx_answers_an_error_object_without_running_the_call(ex):
    c = Client(ex)
    ex.faults.error_2xx()  # next POST /portfolio/events/orders, 201, not executed
    r = c.post("/portfolio/events/orders", an_order(ex, "e-1"))
    assert r.status_code == 201 and r.json() == ERROR_2XX_BODY and "order" not in r.json()
    assert my_orders(c) == []
    r = c.post("/portfolio/events/orders", an_order(ex, "e-1"))  # the fault was used up
    assert r.status_code == 201 and r.json()["client_order_id"] == "e-1"
    assert ex.faults.count("error_2xx") == 1


def test_error_2xx_execute_creates_the_order_but_hides_it(ex):
    c = Client(ex)
    ex.faults.error_2xx(status=200, execute=True)
    r = c.post("/portfolio/events/orders", an_order(ex, "e-2"))
    assert r.status_code == 200 and r.json() == ERROR_2XX_BODY
    assert [o["client_order_id"] for o in my_orders(c)] == ["e-2"]
    assert c.post("/portfolio/events/orders", an_order(ex, "e-2")).status_code == 409  # a resend is refused


def test_error_2xx_rejects_bad_arguments(ex):
    for kwargs in ({"status": 500}, {"count": 0}, {"execute": "yes"}, {"path_prefix": "portfolio"}):
        with pytest.raises(ValueError):
            ex.faults.error_2xx(**kwargs)


def test_error_2xx_via_control_endpoint_and_kalshi_rest(ex, control, rest):
    r = control.post(ex.control_url + "/rest/error_2xx", json={"count": 2, "status": 201}, timeout=5)
    assert r.json() == {"ok": True}
    pending = control.get(ex.control_url + "/faults", timeout=5).json()["faults"]["pending"]["error_2xx"]
    assert pending[0]["remaining"] == 2 and pending[0]["status"] == 201
    ticker = ex.call(lambda e: e.active_tickers()[0])
    with pytest.raises(UnknownOutcomeError) as info:
        rest.create_order(ticker, "bid", COUNT_ONE, 3000, "good_till_canceled", "kr-1")
    assert info.value.client_order_id == "kr-1"
    with pytest.raises(UnknownOutcomeError):
        rest.create_order(ticker, "bid", COUNT_ONE, 3000, "good_till_canceled", "kr-1")
    assert list(rest.iter_orders()) == []  # neither attempt ran
    assert rest.create_order(ticker, "bid", COUNT_ONE, 3000, "good_till_canceled", "kr-1").client_order_id == "kr-1"
    assert control.post(ex.control_url + "/rest/error_2xx", json={"status": 204}, timeout=5).status_code == 400
    assert control.post(ex.control_url + "/rest/error_2xx", json={"bogus": 1}, timeout=5).status_code == 400


# ---- F21 ------------------------------------------------------------------------------------------
def test_pagination_loop_returns_the_same_cursor_until_reset(ex):
    c = Client(ex)
    first = c.get("/markets", signed=False).json()
    assert first["cursor"] == "" and first["markets"]  # one page normally
    ex.faults.pagination_loop(path_prefix="/markets")
    cursor = None
    for _ in range(5):
        path = "/markets" + (f"?cursor={cursor}" if cursor else "")
        page = c.get(path, signed=False).json()
        assert page["cursor"] == LOOP_CURSOR
        assert [m["ticker"] for m in page["markets"]] == [m["ticker"] for m in first["markets"]]
        cursor = page["cursor"]
    assert c.get("/markets/" + first["markets"][0]["ticker"], signed=False).status_code == 200  # no cursor: untouched
    assert c.get("/exchange/status", signed=False).status_code == 200
    assert ex.faults.count("pagination_loop") == 5
    ex.faults.reset()
    assert c.get("/markets", signed=False).json()["cursor"] == ""


def test_pagination_loop_with_a_count(ex):
    c = Client(ex)
    ex.faults.pagination_loop(count=2)
    assert c.get("/portfolio/orders").json()["cursor"] == LOOP_CURSOR
    assert c.get("/markets", signed=False).json()["cursor"] == LOOP_CURSOR
    assert c.get("/markets", signed=False).json()["cursor"] == ""
    with pytest.raises(ValueError):
        ex.faults.pagination_loop(count=0)


def test_pagination_loop_via_control_endpoint_and_kalshi_rest(ex, control, rest):
    assert len(list(rest.iter_markets())) == ex.call(lambda e: len(e.market_tickers()))
    r = control.post(ex.control_url + "/rest/pagination_loop", json={"path_prefix": "/trade-api/v2/markets"}, timeout=5)
    assert r.json() == {"ok": True}
    with pytest.raises(PaginationError) as info:
        list(rest.iter_markets())
    assert info.value.code == "cursor_loop"
    assert list(rest.iter_orders()) == []  # other list endpoints are not affected
    assert control.post(ex.control_url + "/rest/pagination_loop", json={"count": -1}, timeout=5).status_code == 400
    control.post(ex.control_url + "/reset", timeout=5)
    assert len(list(rest.iter_markets())) == ex.call(lambda e: len(e.market_tickers()))


# ---- flow switch ------------------------------------------------------------------------------------
def test_set_flow_pauses_and_resumes_the_synthetic_flow(control):
    with LocalExchange(flow="calm", rate_limits=False, advance_interval_s=0.01) as ex:
        events = lambda: ex.call(lambda e: e.public_events)  # noqa: E731
        start = events()
        wait_for(lambda: events() > start + 50, 10, message="the calm flow makes events")
        ex.set_flow("off")
        paused = events()
        books = ex.call(lambda e: {t: (list(e.markets[t].book.yes.prices), list(e.markets[t].book.no.prices))
                                   for t in e.active_tickers()})
        ex.call(lambda e: e.advance(e.now_ms + 5_000))  # time passes; nothing happens
        assert events() == paused
        assert all(yes and no for yes, no in books.values())  # the makers' quotes stay while paused
        r = control.post(ex.control_url + "/flow", json={"flow": "firehose"}, timeout=5)
        assert r.json() == {"ok": True, "flow": "firehose"}
        wait_for(lambda: events() > paused + 1_000, 10, message="the firehose resumes the flow")
        assert ex.call(lambda e: e.config.flow.messages_per_s) == 24_000
        assert control.post(ex.control_url + "/flow", json={"flow": "storm"}, timeout=5).status_code == 400
        assert control.post(ex.control_url + "/flow", json={}, timeout=5).status_code == 400
        with pytest.raises(ValueError):
            ex.set_flow("storm")
