"""Configuration, read once from environment variables.

Every setting has a documented default (see docs/configuration.md) so that the
embedded single-process mode needs no configuration at all. A PostgreSQL URL in
``ZHIFU_DATABASE_URL`` switches engines with no code change.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_HOME = "var"
GROUP_COMMIT_WAIT_MS_MAX = 100
DB_POOL_SIZE_MAX = 64
CORS_ORIGINS_MAX = 32
CORS_ORIGIN_LENGTH_MAX = 300
# An origin as a browser sends it in the Origin header: lowercase scheme and
# host (a DNS name, an IPv4 address or a bracketed IPv6 address), an optional
# port, nothing after. CORS compares origins as exact strings.
_ORIGIN = re.compile(
    r"(?P<scheme>https?)://"
    r"(?P<host>[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"
    r"|\[[0-9a-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


class ConfigError(ValueError):
    """A configuration variable holds a value that is not allowed."""


def _int_env(env: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


_TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
_FALSE_WORDS = frozenset({"false", "0", "no", "off"})


def _bool_env(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    word = raw.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _cors_origins(raw: str) -> tuple[str, ...]:
    """ZHIFU_CORS_ORIGINS: comma-separated exact origins, each checked."""
    origins = [entry.strip() for entry in raw.split(",") if entry.strip()]
    if len(origins) > CORS_ORIGINS_MAX:
        raise ConfigError(
            f"ZHIFU_CORS_ORIGINS holds {len(origins)} origins, at most {CORS_ORIGINS_MAX} allowed"
        )
    for number, origin in enumerate(origins, start=1):
        problem = _origin_problem(origin)
        if problem is not None:
            shown = origin if len(origin) <= CORS_ORIGIN_LENGTH_MAX else origin[:40] + "..."
            raise ConfigError(
                f"ZHIFU_CORS_ORIGINS entry {number} ({shown!r}) {problem}; an origin is"
                " scheme://host[:port] with scheme http or https, in lowercase, with no"
                " path, e.g. https://bank.example.com"
            )
    return tuple(dict.fromkeys(origins))  # first occurrence wins, order kept


def _origin_problem(origin: str) -> str | None:
    """Why ``origin`` is not an allowed CORS origin, or None when it is."""
    if "*" in origin:
        return "is a wildcard, which is not allowed: list each origin"
    if len(origin) > CORS_ORIGIN_LENGTH_MAX:
        return f"is longer than {CORS_ORIGIN_LENGTH_MAX} characters"
    match = _ORIGIN.fullmatch(origin)
    if match is None:
        return "is not an origin"
    port = match.group("port")
    if port is not None:
        if not 1 <= int(port) <= 65535:
            return "has a port outside 1-65535"
        if int(port) == _DEFAULT_PORTS[match.group("scheme")]:
            return "names the scheme's default port, which browsers leave out of the Origin"
    return None


@dataclass(frozen=True, slots=True)
class Settings:
    """Process-wide settings. Build with :func:`load_settings`."""

    home: Path
    # Secrets (and a URL that may hold a password) stay out of repr, so out of logs.
    database_url: str = field(repr=False)
    ledger_signing_key: str | None = field(repr=False)
    ledger_signing_key_file: Path
    ledger_verify_keys: tuple[str, ...]
    api_token: str | None = field(repr=False)
    log_level: str
    log_format: str
    db_pool_size: int
    group_commit_wait_ms: int
    # KEY_ID:BASE64 entries: key material, so kept out of repr (and so out of logs).
    master_keys: str | None = field(repr=False)
    master_key_file: Path
    # Browser origins allowed to call the API cross-origin; empty: CORS closed.
    cors_origins: tuple[str, ...]
    # WebAuthn relying party: passkeys are bound to this id and these origins.
    webauthn_rp_id: str = "localhost"
    webauthn_origins: tuple[str, ...] = ("http://localhost:8000",)
    # Whether webhook subscriptions may name loopback URLs (development only).
    webhooks_allow_loopback: bool = True
    # A JSON file with the bank's own limit policies (lower than the PBOC's).
    limits_file: Path | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read settings from ``env`` (default: the process environment)."""
    env = dict(os.environ) if env is None else env
    home = Path(env.get("ZHIFU_HOME") or DEFAULT_HOME)
    database_url = env.get("ZHIFU_DATABASE_URL") or f"sqlite:///{home / 'zhifu.db'}"
    log_format = env.get("ZHIFU_LOG_FORMAT", "json")
    if log_format not in ("json", "console"):
        raise ConfigError(f"ZHIFU_LOG_FORMAT must be 'json' or 'console', got {log_format!r}")
    log_level = env.get("ZHIFU_LOG_LEVEL", "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(
            f"ZHIFU_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}"
        )
    verify_keys = tuple(
        k.strip() for k in env.get("ZHIFU_LEDGER_VERIFY_KEYS", "").split(",") if k.strip()
    )
    return Settings(
        home=home,
        database_url=database_url,
        ledger_signing_key=env.get("ZHIFU_LEDGER_SIGNING_KEY") or None,
        ledger_signing_key_file=Path(
            env.get("ZHIFU_LEDGER_SIGNING_KEY_FILE") or home / "ledger-signing.key"
        ),
        ledger_verify_keys=verify_keys,
        api_token=env.get("ZHIFU_API_TOKEN") or None,
        log_level=log_level,
        log_format=log_format,
        db_pool_size=_int_env(env, "ZHIFU_DB_POOL_SIZE", 8, 1, DB_POOL_SIZE_MAX),
        group_commit_wait_ms=_int_env(
            env, "ZHIFU_GROUP_COMMIT_WAIT_MS", 2, 0, GROUP_COMMIT_WAIT_MS_MAX
        ),
        master_keys=env.get("ZHIFU_MASTER_KEYS") or None,
        master_key_file=Path(env.get("ZHIFU_MASTER_KEY_FILE") or home / "master-keys"),
        cors_origins=_cors_origins(env.get("ZHIFU_CORS_ORIGINS", "")),
        webauthn_rp_id=env.get("ZHIFU_WEBAUTHN_RP_ID") or "localhost",
        webauthn_origins=tuple(
            o.strip()
            for o in (env.get("ZHIFU_WEBAUTHN_ORIGINS") or "http://localhost:8000").split(",")
            if o.strip()
        ),
        webhooks_allow_loopback=_bool_env(env, "ZHIFU_WEBHOOKS_ALLOW_LOOPBACK", True),
        limits_file=Path(env["ZHIFU_LIMITS_FILE"]) if env.get("ZHIFU_LIMITS_FILE") else None,
    )
