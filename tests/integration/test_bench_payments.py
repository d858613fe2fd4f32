"""``zhifu bench payments`` runs end to end on both engines, reports every
figure, and every check after the run holds."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from scratch_db import POSTGRES_SERVER_URL, require_postgres

from zhifu.bench.payments import (
    ACCOUNTS_PER_CUSTOMER_MAX,
    CLIENTS_MAX,
    CUSTOMERS_MAX,
    REPLAYS_MAX,
    SECONDS_MAX,
    WARMUP_S_MAX,
    WORKERS_MAX,
    PaymentsBenchConfig,
    check_config,
    progress_total,
    resident_id,
    summary,
)
from zhifu.cli import main
from zhifu.identity.model import parse_resident_id

SHORT_RUN = [
    "--customers",
    "2",
    "--accounts-per-customer",
    "2",
    "--clients",
    "4",
    "--seconds",
    "1",
    "--warmup-s",
    "0.5",
    "--replays",
    "5",
]
FIGURES = (
    "payments_per_s",
    "p50_ms",
    "p99_ms",
    "floor_requests_per_s",
    "floor_p50_ms",
    "floor_p99_ms",
    "ratio",
)


def _run(args: list[str]) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["bench", "payments", *args, "--json"])
    assert result.exit_code == 0, result.output
    figures: dict[str, Any] = json.loads(result.output.strip().splitlines()[-1])
    return figures


@pytest.mark.parametrize(
    "engine", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_a_short_run_reports_every_figure_and_every_check_holds(engine: str) -> None:
    args = list(SHORT_RUN)
    if engine == "postgresql":
        require_postgres()
        args += ["--database-url", POSTGRES_SERVER_URL]
    figures = _run(args)
    assert figures["engine"] == engine
    assert (figures["customers"], figures["accounts"], figures["clients"]) == (2, 4, 4)
    for name in FIGURES:
        assert figures[name] > 0, name
    assert figures["p99_ms"] >= figures["p50_ms"]
    assert figures["ratio"] == pytest.approx(
        figures["payments_per_s"] / figures["floor_requests_per_s"], rel=0.01
    )
    assert figures["errors"] == 0, figures["error_samples"]
    assert figures["server_log_errors"] == 0
    assert figures["ledger_verified"] is True
    assert figures["money_ok"] is True
    assert figures["balances_matched"] == figures["balances_checked"] == 4
    assert figures["replays_ok"] == figures["replays_checked"] == 5
    # Every payment answered 201, warm-up included, is settled once; no other order exists.
    assert figures["payments_ok"] is True
    assert (
        figures["payments_settled"]
        == figures["payments_checked"]
        == figures["payments"] + figures["warmup_payments"]
    )
    assert figures["payments_missing"] == figures["payments_unexpected"] == 0
    assert figures["ok"] is True


def test_without_json_it_prints_a_summary_first() -> None:
    result = CliRunner().invoke(main, ["bench", "payments", *SHORT_RUN, "--replays", "0"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("sqlite, 1 server worker(s), 4 clients, 4 accounts")
    assert lines[1].startswith("payments: ")
    assert "0 errors" in lines[1]
    assert lines[2].startswith("floor (GET /v1/accounts/{id}): ")
    assert "ledger verified" in lines[3]
    assert "exactly once each" in lines[3]
    assert lines[4] == "ok"
    assert any(line.strip() == "payments_ok: True" for line in lines)


@pytest.mark.parametrize(
    "args",
    [
        ["--workers", "0"],
        ["--workers", str(WORKERS_MAX + 1)],
        ["--clients", "0"],
        ["--clients", str(CLIENTS_MAX + 1)],
        ["--seconds", "0"],
        ["--seconds", str(SECONDS_MAX + 1)],
        ["--warmup-s", "-1"],
        ["--warmup-s", str(WARMUP_S_MAX + 1)],
        ["--customers", "0"],
        ["--customers", str(CUSTOMERS_MAX + 1)],
        ["--accounts-per-customer", "0"],
        ["--accounts-per-customer", str(ACCOUNTS_PER_CUSTOMER_MAX + 1)],
        ["--replays", "-1"],
        ["--replays", str(REPLAYS_MAX + 1)],
        ["--database-url", "mysql://localhost/zhifu"],
    ],
    ids=" ".join,
)
def test_options_out_of_bounds_are_refused(args: list[str]) -> None:
    result = CliRunner().invoke(main, ["bench", "payments", *args])
    assert result.exit_code == 2
    assert args[0] in result.output


def test_one_account_is_refused() -> None:
    result = CliRunner().invoke(
        main, ["bench", "payments", "--customers", "1", "--accounts-per-customer", "1"]
    )
    assert result.exit_code == 2
    assert "a payment needs two accounts" in result.output


def test_the_limits_are_accepted() -> None:
    check_config(
        PaymentsBenchConfig(
            workers=WORKERS_MAX,
            clients=CLIENTS_MAX,
            seconds=SECONDS_MAX,
            warmup_s=WARMUP_S_MAX,
            customers=CUSTOMERS_MAX,
            accounts_per_customer=ACCOUNTS_PER_CUSTOMER_MAX,
            replays=REPLAYS_MAX,
        )
    )
    check_config(PaymentsBenchConfig(workers=1, clients=1, warmup_s=0, customers=2, replays=0))
    check_config(PaymentsBenchConfig(customers=1, accounts_per_customer=2))


def test_every_customer_gets_a_valid_resident_id_of_their_own() -> None:
    ids = [resident_id(n) for n in range(CUSTOMERS_MAX)]
    assert len(set(ids)) == CUSTOMERS_MAX
    for text in (ids[0], ids[999], ids[1000], ids[-1]):
        parse_resident_id(text)  # raises when the check character or the date is wrong


def test_progress_counts_every_step() -> None:
    config = PaymentsBenchConfig(
        customers=3, accounts_per_customer=2, seconds=4, warmup_s=1, replays=7
    )
    # sign-ups and sign-ins, openings and deposits, seconds of load, replays
    assert progress_total(config) == 2 * 3 + 2 * 6 + (1 + 2 * 4) + 7


def test_summary_says_when_a_check_failed() -> None:
    result = {
        "engine": "sqlite",
        "workers": 1,
        "clients": 4,
        "accounts": 4,
        "customers": 2,
        "payments_per_s": 10.0,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "errors": 0,
        "floor_endpoint": "GET /v1/accounts/{id}",
        "floor_requests_per_s": 20.0,
        "floor_p50_ms": 1.0,
        "floor_p99_ms": 2.0,
        "ratio": 0.5,
        "ledger_verified": False,
        "payments_settled": 9,
        "payments_ok": False,
        "balances_matched": 3,
        "balances_checked": 4,
        "replays_ok": 5,
        "replays_checked": 5,
        "ok": False,
    }
    lines = summary(result)
    assert "LEDGER VERIFICATION FAILED" in lines[3]
    assert "SOME LOST OR DOUBLED" in lines[3]
    assert "3/4 balances" in lines[3]
    assert lines[-1] == "FAILED"
