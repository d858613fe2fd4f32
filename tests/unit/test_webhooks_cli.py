"""``zhifu webhooks deliver-now`` and ``zhifu webhooks replay`` on a scratch ZHIFU_HOME
(the end-to-end test runs them against a live server's database)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from zhifu.cli import main


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str | None]:
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("ZHIFU_")}
    return unset | {"ZHIFU_HOME": str(tmp_path / "home"), "ZHIFU_LOG_FORMAT": "json"}


def run(env: dict[str, str | None], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, prog_name="zhifu")


def test_deliver_now_on_an_empty_outbox_prints_zero_counts(env: dict[str, str | None]) -> None:
    assert run(env, "db", "upgrade").exit_code == 0
    result = run(env, "webhooks", "deliver-now")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "claimed 0: done 0, retried 0, dead-lettered 0, lost 0"


def test_replay_of_an_unknown_delivery_fails_with_a_message(env: dict[str, str | None]) -> None:
    assert run(env, "db", "upgrade").exit_code == 0
    result = run(env, "webhooks", "replay", str(uuid.uuid4()))
    assert result.exit_code == 1
    assert "no webhook delivery has this id" in result.output


def test_replay_needs_a_uuid(env: dict[str, str | None]) -> None:
    result = run(env, "webhooks", "replay", "not-a-uuid")
    assert result.exit_code == 2
    assert "is not a valid UUID" in result.output


def test_the_commands_refuse_an_unmigrated_database(env: dict[str, str | None]) -> None:
    result = run(env, "webhooks", "deliver-now")
    assert result.exit_code == 1
    assert "zhifu db upgrade" in result.output
