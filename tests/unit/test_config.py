"""Settings: defaults, bounds, and secrets kept out of repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from zhifu.config import (
    CORS_ORIGIN_LENGTH_MAX,
    CORS_ORIGINS_MAX,
    DB_POOL_SIZE_MAX,
    GROUP_COMMIT_WAIT_MS_MAX,
    ConfigError,
    load_settings,
)


def test_defaults_need_no_configuration():
    settings = load_settings({})
    assert settings.home == Path("var")
    assert settings.database_url == "sqlite:///var/zhifu.db"
    assert settings.is_sqlite
    assert settings.log_format == "json"
    assert settings.cors_origins == ()


def test_a_postgresql_url_switches_engines():
    settings = load_settings({"ZHIFU_DATABASE_URL": "postgresql://u@db:5432/zhifu"})
    assert not settings.is_sqlite


def test_secrets_never_appear_in_repr():
    settings = load_settings(
        {
            "ZHIFU_DATABASE_URL": "postgresql://u:db-secret-pw@db/zhifu",
            "ZHIFU_LEDGER_SIGNING_KEY": "signing-secret-seed",
            "ZHIFU_API_TOKEN": "token-secret-value",
            "ZHIFU_MASTER_KEYS": "k1:master-secret-material",
        }
    )
    text = repr(settings)
    for secret in ("db-secret-pw", "signing-secret-seed", "token-secret-value", "master-secret"):
        assert secret not in text


@pytest.mark.parametrize(
    ("name", "limit"),
    [
        ("ZHIFU_DB_POOL_SIZE", DB_POOL_SIZE_MAX),
        ("ZHIFU_GROUP_COMMIT_WAIT_MS", GROUP_COMMIT_WAIT_MS_MAX),
    ],
)
def test_integer_settings_at_the_limit_and_one_past(name, limit):
    assert load_settings({name: str(limit)})
    with pytest.raises(ConfigError, match=name):
        load_settings({name: str(limit + 1)})
    with pytest.raises(ConfigError, match="must be an integer"):
        load_settings({name: "many"})


def test_bad_log_settings_name_the_variable_and_the_allowed_values():
    with pytest.raises(ConfigError, match="ZHIFU_LOG_FORMAT must be 'json' or 'console'"):
        load_settings({"ZHIFU_LOG_FORMAT": "xml"})
    with pytest.raises(ConfigError, match="ZHIFU_LOG_LEVEL"):
        load_settings({"ZHIFU_LOG_LEVEL": "LOUD"})


# --- ZHIFU_CORS_ORIGINS -----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "origins"),
    [
        ("", ()),
        (" , ", ()),
        ("https://bank.example.com", ("https://bank.example.com",)),
        (
            " https://bank.example.com , http://localhost:5173,",
            ("https://bank.example.com", "http://localhost:5173"),
        ),
        ("https://bank.example.com:8443", ("https://bank.example.com:8443",)),
        ("http://127.0.0.1:8000,http://[::1]:8000", ("http://127.0.0.1:8000", "http://[::1]:8000")),
        ("https://a.example,https://a.example", ("https://a.example",)),
    ],
)
def test_cors_origins_accepted(raw, origins):
    assert load_settings({"ZHIFU_CORS_ORIGINS": raw}).cors_origins == origins


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("*", "wildcard"),
        ("https://*.example.com", "wildcard"),
        ("https://bank.example.com/", "is not an origin"),
        ("https://bank.example.com/app", "is not an origin"),
        ("https://bank.example.com?x=1", "is not an origin"),
        ("https://bank.example.com#top", "is not an origin"),
        ("bank.example.com", "is not an origin"),
        ("ftp://bank.example.com", "is not an origin"),
        ("https://", "is not an origin"),
        ("https://user@bank.example.com", "is not an origin"),
        ("https://Bank.Example.com", "is not an origin"),
        ("null", "is not an origin"),
        ("https://bank.example.com:0", "port outside 1-65535"),
        ("https://bank.example.com:65536", "port outside 1-65535"),
        ("https://bank.example.com:443", "default port"),
        ("http://bank.example.com:80", "default port"),
    ],
)
def test_cors_origins_rejected_with_a_clear_message(raw, reason):
    with pytest.raises(ConfigError) as caught:
        load_settings({"ZHIFU_CORS_ORIGINS": f"https://ok.example,{raw}"})
    message = str(caught.value)
    assert message.startswith("ZHIFU_CORS_ORIGINS entry 2")
    assert reason in message
    assert "scheme://host[:port]" in message


def test_cors_origins_at_the_limits_and_one_past():
    at_limit = ",".join(f"https://site{number}.example" for number in range(CORS_ORIGINS_MAX))
    assert len(load_settings({"ZHIFU_CORS_ORIGINS": at_limit}).cors_origins) == CORS_ORIGINS_MAX
    with pytest.raises(ConfigError, match=f"at most {CORS_ORIGINS_MAX}"):
        load_settings({"ZHIFU_CORS_ORIGINS": at_limit + ",https://one-more.example"})
    prefix = "https://"
    longest = prefix + "a" * (CORS_ORIGIN_LENGTH_MAX - len(prefix))
    assert load_settings({"ZHIFU_CORS_ORIGINS": longest}).cors_origins == (longest,)
    with pytest.raises(ConfigError, match=f"longer than {CORS_ORIGIN_LENGTH_MAX}") as caught:
        load_settings({"ZHIFU_CORS_ORIGINS": longest + "a"})
    assert longest not in str(caught.value)  # a huge value is not echoed whole


@pytest.mark.parametrize(
    ("raw", "allowed"),
    [
        (None, True),
        ("", True),
        ("true", True),
        ("1", True),
        ("YES", True),
        ("on", True),
        ("false", False),
        ("0", False),
        ("No", False),
        (" off ", False),
    ],
)
def test_webhooks_allow_loopback(raw, allowed):
    env = {} if raw is None else {"ZHIFU_WEBHOOKS_ALLOW_LOOPBACK": raw}
    assert load_settings(env).webhooks_allow_loopback is allowed


def test_webhooks_allow_loopback_refuses_other_words():
    with pytest.raises(ConfigError, match="ZHIFU_WEBHOOKS_ALLOW_LOOPBACK must be true or false"):
        load_settings({"ZHIFU_WEBHOOKS_ALLOW_LOOPBACK": "maybe"})
