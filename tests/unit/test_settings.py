"""Configuration: defaults, layering (TOML < .env < environment < flags), validation, no secret echoed."""

from __future__ import annotations

import pytest

from actors.settings import ConfigError, SETTINGS, describe_settings, load_settings

CANARY_KEY = "-----BEGIN PRIVATE KEY-----\\nCANARYSECRETBYTES\\n-----END PRIVATE KEY-----"


def load(env=None, flags=None, toml=None, tmp_path=None, dotenv=None):
    config_path = None
    dotenv_path = None
    if toml is not None:
        config_path = tmp_path / "config.toml"
        config_path.write_text(toml)
    if dotenv is not None:
        dotenv_path = tmp_path / ".env"
        dotenv_path.write_text(dotenv)
    return load_settings(config_path=config_path, environ=env or {}, flags=flags, dotenv_path=dotenv_path)


def test_defaults_are_the_seeds_and_local_mode():
    s = load()
    assert s.environment == "local"
    assert s.effective_execution == "exchange"
    assert s.strategy == "whale_follower"
    assert (s.whale_queue_size, s.whale_window_minutes, s.whale_min_size_cents) == (10, 5, 10_000)
    assert (s.whale_max_trades_per_minute, s.whale_token_refill_seconds, s.whale_max_age_seconds) == (3, 20, 120)
    assert s.status_port == 8005 and s.status_host == "127.0.0.1"
    assert s.cleanup_on_startup is True
    assert all(src == "default" for src in s.sources.values())


def test_layering_toml_then_dotenv_then_environment_then_flags(tmp_path):
    toml = "[whale]\nwhale_queue_size = 7\nwhale_max_age_seconds = 30\n[markets]\nmarket_tickers = ['ABC-1']\n"
    s = load(toml=toml, tmp_path=tmp_path)
    assert s.whale_queue_size == 7 and s.sources["whale_queue_size"] == "toml"
    assert s.market_tickers == ("ABC-1",)
    s = load(toml=toml, tmp_path=tmp_path, dotenv="WHALE_QUEUE_SIZE=8\n")
    assert s.whale_queue_size == 8 and s.sources["whale_queue_size"] == "env"
    s = load(toml=toml, tmp_path=tmp_path, dotenv="WHALE_QUEUE_SIZE=8\n", env={"WHALE_QUEUE_SIZE": "9"})
    assert s.whale_queue_size == 9
    s = load(toml=toml, tmp_path=tmp_path, env={"WHALE_QUEUE_SIZE": "9"}, flags={"whale_queue_size": 11})
    assert s.whale_queue_size == 11 and s.sources["whale_queue_size"] == "flag"
    assert s.whale_max_age_seconds == 30


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"WHALE_QUEUE_SIZE": "0"}, "WHALE_QUEUE_SIZE: must be greater than zero"),
        ({"WHALE_MAX_TRADES_PER_MINUTE": "-3"}, "WHALE_MAX_TRADES_PER_MINUTE"),
        ({"WHALE_MIN_SIZE_CENTS": "ten"}, "WHALE_MIN_SIZE_CENTS: expected a whole number"),
        ({"V3_PORT": "70000"}, "V3_PORT: must be a TCP port"),
        ({"V3_TRADING_STRATEGY": "yolo"}, "V3_TRADING_STRATEGY: must be one of"),
        ({"V3_TRADING_STRATEGY": "rl_model"}, "rl_model needs a trained model"),
        ({"V3_CLEANUP_ON_STARTUP": "maybe"}, "V3_CLEANUP_ON_STARTUP: expected true or false"),
        ({"RL_MODE": "config"}, "RL_MARKET_TICKERS: config mode needs"),
        ({"RL_MARKET_TICKERS": "GOOD-1,bad ticker!"}, "RL_MARKET_TICKERS"),
        ({"ENVIRONMENT": "mars"}, "ENVIRONMENT: must be one of"),
        ({"ENVIRONMENT": "demo"}, "needs credentials"),
        ({"V3_HOST": "0.0.0.0"}, "requires V3_STATUS_TOKEN"),
        ({"V3_EXECUTION": "live"}, "live is only for --env prod"),
        ({"WHALE_PRICE_BAND_MIN_CENTS": "60", "WHALE_PRICE_BAND_MAX_CENTS": "40"}, "minimum must be below"),
    ],
)
def test_bad_values_name_the_setting(env, fragment):
    with pytest.raises(ConfigError) as info:
        load(env=env)
    assert fragment in str(info.value)


def test_seed_environment_spellings():
    creds = {"KALSHI_API_KEY_ID": "k", "KALSHI_PRIVATE_KEY_CONTENT": CANARY_KEY}
    assert load(env={"ENVIRONMENT": "production", **creds}).environment == "prod"
    assert load(env={"ENVIRONMENT": "production", **creds}).effective_execution == "paper"


def test_demo_and_production_hosts_never_mix():
    creds = {"KALSHI_API_KEY_ID": "k", "KALSHI_PRIVATE_KEY_CONTENT": CANARY_KEY}
    with pytest.raises(ConfigError, match="belongs to Kalshi prod"):
        load(env={"ENVIRONMENT": "demo", "KALSHI_API_URL": "https://external-api.kalshi.com/trade-api/v2", **creds})
    with pytest.raises(ConfigError, match="belongs to Kalshi demo"):
        load(env={"ENVIRONMENT": "prod", "KALSHI_WS_URL": "wss://demo-api.kalshi.co/trade-api/ws/v2", **creds})
    with pytest.raises(ConfigError, match="not an allowed prod rest URL"):
        load(env={"ENVIRONMENT": "prod", "KALSHI_API_URL": "http://external-api.kalshi.com/trade-api/v2", **creds})
    with pytest.raises(ConfigError, match="not an allowed prod rest URL"):
        load(env={"ENVIRONMENT": "prod", "KALSHI_API_URL": "https://external-api.kalshi.com.evil.example/x", **creds})
    s = load(env={"ENVIRONMENT": "demo", **creds})
    assert s.has_credentials and s.effective_execution == "exchange"


def test_secrets_never_appear_in_errors_or_repr():
    env = {"ENVIRONMENT": "demo", "KALSHI_API_KEY_ID": "KEYID-CANARY-0001", "KALSHI_PRIVATE_KEY_CONTENT": CANARY_KEY,
           "V3_STATUS_TOKEN": "TOKENCANARY"}
    s = load(env=env)
    text = repr(s) + str(s)
    assert "CANARYSECRETBYTES" not in text and "TOKENCANARY" not in text and "KEYID-CANARY-0001" not in text
    with pytest.raises(ConfigError) as info:
        load(env={**env, "WHALE_QUEUE_SIZE": "x"})
    assert "CANARY" not in str(info.value)


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[whale\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(config_path=bad, environ={}, dotenv_path=None)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_path=tmp_path / "nope.toml", environ={}, dotenv_path=None)
    wrong_type = tmp_path / "t.toml"
    wrong_type.write_text("[whale]\nwhale_queue_size = 'many'\n")
    with pytest.raises(ConfigError, match=r"\[whale\] whale_queue_size"):
        load_settings(config_path=wrong_type, environ={}, dotenv_path=None)


def test_every_setting_is_documented():
    text = describe_settings()
    for s in SETTINGS:
        assert s.key in text and s.doc
