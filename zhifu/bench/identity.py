"""``zhifu bench identity``: what authentication costs per request and per sign-in.

On a scratch database (as ``zhifu bench ledger``), with the production
password hasher (argon2id, t=2, m=46 MiB) and a fresh key ring:

- ``register``: customers registered one by one (argon2id + four envelope
  encryptions + three blind indexes + the audit event);
- ``login``: password sign-ins (argon2id verify dominates, by design);
- ``authenticate``: session-token checks, the cost every API call pays
  (hash the token, read the session and the customer; a write at most every
  30 s per session).

Figures are per second from one thread, and latency percentiles in ms.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zhifu.bench.ledger import scratch_database
from zhifu.identity.access import SubjectKind
from zhifu.identity.model import resident_id_check_char
from zhifu.identity.passkeys import RelyingParty
from zhifu.identity.service import IdentityService, Registration
from zhifu.ops.audit import AuditContext
from zhifu.security.envelope import KeyRing, generate_key_entry
from zhifu.store import migrate
from zhifu.store.engine import create_db_engine

CUSTOMERS_MAX = 10_000
AUTHENTICATIONS_MAX = 1_000_000
PASSWORD = "bench horse battery staple"  # noqa: S105 - benchmark data

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class IdentityBenchConfig:
    database_url: str | None = None
    customers: int = 20
    authentications: int = 20_000


def check_config(config: IdentityBenchConfig) -> None:
    if not 1 <= config.customers <= CUSTOMERS_MAX:
        raise ValueError(f"--customers must be between 1 and {CUSTOMERS_MAX}")
    if not 1 <= config.authentications <= AUTHENTICATIONS_MAX:
        raise ValueError(f"--authentications must be between 1 and {AUTHENTICATIONS_MAX}")


def _resident_id(n: int) -> str:
    first = f"110105{19800101 + n % 28:08d}{n % 1000:03d}"
    return first + resident_id_check_char(first)


def _letters(n: int) -> str:
    """A name part without digits (names may not contain any)."""
    letters = ""
    while True:
        n, rest = divmod(n, 26)
        letters += chr(ord("a") + rest)
        if n == 0:
            return letters.capitalize()


def _timed(count: int, action: Callable[[int], object], progress: Progress | None) -> list[float]:
    latencies = []
    for n in range(count):
        started = time.perf_counter()
        action(n)
        latencies.append(time.perf_counter() - started)
        if progress is not None:
            progress(1)
    return latencies


def _figures(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "count": len(ordered),
        "per_s": round(len(ordered) / sum(ordered), 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
    }


def run_identity_bench(
    config: IdentityBenchConfig, progress: Progress | None = None
) -> dict[str, Any]:
    with scratch_database(config.database_url) as (url, engine_name):
        engine = create_db_engine(url, pool_size=4)
        try:
            migrate.upgrade(engine)
            keyring = KeyRing.from_spec(f"{generate_key_entry('index')},{generate_key_entry('k1')}")
            service = IdentityService(
                engine,
                keyring,
                relying_party=RelyingParty("localhost", "bench", ("http://localhost:8000",)),
            )
            ctx = AuditContext(source="127.0.0.1")

            def register(n: int) -> None:
                service.register_customer(
                    Registration(
                        name=f"Lin {_letters(n)}",
                        resident_id=_resident_id(n),
                        mobile=f"+86139{n:08d}",
                        email=f"bench{n}@example.com",
                        password=PASSWORD,
                    ),
                    ctx,
                )

            tokens: list[str] = []

            def login(n: int) -> None:
                result = service.login(
                    SubjectKind.CUSTOMER,
                    f"+86139{n:08d}",
                    PASSWORD,
                    browser_token=None,
                    user_agent="bench",
                    ctx=ctx,
                )
                assert result.session_token is not None
                tokens.append(result.session_token)

            registered = _timed(config.customers, register, progress)
            logged_in = _timed(config.customers, login, progress)
            authenticated = _timed(
                config.authentications,
                lambda n: service.authenticate(tokens[n % len(tokens)]),
                progress,
            )
        finally:
            engine.dispose()
    return {
        "engine": engine_name,
        "register": _figures(registered),
        "login": _figures(logged_in),
        "authenticate": _figures(authenticated),
    }
