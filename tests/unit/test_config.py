"""Settings: defaults, bounds, and secrets kept out of repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from zhifu.config import DB_POOL_SIZE_MAX, GROUP_COMMIT_WAIT_MS_MAX, ConfigError, load_settings


def test_defaults_need_no_configuration():
    settings = load_settings({})
    assert settings.home == Path("var")
    assert settings.database_url == "sqlite:///var/zhifu.db"
    assert settings.is_sqlite
    assert settings.log_format == "json"


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
