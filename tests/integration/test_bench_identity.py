"""``zhifu bench identity`` runs end to end and reports every figure."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from zhifu.bench.identity import AUTHENTICATIONS_MAX, CUSTOMERS_MAX
from zhifu.cli import main


def test_bench_identity_prints_one_json_object() -> None:
    result = CliRunner().invoke(
        main, ["bench", "identity", "--customers", "2", "--authentications", "50", "--json"]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert figures["engine"] == "sqlite"
    for part, count in (("register", 2), ("login", 2), ("authenticate", 50)):
        assert figures[part]["count"] == count
        assert figures[part]["per_s"] > 0
        assert figures[part]["p99_ms"] >= figures[part]["p50_ms"] > 0


@pytest.mark.parametrize(
    "args",
    [
        ["--customers", "0"],
        ["--customers", str(CUSTOMERS_MAX + 1)],
        ["--authentications", "0"],
        ["--authentications", str(AUTHENTICATIONS_MAX + 1)],
    ],
    ids=" ".join,
)
def test_bench_identity_limits(args: list[str]) -> None:
    result = CliRunner().invoke(main, ["bench", "identity", *args])
    assert result.exit_code == 2
    assert args[0] in result.output


def test_bench_identity_accepts_the_limits() -> None:
    from zhifu.bench.identity import IdentityBenchConfig, check_config

    check_config(IdentityBenchConfig(customers=CUSTOMERS_MAX, authentications=AUTHENTICATIONS_MAX))
