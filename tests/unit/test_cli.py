"""The ``zhifu`` command line, run through click's CliRunner on a scratch ZHIFU_HOME."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from factories import fund, open_accounts, open_bank, pending

from zhifu import cli
from zhifu.cli import main
from zhifu.config import load_settings
from zhifu.demo import demo_id
from zhifu.ledger.model import BATCH_EVENTS_MAX
from zhifu.ledger.service import LedgerService, now_us
from zhifu.runtime import Runtime, build_runtime
from zhifu.security import rotation
from zhifu.security.envelope import KeyRing, generate_key_entry
from zhifu.security.rotation import CHUNK_ROWS_MAX
from zhifu.security.signing import key_id_for, public_key_from_base64
from zhifu.store import migrate

TOP_LEVEL_COMMANDS = (
    "serve",
    "db",
    "demo",
    "ledger",
    "audit",
    "bench",
    "keys",
    "staff",
    "service-token",
)
BENCH_KEYS = {
    "engine",
    "transfers",
    "transfers_per_s",
    "batch_p50_ms",
    "batch_p99_ms",
    "peak_rss_mb",
    "raw_insert_rows_per_s",
    "ratio_to_raw",
}
LOG_FORMAT_ERROR = "ZHIFU_LOG_FORMAT must be 'json' or 'console', got 'xml'"
SERVE_TIMEOUT_S = 60
HEAD_REVISION = migrate.head_revision()


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group under ``group``, as the words that invoke it."""
    paths = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            paths += _command_paths(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


def _command_at(path: tuple[str, ...]) -> click.Command:
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


COMMAND_PATHS = _command_paths(main)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def env(home: Path) -> dict[str, str | None]:
    """ZHIFU_HOME on a scratch directory; every other ZHIFU_* setting unset."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("ZHIFU_")}
    return unset | {"ZHIFU_HOME": str(home), "ZHIFU_LOG_FORMAT": "json"}


def _invoke(args: list[str], env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(main, args, env=env, prog_name="zhifu")


def _run(env: dict[str, str | None], *args: str) -> Result:
    return _invoke(list(args), env)


def _ok(env: dict[str, str | None], *args: str) -> Result:
    result = _run(env, *args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def _assert_usage_error(result: Result, message: str) -> None:
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Usage: zhifu" in result.output
    assert "Error: " in result.output
    assert message in result.output, result.output
    assert "Traceback" not in result.output


@pytest.fixture
def migrated(env: dict[str, str | None]) -> dict[str, str | None]:
    _ok(env, "db", "upgrade")
    return env


@pytest.fixture
def runtime(migrated: dict[str, str | None]) -> Iterator[Runtime]:
    """The same home as the CLI's, for setting up state the CLI then reads."""
    settings = load_settings({k: v for k, v in migrated.items() if v is not None})
    runtime = build_runtime(settings)
    yield runtime
    runtime.close()


# --- help -----------------------------------------------------------------------------


def test_help_lists_every_top_level_command() -> None:
    result = _invoke(["--help"])
    assert result.exit_code == 0
    listed = {
        line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line.strip()
    }
    assert set(TOP_LEVEL_COMMANDS) <= listed
    assert "Usage: zhifu" in result.output


def test_the_command_tree_is_walked() -> None:
    assert ("db", "upgrade") in COMMAND_PATHS
    assert ("bench", "ledger") in COMMAND_PATHS
    assert ("ledger", "verify") in COMMAND_PATHS
    assert len(COMMAND_PATHS) >= 15


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda p: " ".join(p) or "zhifu")
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_works_for_every_command(path: tuple[str, ...], flag: str) -> None:
    result = _invoke([*path, flag])
    assert result.exit_code == 0, result.output
    assert f"Usage: {' '.join(('zhifu', *path))}" in result.output
    command = _command_at(path)
    assert command.help, f"{' '.join(path)} has no help text"
    assert command.help.splitlines()[0] in result.output


def test_version() -> None:
    result = _invoke(["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("zhifu, version ")


def test_unknown_command_is_a_usage_error() -> None:
    result = _invoke(["ledgr"])
    assert result.exit_code == 2
    assert "No such command 'ledgr'" in result.output


# --- db and service-token -----------------------------------------------------------------------


def test_db_upgrade_and_current(env: dict[str, str | None], home: Path) -> None:
    before = _ok(env, "db", "current").output
    assert "current: None" in before
    assert f"head:    {HEAD_REVISION}" in before

    assert _ok(env, "db", "upgrade").output.strip() == f"database at revision {HEAD_REVISION}"
    assert (home / "zhifu.db").is_file()
    current = _ok(env, "db", "current").output.splitlines()
    assert current == [f"current: {HEAD_REVISION}", f"head:    {HEAD_REVISION}"]
    # Upgrading an up-to-date database changes nothing.
    assert _ok(env, "db", "upgrade").output.strip() == f"database at revision {HEAD_REVISION}"


def test_db_downgrade_to_base_and_back(migrated: dict[str, str | None]) -> None:
    assert _ok(migrated, "db", "downgrade", "base").output.strip() == "database at revision None"
    assert "current: None" in _ok(migrated, "db", "current").output
    assert _ok(migrated, "db", "upgrade").output.strip() == f"database at revision {HEAD_REVISION}"


def test_service_token_is_stable_and_private(env: dict[str, str | None], home: Path) -> None:
    first = _ok(env, "service-token").output.strip()
    assert len(first) >= 40
    assert _ok(env, "service-token").output.strip() == first
    assert stat.S_IMODE((home / "api-token").stat().st_mode) == 0o600
    configured = _ok(env | {"ZHIFU_API_TOKEN": "configured-token"}, "service-token")
    assert configured.output.strip() == "configured-token"


# --- demo -------------------------------------------------------------------------------------


def test_demo_seed_twice(migrated: dict[str, str | None]) -> None:
    first = _ok(migrated, "demo", "seed").output
    assert "ledger accounts: 4 created, 0 already there" in first
    assert "transfers: 5 made, 0 already there" in first
    assert "journal: 1 batches sealed" in first
    assert "li-wei" in first

    second = _ok(migrated, "demo", "seed").output
    assert "ledger accounts: 0 created, 4 already there" in second
    assert "transfers: 0 made, 5 already there" in second
    # The balances shown are the same: nothing moved twice.
    balances = [line for line in first.splitlines() if "balance" in line]
    assert balances == [line for line in second.splitlines() if "balance" in line]
    assert len(balances) == 3


# --- ledger verify ------------------------------------------------------------------------------


def test_ledger_verify_passes_on_an_empty_ledger(migrated: dict[str, str | None]) -> None:
    result = _ok(migrated, "ledger", "verify")
    assert "0 accounts, 0 transfers" in result.output
    assert result.output.strip().endswith("ledger verified")


def test_ledger_verify_passes_on_a_clean_ledger(migrated: dict[str, str | None]) -> None:
    _ok(migrated, "demo", "seed")
    text = _ok(migrated, "ledger", "verify").output
    # The demo ledger's 4 accounts and 5 transfers; the demo customer's 2 bank
    # accounts, the bank's 2 cash accounts and 2 cash deposits; the payee's
    # account and the demo payment's hold and posting.
    assert "9 accounts, 9 transfers" in text
    assert "FAIL" not in text
    assert text.strip().endswith("ledger verified")

    report = json.loads(_ok(migrated, "ledger", "verify", "--json").stdout)
    assert report["ok"] is True
    assert report["accounts"] == 9
    assert report["transfers"] == 9
    assert report["blocks"] >= 1
    assert report["unsealed_batches"] == 0
    assert report["checks"]
    assert all(check["ok"] for check in report["checks"])


def test_ledger_verify_fails_after_a_row_is_changed_behind_its_back(
    migrated: dict[str, str | None], home: Path
) -> None:
    _ok(migrated, "demo", "seed")
    with sqlite3.connect(home / "zhifu.db") as db:
        with pytest.raises(sqlite3.DatabaseError):  # the trigger guards the table
            db.execute("UPDATE ledger_transfers SET amount = amount + 1")
        db.execute("DROP TRIGGER ledger_transfers_no_update")
        changed = db.execute(
            "UPDATE ledger_transfers SET amount = amount + 1 WHERE external_ref = 'demo-rent'"
        ).rowcount
    assert changed == 1

    text = _run(migrated, "ledger", "verify")
    assert text.exit_code == 1, text.output
    assert "LEDGER VERIFICATION FAILED" in text.output
    assert "FAIL" in text.output

    as_json = _run(migrated, "ledger", "verify", "--json")
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    failed = {check["name"] for check in report["checks"] if not check["ok"]}
    assert "merkle" in failed  # the batch's root no longer matches its rows
    assert "counters" in failed  # nor do the accounts' counters
    for check in report["checks"]:
        if not check["ok"]:
            assert check["problem_count"] >= 1
            assert check["problems"]


# --- ledger seal, expire, key, account ---------------------------------------------------


def test_ledger_seal(migrated: dict[str, str | None], runtime: Runtime) -> None:
    bank = open_bank(runtime.ledger)
    customers = open_accounts(runtime.ledger, 2)
    fund(runtime.ledger, bank, customers, 1_000)  # one batch, not sealed yet
    fund(runtime.ledger, bank, customers, 1_000)

    first = _ok(migrated, "ledger", "seal").output.strip()
    assert first == "sealed 2 batches; head block 2"
    assert _ok(migrated, "ledger", "seal").output.strip() == "sealed 0 batches; head block 2"
    report = json.loads(_ok(migrated, "ledger", "verify", "--json").stdout)
    assert report["blocks"] == 2
    assert report["unsealed_batches"] == 0


def test_ledger_expire(migrated: dict[str, str | None], runtime: Runtime) -> None:
    # A clock a minute behind makes a one-second hold that has already run out.
    past = LedgerService(runtime.engine, runtime.signer, clock=lambda: now_us() - 60_000_000)
    bank = open_bank(past)
    payer, payee = open_accounts(past, 2)
    fund(past, bank, [payer], 5_000)
    hold = pending(payer, payee, 1_500, timeout_s=1)
    live = pending(payer, payee, 500, timeout_s=3_600)
    assert all(o.ok for o in past.create_transfers([hold, live]))
    assert runtime.ledger.get_account(payer).debits_pending == 2_000

    assert _ok(migrated, "ledger", "expire").output.strip() == "expired 1 pending transfers"
    assert _ok(migrated, "ledger", "expire").output.strip() == "expired 0 pending transfers"
    account = runtime.ledger.get_account(payer)
    assert account.debits_pending == 500
    assert account.balance_available == 4_500
    _ok(migrated, "ledger", "verify")


def test_ledger_key(migrated: dict[str, str | None], runtime: Runtime) -> None:
    lines = _ok(migrated, "ledger", "key").output.splitlines()
    assert lines[0].startswith("key id:")
    assert lines[1].startswith("public key:")
    key_id = lines[0].split(":", 1)[1].strip()
    public_key = lines[1].split(":", 1)[1].strip()
    assert key_id_for(public_key_from_base64(public_key)) == key_id
    assert public_key == runtime.signer.public_key_base64
    assert _ok(migrated, "ledger", "key").output.splitlines() == lines


def test_ledger_account(migrated: dict[str, str | None]) -> None:
    _ok(migrated, "demo", "seed")
    account_id = demo_id("li-wei:CNY")
    shown = json.loads(_ok(migrated, "ledger", "account", str(account_id)).stdout)
    assert shown["id"] == str(account_id)
    assert shown["currency"] == "CNY"
    assert shown["owner_ref"] == "demo:li-wei"
    assert shown["credits_posted"] == 1_000_000
    assert shown["debits_posted"] == 12_345
    assert shown["credits_pending"] == 5_000  # alex-chen's hold towards li-wei
    assert shown["balance_posted"] == 1_000_000 - 12_345
    assert shown["closed"] is False


def test_ledger_account_unknown_id_is_a_clear_error(migrated: dict[str, str | None]) -> None:
    missing = uuid.uuid4()
    result = _run(migrated, "ledger", "account", str(missing))
    assert result.exit_code != 0
    assert f"Error: no ledger account {missing}" in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_ledger_account_malformed_id_is_a_usage_error(migrated: dict[str, str | None]) -> None:
    _assert_usage_error(_run(migrated, "ledger", "account", "42"), "'42' is not a valid UUID")


# --- keys -------------------------------------------------------------------------------------


def test_keys_new_prints_one_fresh_entry(env: dict[str, str | None]) -> None:
    first = _ok(env, "keys", "new", "k2")
    entry = first.stdout.strip()
    assert first.stdout == entry + "\n"  # the entry alone on stdout, ready to paste
    assert entry.startswith("k2:")
    assert "after the active entry" in first.stderr
    assert "zhifu keys rotate" in first.stderr
    assert len(first.stderr.strip().splitlines()) == 1
    ring = KeyRing.from_spec(entry)
    assert ring.key_ids == ("k2",)
    assert _ok(env, "keys", "new", "k2").stdout != first.stdout  # a fresh key every time
    index = _ok(env, "keys", "new", "index")
    assert index.stdout.startswith("index:")
    assert "for a new ring only" in index.stderr


@pytest.mark.parametrize("key_id", ["bad id", "a" * 33, "k:1", ""])
def test_keys_new_with_a_bad_key_id_is_a_usage_error(
    env: dict[str, str | None], key_id: str
) -> None:
    result = _run(env, "keys", "new", key_id)
    _assert_usage_error(result, "KEY_ID")
    assert "1 to 32 characters" in result.output


def test_keys_status_on_a_new_home(migrated: dict[str, str | None], home: Path) -> None:
    text = _ok(migrated, "keys", "status").stdout
    assert "active key: k1" in text
    assert "key ids:    index, k1" in text
    assert "rows under older keys: 0" in text
    assert stat.S_IMODE((home / "master-keys").stat().st_mode) == 0o600  # made on first use

    status = json.loads(_ok(migrated, "keys", "status", "--json").stdout)
    assert status["active_key_id"] == "k1"
    assert status["key_ids"] == ["index", "k1"]
    assert status["rows_under_old_keys"] == 0
    assert status["missing_key_ids"] == []
    assert all(counts == {} for counts in status["usage"].values())

    rotated = _ok(migrated, "keys", "rotate").stdout
    assert "active key: k1" in rotated
    assert "no row is left under an older key" in rotated


def test_keys_status_with_a_ring_from_the_environment(migrated: dict[str, str | None]) -> None:
    spec = ",".join(generate_key_entry(key_id) for key_id in ("index", "k3", "k2"))
    status = json.loads(
        _ok(migrated | {"ZHIFU_MASTER_KEYS": spec}, "keys", "status", "--json").stdout
    )
    assert status["active_key_id"] == "k3"
    assert status["key_ids"] == ["index", "k3", "k2"]


def test_keys_with_a_malformed_ring_is_a_usage_error(migrated: dict[str, str | None]) -> None:
    secret = generate_key_entry("k1").split(":")[1]
    for args in (["keys", "status"], ["keys", "rotate"]):
        result = _run(migrated | {"ZHIFU_MASTER_KEYS": f"k1:{secret[:-4]}"}, *args)
        _assert_usage_error(result, "ZHIFU_MASTER_KEYS entry 1")
        assert secret[:-4] not in result.output


def test_keys_status_needs_a_migrated_database(env: dict[str, str | None]) -> None:
    result = _run(env, "keys", "status")
    assert result.exit_code == 1
    assert "run 'zhifu db upgrade' first" in result.output


def test_keys_rotate_chunk_rows_limit(migrated: dict[str, str | None]) -> None:
    assert _ok(migrated, "keys", "rotate", "--chunk-rows", str(CHUNK_ROWS_MAX))
    result = _run(migrated, "keys", "rotate", "--chunk-rows", str(CHUNK_ROWS_MAX + 1))
    _assert_usage_error(result, "--chunk-rows")


def test_encrypted_column_owners_not_written_yet_are_skipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(cli, "ENCRYPTED_COLUMN_OWNERS", ("zhifu_owner_not_written_yet",))
    monkeypatch.setattr(rotation, "ENCRYPTED_COLUMNS", [])
    assert cli._encrypted_columns() == []
    # An owner that exists but fails to import is an error, not a skip.
    (tmp_path / "zhifu_broken_owner.py").write_text("import zhifu_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "ENCRYPTED_COLUMN_OWNERS", ("zhifu_broken_owner",))
    with pytest.raises(ModuleNotFoundError, match="zhifu_missing_dependency"):
        cli._encrypted_columns()


# --- bench ------------------------------------------------------------------------------------


def test_bench_ledger_prints_one_json_object(env: dict[str, str | None]) -> None:
    result = _ok(env, "bench", "ledger", "--transfers", "2000", "--accounts", "100", "--json")
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    figures = json.loads(lines[0])
    assert isinstance(figures, dict)
    assert set(figures) >= BENCH_KEYS
    assert figures["engine"] == "sqlite"
    assert figures["transfers"] == 2000
    assert figures["verify_ok"] is True
    for key in BENCH_KEYS - {"engine", "transfers"}:
        assert figures[key] > 0, key


BAD_BENCH_OPTIONS = [
    ["--batch-size", str(BATCH_EVENTS_MAX + 1)],
    ["--batch-size", "0"],
    ["--hot-accounts", "100", "--accounts", "100"],
    ["--hot-accounts", "-1"],
    ["--accounts", "1"],
    ["--accounts", "10000001"],
    ["--transfers", "0"],
    ["--transfers", "100000001"],
    ["--transfers", "many"],
    ["--database-url", "mysql://localhost/bench"],
]


@pytest.mark.parametrize("args", BAD_BENCH_OPTIONS, ids=" ".join)
def test_bench_invalid_option_values_are_usage_errors(
    env: dict[str, str | None], args: list[str]
) -> None:
    result = _run(env, "bench", "ledger", "--transfers", "10", "--accounts", "10", *args)
    _assert_usage_error(result, args[0])  # the message names the option


# --- configuration errors -----------------------------------------------------------------------

CONFIGURED_COMMANDS = [
    ["service-token"],
    ["db", "upgrade"],
    ["db", "current"],
    ["db", "downgrade", "base"],
    ["demo", "seed"],
    ["ledger", "verify"],
    ["ledger", "seal"],
    ["ledger", "expire"],
    ["ledger", "key"],
    ["ledger", "account", str(uuid.UUID(int=1))],
    ["keys", "status"],
    ["keys", "rotate"],
]


@pytest.mark.parametrize("args", CONFIGURED_COMMANDS, ids=" ".join)
def test_bad_log_format_is_a_usage_error(env: dict[str, str | None], args: list[str]) -> None:
    result = _run(env | {"ZHIFU_LOG_FORMAT": "xml"}, *args)
    _assert_usage_error(result, LOG_FORMAT_ERROR)


def test_bad_log_level_is_a_usage_error(env: dict[str, str | None]) -> None:
    result = _run(env | {"ZHIFU_LOG_LEVEL": "loud"}, "db", "current")
    _assert_usage_error(result, "ZHIFU_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_with_a_bad_log_format_is_a_usage_error(
    env: dict[str, str | None], home: Path
) -> None:
    # A subprocess with a time limit: a serve that failed to check its settings
    # could otherwise start serving and never return.
    process_env = {k: v for k, v in (dict(os.environ) | env).items() if v is not None}
    process_env["ZHIFU_LOG_FORMAT"] = "xml"
    completed = subprocess.run(
        [sys.executable, "-m", "zhifu.cli", "serve", "--port", str(_free_port())],
        env=process_env,
        capture_output=True,
        text=True,
        timeout=SERVE_TIMEOUT_S,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 2, output
    assert f"Error: {LOG_FORMAT_ERROR}" in output
    assert "Traceback" not in output


def test_serve_with_limits_above_the_pbocs_is_a_usage_error(
    env: dict[str, str | None], home: Path, tmp_path: Path
) -> None:
    limits = tmp_path / "limits.json"
    entry = {
        "account_class": "II",
        "channel": "online",
        "direction": "outgoing",
        "currency": "CNY",
        "daily": "10000.01",
    }
    limits.write_text(json.dumps([entry]), encoding="utf-8")
    assert _invoke(["db", "upgrade"], env).exit_code == 0
    process_env = {k: v for k, v in (dict(os.environ) | env).items() if v is not None}
    process_env["ZHIFU_LIMITS_FILE"] = str(limits)
    completed = subprocess.run(
        [sys.executable, "-m", "zhifu.cli", "serve", "--port", str(_free_port())],
        env=process_env,
        capture_output=True,
        text=True,
        timeout=SERVE_TIMEOUT_S,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 2, output
    assert "ZHIFU_LIMITS_FILE" in output and "at most 10,000.00 CNY" in output
    assert "Traceback" not in output
