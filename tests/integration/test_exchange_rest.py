"""REST transport of the local exchange: auth (each 401 body), public routes, Date header, rate limits,
error pass-through. Driven with plain `requests` and signatures made straight from the protocol doc."""

from __future__ import annotations

import email.utils
import time

import pytest
import requests

from kalshi.exchange.ratelimit import RateLimiter, TokenBucket
from tests.integration.test_exchange_support import (  # noqa: F401  (make_exchange is a fixture)
    KEY_A,
    Client,
    auth_headers,
    keypair,
    make_exchange,
    sign,
)

pytestmark = pytest.mark.timeout(60)

BAD_SIG = {"error": {"code": "authentication_error", "message": "authentication_error",
                     "details": "INCORRECT_API_KEY_SIGNATURE"}}
UNKNOWN_KEY = {"error": {"code": "authentication_error", "message": "authentication_error", "details": "NOT_FOUND"}}
MISSING = {"error": {"code": "signature_is_missing_from_headers", "message": "signature is missing from headers"}}
EXPIRED = {"error": {"code": "header_timestamp_expired", "message": "header timestamp expired"}}


@pytest.fixture
def ex(make_exchange):
    return make_exchange(rate_limits=False)


def raw(ex, method, path, headers=None, **kw):
    return requests.request(method, ex.rest_url + path, headers=headers or {}, timeout=5, **kw)


def test_signed_private_call_succeeds(ex):
    c = Client(ex)
    r = c.get("/portfolio/balance?subaccount=0")  # the query is not signed
    assert r.status_code == 200, r.text
    assert r.json()["balance"] == 10_000


def test_kalshi_auth_credentials_are_accepted(ex):
    from kalshi.auth import Credentials

    key, _ = keypair(0)
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    creds = Credentials.from_pem_text(KEY_A, pem.decode())
    r = raw(ex, "GET", "/portfolio/balance", creds.sign_headers("GET", "/trade-api/v2/portfolio/balance"))
    assert r.status_code == 200, r.text


def test_missing_signature_header(ex):
    h = auth_headers(KEY_A, keypair(0)[0], "GET", "/trade-api/v2/portfolio/balance")
    del h["KALSHI-ACCESS-SIGNATURE"]
    r = raw(ex, "GET", "/portfolio/balance", h)
    assert (r.status_code, r.json()) == (401, MISSING)
    assert (raw(ex, "GET", "/portfolio/balance").status_code, raw(ex, "GET", "/portfolio/balance").json()) == (401, MISSING)


def test_bad_signature_variants(ex):
    key = keypair(0)[0]
    ts = str(int(time.time() * 1000))
    cases = [
        sign(key, ts, "GET", "/trade-api/v2/portfolio/balance?subaccount=0"),  # query signed
        sign(key, ts, "GET", "/portfolio/balance"),  # prefix missing
        sign(key, ts, "get", "/trade-api/v2/portfolio/balance"),  # method case
        sign(keypair(1)[0], ts, "GET", "/trade-api/v2/portfolio/balance"),  # someone else's key
        "not base64!!",
    ]
    for sig in cases:
        h = {"KALSHI-ACCESS-KEY": KEY_A, "KALSHI-ACCESS-TIMESTAMP": ts, "KALSHI-ACCESS-SIGNATURE": sig}
        r = raw(ex, "GET", "/portfolio/balance?subaccount=0", h)
        assert (r.status_code, r.json()) == (401, BAD_SIG)


def test_unknown_key(ex):
    h = auth_headers("99999999-0000-4000-8000-000000000000", keypair(0)[0], "GET", "/trade-api/v2/portfolio/balance")
    r = raw(ex, "GET", "/portfolio/balance", h)
    assert (r.status_code, r.json()) == (401, UNKNOWN_KEY)


@pytest.mark.parametrize("skew_ms,ok", [(5_000, True), (-5_000, True), (15_000, False), (-30_000, False),
                                        (300_000, False)])
def test_timestamp_window(ex, skew_ms, ok):
    r = Client(ex).get("/portfolio/balance", skew_ms=skew_ms)
    if ok:
        assert r.status_code == 200
    else:
        assert (r.status_code, r.json()) == (401, EXPIRED)


def test_garbage_timestamp(ex):
    h = auth_headers(KEY_A, keypair(0)[0], "GET", "/trade-api/v2/portfolio/balance")
    h["KALSHI-ACCESS-TIMESTAMP"] = "12ab"
    assert raw(ex, "GET", "/portfolio/balance", h).json() == EXPIRED


def test_public_routes_without_auth_and_bad_auth_on_public(ex):
    r = raw(ex, "GET", "/exchange/status")
    assert r.status_code == 200 and r.json()["exchange_active"] is True
    h = auth_headers(KEY_A, keypair(1)[0], "GET", "/trade-api/v2/exchange/status")  # wrong key for KEY_A
    r = raw(ex, "GET", "/exchange/status", h)
    assert (r.status_code, r.json()) == (401, BAD_SIG)


def test_date_header_follows_exchange_clock(make_exchange):
    ex = make_exchange(rate_limits=False, clock_skew_ms=90_000)
    r = raw(ex, "GET", "/exchange/status")
    served = email.utils.parsedate_to_datetime(r.headers["Date"]).timestamp()
    assert 85 <= served - time.time() <= 95
    # a client on the true clock is now outside the window; one using the Date offset is fine
    assert Client(ex).get("/portfolio/balance").json() == EXPIRED
    assert Client(ex).get("/portfolio/balance", skew_ms=90_000).status_code == 200
    r401 = Client(ex).get("/portfolio/balance")
    assert "Date" in r401.headers


def test_engine_errors_and_bad_json(ex):
    c = Client(ex)
    r = c.get("/nope")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    body = {"ticker": "FAKE-M0", "side": "yes", "price": "0.4000", "count": "1.00", "client_order_id": "c1"}
    assert c.post("/portfolio/events/orders", body).status_code == 201
    r = c.post("/portfolio/events/orders", body)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "order_already_exists")
    h = auth_headers(KEY_A, keypair(0)[0], "POST", "/trade-api/v2/portfolio/events/orders")
    h["Content-Type"] = "application/json"
    r = raw(ex, "POST", "/portfolio/events/orders", h, data=b'{"ticker": NaN')
    assert r.status_code == 400 and r.json()["code"] == "bad_request"


def test_rate_limit_429_body_without_retry_after(make_exchange):
    ex = make_exchange(rate_limits=True, tier="basic")
    # Freeze the limiter's clock: on a loaded machine 25 calls take long enough for the bucket to refill.
    limiter = ex.server.limiter
    allow = limiter.allow
    limiter.allow = lambda who, bucket, cost, now: allow(who, bucket, cost, 1_000.0)
    c = Client(ex)
    codes = [c.get("/exchange/status", signed=True).status_code for _ in range(25)]
    assert codes[:20] == [200] * 20  # Basic read bucket: 200 tokens, 10 per call
    assert 429 in codes[20:]
    r = c.get("/exchange/status")
    assert r.status_code == 429 and r.json() == {"error": "too many requests"}
    assert "Retry-After" not in r.headers and not any(h.lower().startswith("x-ratelimit") for h in r.headers)
    # the write bucket is separate: writes still pass while reads are exhausted
    body = {"ticker": "FAKE-M1", "side": "no", "price": "0.3000", "count": "1.00"}
    assert c.post("/portfolio/events/orders", body).status_code == 201


def test_account_limits_reports_tier(make_exchange):
    ex = make_exchange(tier="premier")
    r = Client(ex).get("/account/limits")
    assert r.json() == {"usage_tier": "premier", "read": {"refill_rate": 1000, "bucket_capacity": 1000},
                        "write": {"refill_rate": 1000, "bucket_capacity": 2000}, "grants": []}


def test_token_bucket_refill_and_tiers():
    b = TokenBucket(100, 100, now=0.0)
    assert all(b.try_take(10, 0.0) for _ in range(10))
    assert not b.try_take(10, 0.0)
    assert not b.try_take(10, 0.05)  # 5 tokens back
    assert b.try_take(10, 0.1)
    lim = RateLimiter("basic")
    assert lim.limits.write_capacity == 100 and RateLimiter("advanced").limits.write_capacity == 600
    assert all(lim.allow("u", "write", 10, 0.0) for _ in range(10)) and not lim.allow("u", "write", 10, 0.0)
    assert lim.allow("other", "write", 10, 0.0)  # per user
    assert RateLimiter("basic", enabled=False).allow("u", "write", 10**6, 0.0)
    with pytest.raises(ValueError):
        RateLimiter("gold")
