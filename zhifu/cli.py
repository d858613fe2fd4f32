"""The ``zhifu`` command line. ``zhifu --help`` lists every command."""

from __future__ import annotations

import importlib
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import click

from zhifu import __version__
from zhifu.config import ConfigError, Settings, load_settings
from zhifu.identity.access import Role
from zhifu.ops.audit import LIST_LIMIT_MAX as AUDIT_LIST_LIMIT_MAX
from zhifu.runtime import Runtime, build_runtime, tune_gc
from zhifu.security.envelope import KeyRing
from zhifu.security.rotation import CHUNK_ROWS_DEFAULT, CHUNK_ROWS_MAX, EncryptedColumns
from zhifu.verification import Check


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


@contextmanager
def _runtime(*, needs_schema: bool = True) -> Iterator[Runtime]:
    """The runtime for one command; with ``needs_schema``, refuse an unmigrated database."""
    from zhifu.store import migrate

    settings = _settings()
    try:
        runtime = build_runtime(settings)
    except ValueError as exc:  # an unsupported ZHIFU_DATABASE_URL
        raise click.UsageError(f"ZHIFU_DATABASE_URL: {exc}") from exc
    try:
        if needs_schema:
            current, head = migrate.current_revision(runtime.engine), migrate.head_revision()
            if current != head:
                raise click.ClickException(
                    f"the database schema is at revision {current or 'none'}, this version"
                    f" needs {head}: run 'zhifu db upgrade' first"
                )
        yield runtime
    finally:
        runtime.close()


@contextmanager
def _progress(label: str, length: int | None) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on a terminal (stderr); nothing when output is piped."""
    if not sys.stderr.isatty():
        yield None
        return
    bar: Any
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar.update


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zhifu")
def main() -> None:
    """zhifu (智付): a bank's payment platform.

    Configuration comes from ZHIFU_* environment variables (docs/configuration.md);
    with none set, everything runs on an embedded SQLite database under ./var/.
    """


# --- serve --------------------------------------------------------------------------

_TLS_FILE = click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Server processes (use PostgreSQL for more than one writer at scale).",
)
@click.option(
    "--tls-cert",
    envvar="ZHIFU_TLS_CERT",
    show_envvar=True,
    type=_TLS_FILE,
    help="PEM certificate (chain) to serve https with; needs --tls-key.",
)
@click.option(
    "--tls-key",
    envvar="ZHIFU_TLS_KEY",
    show_envvar=True,
    type=_TLS_FILE,
    help="Unencrypted PEM private key of --tls-cert.",
)
def serve(host: str, port: int, workers: int, tls_cert: Path | None, tls_key: Path | None) -> None:
    """Serve the HTTP API (and its docs at /docs).

    Plain http, or https with --tls-cert and --tls-key (both, or neither).
    """
    import uvicorn

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError(
            "--tls-cert and --tls-key (ZHIFU_TLS_CERT, ZHIFU_TLS_KEY) go together:"
            " give both to serve https, or neither to serve plain http"
        )
    if tls_cert is not None and tls_key is not None:
        _check_tls_files(tls_cert, tls_key)
    with _runtime() as runtime:
        # Settings valid, database reachable and migrated, before any worker starts.
        try:
            runtime.limit_policies  # noqa: B018 - read now: a bad ZHIFU_LIMITS_FILE stops here
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from exc
    if workers > 1:
        _prepare_multiprocess_metrics(runtime.settings.home)

    scheme = "http" if tls_cert is None else "https"
    click.echo(f"zhifu {__version__} serving on {scheme}://{host}:{port}")
    click.echo(f"  API docs: {scheme}://{host}:{port}/docs")
    click.echo("  internal API token: run 'zhifu service-token'")
    uvicorn.run(
        "zhifu.api.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
    )


def _check_tls_files(cert: Path, key: Path) -> None:
    """Load the pair once now, so a bad file is a clear message, not a worker's traceback."""
    import ssl

    def encrypted_key() -> str:
        raise click.UsageError(
            f"--tls-key {key} is encrypted; zhifu needs an unencrypted key file"
            " (protect it with mode 0600 instead)"
        )

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            cert, key, password=encrypted_key
        )
    except (ssl.SSLError, OSError) as exc:
        raise click.UsageError(
            f"cannot serve https with certificate {cert} and key {key}: they must be a PEM"
            f" certificate and its matching unencrypted PEM private key ({exc})"
        ) from exc


@main.command("service-token")
def service_token() -> None:
    """Print the service token that internal APIs (/v1/ledger) require."""
    with _runtime(needs_schema=False) as runtime:
        click.echo(runtime.service_token)


def _prepare_multiprocess_metrics(home: Path) -> None:
    """Workers share metrics through files in an empty directory (prometheus_client)."""
    from zhifu.ops.metrics import MULTIPROC_DIR_ENV

    directory = Path(os.environ.get(MULTIPROC_DIR_ENV) or home / "prometheus-multiproc")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in directory.glob("*.db"):  # samples of an earlier run's workers
        stale.unlink()
    os.environ[MULTIPROC_DIR_ENV] = str(directory)


class _Report(Protocol):
    checks: list[Check]

    @property
    def ok(self) -> bool: ...

    def as_dict(self) -> dict[str, object]: ...


def _finish_verification(report: _Report, as_json: bool, summary: str, subject: str) -> None:
    """Print a verification report (JSON, or a line per check) and exit 0 or 1."""
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        click.echo(summary)
        for check in report.checks:
            click.echo(f"  {'ok  ' if check.ok else 'FAIL'} {check.name}")
            for problem in check.problems:
                click.echo(f"       - {problem}")
            if check.problem_count > len(check.problems):
                click.echo(f"       ... and {check.problem_count - len(check.problems)} more")
        click.echo(f"{subject} verified" if report.ok else f"{subject.upper()} VERIFICATION FAILED")
    sys.exit(0 if report.ok else 1)


# --- db -----------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema migrations."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def db_upgrade(revision: str) -> None:
    """Migrate the schema up to REVISION (default: the newest)."""
    from zhifu.store import migrate

    with _runtime(needs_schema=False) as runtime:
        migrate.upgrade(runtime.engine, revision)
        click.echo(f"database at revision {migrate.current_revision(runtime.engine)}")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate the schema down to REVISION ('base' removes every table)."""
    from zhifu.store import migrate

    with _runtime(needs_schema=False) as runtime:
        migrate.downgrade(runtime.engine, revision)
        click.echo(f"database at revision {migrate.current_revision(runtime.engine)}")


@db.command("current")
def db_current() -> None:
    """Print the schema revision of the database and the newest one known."""
    from zhifu.store import migrate

    with _runtime(needs_schema=False) as runtime:
        click.echo(f"current: {migrate.current_revision(runtime.engine)}")
        click.echo(f"head:    {migrate.head_revision()}")


# --- demo ---------------------------------------------------------------------------


@main.group()
def demo() -> None:
    """Demo data for trying the platform out."""


@demo.command("seed")
def demo_seed() -> None:
    """Create the demo ledger accounts and transfers (safe to run again)."""
    from zhifu.demo import seed

    with _runtime() as runtime:
        for line in seed(runtime):
            click.echo(line)


# --- ledger -------------------------------------------------------------------------


@main.group()
def ledger() -> None:
    """The double-entry ledger: verification, sealing, expiry, keys."""


@ledger.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def ledger_verify(as_json: bool) -> None:
    """Recompute every ledger invariant; exit status 1 on any mismatch.

    Checks: debits = credits per currency, every account's counters against its
    transfers, balance flags, Merkle roots of every batch, and the signed hash
    chain of blocks.
    """
    from sqlalchemy import text

    with _runtime() as runtime:
        with runtime.engine.connect() as connection:
            total = connection.execute(text("SELECT COUNT(*) FROM ledger_transfers")).scalar_one()
        with _progress("verifying transfers", int(total)) as progress:
            report = runtime.ledger.verify(progress)
    summary = (
        f"{report.accounts} accounts, {report.transfers} transfers, {report.batches} batches,"
        f" {report.blocks} blocks ({report.unsealed_batches} batches waiting to be sealed)"
    )
    _finish_verification(report, as_json, summary, "ledger")


@ledger.command("seal")
def ledger_seal() -> None:
    """Chain every committed batch into a signed block now."""
    with _runtime() as runtime:
        total = 0
        while sealed := runtime.ledger.seal():
            total += sealed
        head = runtime.ledger.block_head()
        click.echo(f"sealed {total} batches; head block {head.seq if head else 0}")


@ledger.command("expire")
def ledger_expire() -> None:
    """Void every pending transfer whose timeout has passed."""
    with _runtime() as runtime:
        total = 0
        while expired := runtime.ledger.expire_pending():
            total += expired
        click.echo(f"expired {total} pending transfers")


@ledger.command("key")
def ledger_key() -> None:
    """Show the public key that signs the journal (publish it to counterparties)."""
    with _runtime(needs_schema=False) as runtime:
        click.echo(f"key id:     {runtime.signer.key_id}")
        click.echo(f"public key: {runtime.signer.public_key_base64}")


@ledger.command("account")
@click.argument("account_id", type=click.UUID)
def ledger_account(account_id: uuid.UUID) -> None:
    """Show one ledger account's counters and balances."""
    from zhifu.ledger.errors import AccountNotFoundError

    with _runtime() as runtime:
        try:
            account = runtime.ledger.get_account(account_id)
        except AccountNotFoundError as exc:
            raise click.ClickException(str(exc)) from exc
    fields: dict[str, Any] = {
        "id": str(account.id),
        "currency": account.currency,
        "code": account.code,
        "flags": account.flags,
        "owner_ref": account.owner_ref,
        "debits_pending": account.debits_pending,
        "debits_posted": account.debits_posted,
        "credits_pending": account.credits_pending,
        "credits_posted": account.credits_posted,
        "balance_posted": account.balance_posted,
        "balance_available": account.balance_available,
        "closed": account.closed_ts is not None,
    }
    click.echo(json.dumps(fields, indent=2, ensure_ascii=False))


# --- audit --------------------------------------------------------------------------


@main.group()
def audit() -> None:
    """The security audit trail: verification, checkpoints and listing."""


@audit.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def audit_verify(as_json: bool) -> None:
    """Recompute the audit trail's hash chain; exit status 1 on any mismatch.

    Checks: events run from 1 without a gap, each points at its predecessor's
    hash and its hash matches its content, the chain head is the last event,
    and every signed checkpoint matches its event and verifies with a trusted
    key (the ledger's signing key and ZHIFU_LEDGER_VERIFY_KEYS).
    """
    from zhifu.ops.audit import count_events

    with _runtime() as runtime:
        trail = runtime.audit
        with runtime.engine.connect() as connection:
            total = count_events(connection)
        with _progress("verifying audit events", total) as progress:
            # The same keys sign ledger blocks and audit checkpoints.
            report = trail.verify(runtime.ledger.trusted_keys, progress)
    summary = (
        f"{report.events} events, head at event {report.head_seq},"
        f" {report.checkpoints} signed checkpoints"
    )
    _finish_verification(report, as_json, summary, "audit trail")


@audit.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign a checkpoint of the trail's head now (the server does so every minute)."""
    with _runtime() as runtime:
        checkpoint = runtime.audit.checkpoint()
    if checkpoint is None:
        click.echo("no audit events yet: nothing to sign")
    else:
        click.echo(f"checkpoint at event {checkpoint.seq}, signed by key {checkpoint.key_id}")


@audit.command("list")
@click.option(
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(1, AUDIT_LIST_LIMIT_MAX),
    help="How many events to show, newest first.",
)
@click.option(
    "--action",
    "action_prefix",
    default=None,
    metavar="PREFIX",
    help="Only events whose action starts with PREFIX (e.g. 'ledger.' or 'identity.login').",
)
def audit_list(limit: int, action_prefix: str | None) -> None:
    """Show the newest audit events.

    One line per event: seq, time (UTC), outcome, actor, action, target (or
    '-') and, when there are any, the details as JSON (secrets redacted).
    """
    from zhifu.ops.audit import AuditError

    with _runtime() as runtime:
        try:
            events = runtime.audit.list(limit, action_prefix=action_prefix)
        except AuditError as exc:
            raise click.BadParameter(str(exc), param_hint="'--action'") from exc
    if not events:
        click.echo("no audit events")
    for event in events:
        line = (
            f"{event.seq:>8}  {_utc_text(event.ts)}  {event.outcome:<6}  {event.actor}"
            f"  {event.action}  {event.target or '-'}"
        )
        if event.details_json != "{}":
            line += f"  {event.details_json}"
        click.echo(line)


def _utc_text(ts_us: int) -> str:
    """Microseconds since the epoch as ISO 8601 UTC with a 'Z'."""
    seconds, micros = divmod(ts_us, 1_000_000)
    moment = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=micros)
    return moment.isoformat().replace("+00:00", "Z")


# --- keys ---------------------------------------------------------------------------

# Modules that register their encrypted columns (zhifu.security.rotation.register)
# when imported. One that does not exist yet is skipped; any other import error is not.
ENCRYPTED_COLUMN_OWNERS = (
    "zhifu.identity.store",
    "zhifu.accounts.store",
    "zhifu.webhooks.store",
    "zhifu.payments.store",
)


def _encrypted_columns() -> list[EncryptedColumns]:
    from zhifu.security.rotation import ENCRYPTED_COLUMNS

    for name in ENCRYPTED_COLUMN_OWNERS:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return list(ENCRYPTED_COLUMNS)


def _keyring(runtime: Runtime) -> KeyRing:
    """The runtime's key ring; a malformed key setting or file is a usage error."""
    from zhifu.security.envelope import KeyRingError

    try:
        return runtime.keyring
    except KeyRingError as exc:
        raise click.UsageError(str(exc)) from exc


@main.group()
def keys() -> None:
    """Master keys of field encryption: status, new entries, rotation.

    The ring is ZHIFU_MASTER_KEYS, else the key file ZHIFU_MASTER_KEY_FILE; the
    rotation procedure is in docs/configuration.md.
    """


@keys.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def keys_status(as_json: bool) -> None:
    """Show the active key, the ring's key ids and the rows under each key per table.

    A key id that rows use but the ring does not hold is flagged: those values
    cannot be read until the key is restored.
    """
    from zhifu.security.rotation import key_usage, rows_under_other_keys

    with _runtime() as runtime:
        ring = _keyring(runtime)
        usage = key_usage(runtime.engine, _encrypted_columns())
    old_rows = sum(rows_under_other_keys(usage, ring.active_key_id).values())
    missing = sorted({key_id for counts in usage.values() for key_id in counts} - set(ring.key_ids))
    if as_json:
        status = {
            "active_key_id": ring.active_key_id,
            "key_ids": list(ring.key_ids),
            "usage": usage,
            "rows_under_old_keys": old_rows,
            "missing_key_ids": missing,
        }
        click.echo(json.dumps(status, indent=2))
        return
    click.echo(f"active key: {ring.active_key_id}")
    click.echo(f"key ids:    {', '.join(ring.key_ids)}")
    if not usage:
        click.echo("no encrypted tables are registered")
    for table, counts in usage.items():
        shown = [f"{k}: {n}{' (NOT IN THE RING)' * (k in missing)}" for k, n in counts.items()]
        click.echo(f"  {table}: {', '.join(shown) or 'no rows'}")
    advice = ": run 'zhifu keys rotate'" if old_rows else ""
    click.echo(f"rows under older keys: {old_rows}{advice}")


@keys.command("rotate")
@click.option(
    "--chunk-rows",
    default=CHUNK_ROWS_DEFAULT,
    show_default=True,
    type=click.IntRange(1, CHUNK_ROWS_MAX),
    help="Rows re-encrypted per write transaction.",
)
def keys_rotate(chunk_rows: int) -> None:
    """Re-encrypt every encrypted value under the active key, while the service runs.

    Rows under other keys are rewritten in short transactions with a
    compare-and-set, so concurrent writes are never lost; running it again
    resumes. Exit status 1 when a value does not decrypt with the ring.
    """
    from zhifu.security.rotation import RotationError, key_usage, rotate, rows_under_other_keys

    with _runtime() as runtime:
        ring = _keyring(runtime)
        specs = _encrypted_columns()
        usage = key_usage(runtime.engine, specs)
        total = sum(rows_under_other_keys(usage, ring.active_key_id).values())
        with _progress(f"re-encrypting under {ring.active_key_id}", total) as progress:
            try:
                report = rotate(
                    runtime.engine, ring, specs, chunk_rows=chunk_rows, progress=progress
                )
            except RotationError as exc:
                raise click.ClickException(str(exc)) from exc
    click.echo(f"active key: {report.active_key_id}")
    for table, count in report.rows_rewritten.items():
        click.echo(f"  {table}: {count} rows re-encrypted")
    if report.remaining:
        left = ", ".join(f"{key_id}: {count}" for key_id, count in report.remaining.items())
        click.echo(f"rows written under older keys meanwhile: {left}; run it again")
    else:
        click.echo("no row is left under an older key")


@keys.command("new")
@click.argument("key_id")
def keys_new(key_id: str) -> None:
    """Print a new KEY_ID:BASE64 entry with a fresh random key (a secret).

    The entry alone goes to stdout and the instruction to stderr, so the entry
    can be piped. KEY_ID is 1 to 32 characters of A-Z, a-z, 0-9, '_' and '-'.
    """
    from zhifu.security.envelope import INDEX_KEY_ID, KeyRingError, generate_key_entry

    try:
        entry = generate_key_entry(key_id)
    except KeyRingError as exc:
        raise click.BadParameter(str(exc), param_hint="'KEY_ID'") from exc
    click.echo(entry)
    if key_id == INDEX_KEY_ID:
        hint = (
            "a blind-index key, for a new ring only: replacing the 'index' entry of a ring"
            " in use breaks every look-up until the indexes are recomputed"
        )
    else:
        hint = (
            "add it after the active entry of every process's ring (ZHIFU_MASTER_KEY_FILE or"
            " ZHIFU_MASTER_KEYS) and restart; then move it first, restart and run"
            " 'zhifu keys rotate' (docs/configuration.md)"
        )
    click.echo(hint, err=True)


# --- staff --------------------------------------------------------------------------


@main.group()
def staff() -> None:
    """Bank staff: create accounts for the operations console."""


@staff.command("create")
@click.argument("username")
@click.option("--name", required=True, help="The staff member's full name.")
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice([r.value for r in Role]),
    help="A role to grant at once (repeatable). Only this operator command grants roles"
    " directly; through the API roles need a second admin's approval.",
)
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input"
    " (default: prompt on a terminal, or generate one and print it once).",
)
def staff_create(username: str, name: str, roles: tuple[str, ...], password_stdin: bool) -> None:
    """Create a staff member (e.g. the first admin).

    Example: zhifu staff create alice --name "Alice Li" --role admin
    """
    from zhifu.identity.errors import IdentityError
    from zhifu.ops.audit import system_context

    generated = False
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password, generated = _generated_password(), True
    with _runtime() as runtime:
        try:
            view = runtime.staff.create_staff(
                username, name, password, system_context("system:cli"), roles=roles
            )
        except IdentityError as exc:
            raise click.UsageError(str(exc)) from exc
    click.echo(
        f"created staff member {view.username} ({view.id}) roles: {', '.join(view.roles) or '-'}"
    )
    if generated:
        click.echo(f"password (shown once, change it after the first sign-in): {password}")


def _generated_password() -> str:
    """Five random words' worth of entropy: 20 characters of url-safe base64 (120 bits)."""
    import secrets

    return secrets.token_urlsafe(15)


# --- bench --------------------------------------------------------------------------


@main.group()
def bench() -> None:
    """Benchmarks; each prints its figures (one JSON object with --json)."""


@bench.command("ledger")
@click.option(
    "--database-url",
    default=None,
    help="Engine to measure: a PostgreSQL server URL (a scratch database is created"
    " and dropped) or sqlite:// (default: a scratch SQLite file).",
)
@click.option("--transfers", default=200_000, show_default=True, type=click.IntRange(1))
@click.option("--accounts", default=10_000, show_default=True, type=click.IntRange(2))
@click.option(
    "--hot-accounts",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="When > 0, every transfer goes through one of this many hot accounts.",
)
@click.option("--batch-size", default=8190, show_default=True, type=click.IntRange(1, 8190))
@click.option("--verify/--no-verify", default=True, show_default=True, help="Run verify after.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_ledger(
    database_url: str | None,
    transfers: int,
    accounts: int,
    hot_accounts: int,
    batch_size: int,
    verify: bool,
    as_json: bool,
) -> None:
    """Ledger throughput and latency against plain inserts on the same engine."""
    from zhifu.bench.ledger import LedgerBenchConfig, check_config, run_ledger_bench

    config = LedgerBenchConfig(
        database_url=database_url,
        transfers=transfers,
        accounts=accounts,
        hot_accounts=hot_accounts,
        batch_size=batch_size,
        verify=verify,
    )
    try:
        check_config(config)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    tune_gc()
    with _progress("transfers", transfers) as progress:
        result = run_ledger_bench(config, progress)
    if as_json:
        click.echo(json.dumps(result))
    else:
        for key, value in result.items():
            click.echo(f"{key:>24}: {value}")


@bench.command("identity")
@click.option(
    "--database-url",
    default=None,
    help="A PostgreSQL server URL (a scratch database is created and dropped)"
    " or sqlite:// (default: a scratch SQLite file).",
)
@click.option("--customers", default=20, show_default=True, type=click.IntRange(1))
@click.option("--authentications", default=20_000, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_identity(
    database_url: str | None, customers: int, authentications: int, as_json: bool
) -> None:
    """Registration, password sign-in and per-request session checks."""
    from zhifu.bench.identity import IdentityBenchConfig, check_config, run_identity_bench

    config = IdentityBenchConfig(
        database_url=database_url, customers=customers, authentications=authentications
    )
    try:
        check_config(config)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    with _progress("operations", 2 * customers + authentications) as progress:
        result = run_identity_bench(config, progress)
    if as_json:
        click.echo(json.dumps(result))
    else:
        for key, value in result.items():
            click.echo(f"{key:>14}: {value}")


@bench.command("payments")
@click.option(
    "--database-url",
    default=None,
    help="A PostgreSQL server URL (a scratch database is created and dropped)"
    " or sqlite:// (default: a scratch SQLite file).",
)
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1), help="Server processes."
)
@click.option(
    "--clients", default=64, show_default=True, type=click.IntRange(1), help="Concurrent clients."
)
@click.option(
    "--seconds",
    default=10.0,
    show_default=True,
    type=float,
    help="Length of the measured payments, and again of the floor.",
)
@click.option("--warmup-s", default=2.0, show_default=True, type=float, help="Not measured.")
@click.option("--customers", default=100, show_default=True, type=click.IntRange(1))
@click.option("--accounts-per-customer", default=4, show_default=True, type=click.IntRange(1))
@click.option(
    "--replays",
    default=100,
    show_default=True,
    type=click.IntRange(0),
    help="Payments sent again with the same Idempotency-Key.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_payments(
    database_url: str | None,
    workers: int,
    clients: int,
    seconds: float,
    warmup_s: float,
    customers: int,
    accounts_per_customer: int,
    replays: int,
    as_json: bool,
) -> None:
    """Payments over HTTP against a real server, with a floor to compare.

    The floor is the cheapest authenticated read (GET /v1/accounts/{id}), by
    the same clients for as long. Exits with status 1 when a request failed
    or a check after the run did not hold (ledger verify, balances, every
    payment settled exactly once).
    """
    from zhifu.bench.payments import (
        PaymentsBenchConfig,
        check_config,
        progress_total,
        run_payments_bench,
        summary,
    )

    config = PaymentsBenchConfig(
        database_url=database_url,
        workers=workers,
        clients=clients,
        seconds=seconds,
        warmup_s=warmup_s,
        customers=customers,
        accounts_per_customer=accounts_per_customer,
        replays=replays,
    )
    try:
        check_config(config)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    with _progress("payments bench", progress_total(config)) as progress:
        try:
            result = run_payments_bench(config, progress)
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo("\n".join(summary(result)) + "\n")
        for key, value in result.items():
            click.echo(f"{key:>26}: {value}")
    sys.exit(0 if result["ok"] else 1)


# --- qr -----------------------------------------------------------------------------


@main.group()
def qr() -> None:
    """EMVCo merchant-presented payment QR codes: check one, or make one.

    Both work with the payload text or with an image of the code (PNG, SVG
    out; PNG, JPEG, WebP, GIF in). The fields, the rules checked and the
    image limits are in docs/payments.md.
    """


@qr.command("parse")
@click.argument("payload", required=False)
@click.option(
    "--image",
    "image_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the payload from the QR code in FILE, a PNG, JPEG, WebP or GIF image"
    " (at most 2 MiB and 25 million pixels), instead of giving PAYLOAD.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object (a problem object if invalid)."
)
def qr_parse(payload: str | None, image_file: Path | None, as_json: bool) -> None:
    """Decode PAYLOAD, the text inside an EMVCo QR code, and check it.

    Prints the format, initiation method, merchant account templates,
    category code, currency, amount, country, merchant name and city,
    additional data, alternate-language names and whether the CRC is valid.
    Exit status 1, with a message naming the field, when the payload breaks a
    rule: a mandatory field missing, a wrong length, a CRC that does not match.

    With --image FILE the payload is read from the one QR code in that
    picture first; exit status 1, with a message saying what is wrong, when
    the file is too large, not an allowed image, or holds no QR code or
    several.

    Example: zhifu qr parse --image code.png --json
    """
    from zhifu.payments.emvco import parse
    from zhifu.payments.errors import QrCodeError

    if payload is not None and image_file is not None:
        raise click.UsageError("give PAYLOAD or --image FILE, not both")
    if image_file is not None:
        payload = _qr_payload_from_image(image_file, as_json)
    if payload is None:
        raise click.UsageError("give PAYLOAD, the text inside the QR code, or --image FILE")
    try:
        decoded = parse(payload, verify_crc=False).as_dict()
    except QrCodeError as exc:
        _print_qr_problem(exc.field, str(exc), exc.code, as_json, None)
        sys.exit(1)
    if as_json and decoded["crc_valid"]:
        click.echo(json.dumps(decoded, indent=2, ensure_ascii=False))
    if not as_json:
        rows = _qr_report_rows(decoded)
        width = max(len(label) for label, _ in rows) + 2
        for label, value in rows:
            click.echo(f"{label + ':':<{width}}{value}")
    if not decoded["crc_valid"]:
        try:  # the strict parse explains the mismatch: what the CRC should be
            parse(payload)
        except QrCodeError as exc:
            _print_qr_problem(exc.field, str(exc), exc.code, as_json, decoded)
        sys.exit(1)


def _qr_payload_from_image(image_file: Path, as_json: bool) -> str:
    """The text of the QR code in ``image_file``; on a bad image, the problem and exit 1."""
    from zhifu.payments.errors import QrImageError
    from zhifu.payments.qr_image import decode_image

    try:
        return decode_image(image_file.read_bytes())
    except OSError as exc:
        raise click.FileError(str(image_file), hint=exc.strerror or str(exc)) from exc
    except QrImageError as exc:
        if as_json:
            problem = {
                "type": "https://zhifu.dev/problems/invalid-qr-image",
                "title": "Unreadable QR code image",
                "detail": str(exc),
                "code": exc.code,
                "reason": exc.reason,
            }
            click.echo(json.dumps(problem, indent=2, ensure_ascii=False))
        click.echo(f"invalid QR code image {image_file}: {exc}", err=True)
        sys.exit(1)


def _print_qr_problem(
    field: str, detail: str, code: str, as_json: bool, decoded: dict[str, Any] | None
) -> None:
    """The error on stderr; with --json also a problem object (RFC 9457 members) on stdout."""
    if as_json:
        problem: dict[str, Any] = {
            "type": "https://zhifu.dev/problems/invalid-qr-code",
            "title": "Invalid EMVCo QR code",
            "detail": detail,
            "code": code,
            "field": field,
        }
        if decoded is not None:
            problem["decoded"] = decoded
        click.echo(json.dumps(problem, indent=2, ensure_ascii=False))
    click.echo(f"invalid QR code: {detail}", err=True)


def _qr_report_rows(decoded: dict[str, Any]) -> list[tuple[str, str]]:
    """One (label, value) row per field present, for people."""
    currency = decoded["currency"] or "unknown currency"
    amount = decoded["amount"]
    rows = [
        ("format", decoded["format_indicator"]),
        ("initiation method", decoded["initiation_method"] or "not given"),
    ]
    for account in decoded["merchant_accounts"]:
        parts = [account["value"] or account["gui"]]
        parts += [f"{sub}={value}" for sub, value in account["fields"].items()]
        rows.append((f"merchant account {account['id']}", " ".join(parts)))
    rows += [
        ("category code", decoded["merchant_category_code"]),
        ("currency", f"{currency} ({decoded['currency_numeric']})"),
        ("amount", f"{amount} {currency}" if amount else "not given: the payer enters it"),
    ]
    if decoded["tip_indicator"]:
        fee = decoded["convenience_fee_fixed"] or decoded["convenience_fee_percentage"]
        rows.append(("tip or fee", f"{decoded['tip_indicator']} {fee or ''}".strip()))
    rows += [
        ("country", decoded["country"]),
        ("merchant name", decoded["merchant_name"]),
        ("merchant city", decoded["merchant_city"]),
    ]
    if decoded["postal_code"]:
        rows.append(("postal code", decoded["postal_code"]))
    additional = decoded["additional_data"].items()
    rows += [(key.replace("_", " "), value) for key, value in additional]
    language = decoded["alternate_language"]
    if language:
        names = ", ".join(name for name in (language["name"], language["city"]) if name)
        rows.append((f"name in {language['language']}", names))
    rows += [(f"template {tag}", value) for tag, value in decoded["unreserved_templates"].items()]
    rows.append(("CRC", f"{decoded['crc']} ({'valid' if decoded['crc_valid'] else 'INVALID'})"))
    return rows


# Which option of 'qr make' gives the value of each field, for error messages.
_QR_MAKE_OPTIONS = {
    "52": "--mcc",
    "53": "--currency",
    "54": "--amount",
    "58": "--country",
    "59": "--merchant-name",
    "60": "--city",
    "26": "--account-gui/--account-id",
    "26.00": "--account-gui",
    "26.01": "--account-id",
    "64": "--alternate-name/--alternate-city",
    "64.00": "--alternate-language",
    "64.01": "--alternate-name",
    "64.02": "--alternate-city",
}
_IMAGE_FILE = click.Path(dir_okay=False, writable=True, path_type=Path)


@qr.command("make")
@click.option("--merchant-name", required=True, help="Printable ASCII, at most 25 characters.")
@click.option("--city", required=True, help="Merchant city, printable ASCII, at most 15.")
@click.option("--mcc", required=True, help="Merchant category code (ISO 18245), 4 digits.")
@click.option("--currency", required=True, help="ISO 4217 alphabetic code, e.g. CNY.")
@click.option(
    "--amount",
    default=None,
    help="Amount in major units, e.g. 12.34; makes a dynamic code. Without it the payer"
    " enters the amount (a static code).",
)
@click.option(
    "--account-gui",
    required=True,
    help="Globally unique identifier of the merchant account template (ID 26), such as a"
    " reverse domain name or an AID.",
)
@click.option("--account-id", required=True, help="The merchant's id at that network.")
@click.option("--country", default="CN", show_default=True, help="ISO 3166-1 alpha-2 code.")
@click.option(
    "--alternate-name", default=None, help="Merchant name in another script, e.g. 最佳运输."
)
@click.option("--alternate-city", default=None, help="City in that script; needs --alternate-name.")
@click.option(
    "--alternate-language",
    default="ZH",
    show_default=True,
    help="ISO 639 code of --alternate-name's language.",
)
@click.option("--svg", "svg_file", type=_IMAGE_FILE, help="Also write the QR code to FILE as SVG.")
@click.option("--png", "png_file", type=_IMAGE_FILE, help="Also write the QR code to FILE as PNG.")
def qr_make(
    merchant_name: str,
    city: str,
    mcc: str,
    currency: str,
    amount: str | None,
    account_gui: str,
    account_id: str,
    country: str,
    alternate_name: str | None,
    alternate_city: str | None,
    alternate_language: str,
    svg_file: Path | None,
    png_file: Path | None,
) -> None:
    """Make an EMVCo QR code and print its payload.

    The payload is that of a merchant-presented code, CRC included.

    Example: zhifu qr make --merchant-name "BEST TRANSPORT" --city BEIJING
    --mcc 4111 --currency CNY --amount 23.72 --account-gui com.example.pay
    --account-id 8888 --png code.png
    """
    from zhifu.money import MoneyError, UnknownCurrencyError, parse_amount_minor
    from zhifu.payments.emvco import (
        AlternateLanguage,
        MerchantAccount,
        build_merchant_qr,
    )
    from zhifu.payments.errors import QrCodeError
    from zhifu.payments.qr_image import render_png, render_svg

    try:
        amount_minor = None if amount is None else parse_amount_minor(amount, currency)
    except UnknownCurrencyError as exc:
        raise click.BadParameter(str(exc), param_hint="'--currency'") from exc
    except MoneyError as exc:
        raise click.BadParameter(str(exc), param_hint="'--amount'") from exc
    if alternate_city is not None and alternate_name is None:
        raise click.UsageError("--alternate-city needs --alternate-name")
    language = None
    if alternate_name is not None:
        language = AlternateLanguage(alternate_language, alternate_name, alternate_city)
    try:
        payload = build_merchant_qr(
            merchant_name=merchant_name,
            merchant_city=city,
            merchant_category_code=mcc,
            currency=currency,
            amount_minor=amount_minor,
            merchant_accounts=[MerchantAccount.template("26", account_gui, {"01": account_id})],
            country=country,
            alternate_language=language,
        )
    except QrCodeError as exc:
        option = _QR_MAKE_OPTIONS.get(exc.field)
        if option is None:
            raise click.UsageError(str(exc)) from exc
        raise click.BadParameter(str(exc), param_hint=f"'{option}'") from exc
    click.echo(payload)
    if svg_file is not None:
        svg_file.write_text(render_svg(payload), encoding="utf-8")
        click.echo(f"wrote {svg_file}", err=True)
    if png_file is not None:
        png_file.write_bytes(render_png(payload))
        click.echo(f"wrote {png_file}", err=True)


# --- webhooks -----------------------------------------------------------------------


@main.group()
def webhooks() -> None:
    """Webhooks to partners: send due deliveries now, replay a delivery.

    The server sends them by itself every second; these are for operators.
    """


@webhooks.command("deliver-now")
def webhooks_deliver_now() -> None:
    """Run one dispatcher round now and print what it did.

    Claims due outbox messages (webhook deliveries) in batches until a batch
    comes back short, sends each, and prints how many were claimed, done,
    rescheduled with backoff, dead-lettered after their last attempt, and lost
    to another dispatcher whose lease took over.
    """
    with _runtime() as runtime:
        counts = runtime.outbox_dispatcher.run_round()
    click.echo(
        f"claimed {counts.claimed}: done {counts.done}, retried {counts.retried},"
        f" dead-lettered {counts.dead}, lost {counts.lost}"
    )


@webhooks.command("replay")
@click.argument("delivery_id", type=click.UUID)
def webhooks_replay(delivery_id: uuid.UUID) -> None:
    """Deliver DELIVERY_ID's event again, as a new delivery to the same subscription.

    The recipient sees the same Zhifu-Webhook-Id (the event id) and a new
    Zhifu-Webhook-Delivery. The next dispatcher round (or 'zhifu webhooks
    deliver-now') sends it. Recorded in the audit trail as system:cli.
    """
    from zhifu.ops.audit import system_context
    from zhifu.webhooks.errors import WebhookError

    with _runtime() as runtime:
        try:
            view = runtime.webhooks.replay(
                delivery_id, system_context("system:cli"), partner_key_id=None
            )
        except WebhookError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(f"queued delivery {view.id}: a replay of {delivery_id} (event {view.event_id})")


# --- scheduled transfers ------------------------------------------------------------------


@main.group()
def schedules() -> None:
    """Scheduled and recurring transfers: pay the due runs now.

    The server pays them by itself every few seconds; this is for operators
    (after an outage, or where no server runs the scheduler).
    """


@schedules.command("run-due")
def schedules_run_due() -> None:
    """Pay every run that is due now, once, and print what happened.

    Claims due schedules in batches (safe beside running servers and other
    schedulers: each run is paid exactly once), pays or records each run, and
    prints how many were paid, failed (refused: funds, limits, an account's
    state; recorded with the reason), skipped (more than a day late), lost to
    another scheduler, and errors (logged; tried again when the claim runs out).
    """
    with _runtime() as runtime:
        service = runtime.schedules
        with _progress("paying due runs", service.count_due()) as progress:
            counts = service.run_due(progress=progress)
    click.echo(
        f"claimed {counts.claimed}: paid {counts.paid}, failed {counts.failed},"
        f" skipped {counts.skipped}, lost {counts.lost}, errors {counts.errors}"
    )


if __name__ == "__main__":  # pragma: no cover
    main()
