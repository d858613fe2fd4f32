"""``zhifu bench payments``: intra-bank payments over HTTP against a real server.

The run is what a bank's operator and its customers would do, on a scratch
database (as ``zhifu bench ledger``: a new SQLite file, or a new PostgreSQL
database dropped afterwards) and a scratch ``ZHIFU_HOME``:

1. ``zhifu db upgrade`` and ``zhifu staff create ... --role teller`` at the
   console, then ``zhifu serve --workers N`` on a free local port;
2. through the API only: customers register and sign in, each opens Class I
   CNY accounts (no PBOC limits), and the teller pays cash into every one;
3. ``--clients`` concurrent clients, each on one keep-alive connection, pay
   random small amounts (0.01 to 1.00, far below the step-up threshold)
   between random accounts, each payment with a session token and a fresh
   Idempotency-Key: a warm-up that is not measured, then ``--seconds`` of
   measured payments;
4. the floor: the same clients, for as long, call ``GET /v1/accounts/{id}``
   (authenticate the session, read one account with its balance), the
   cheapest authenticated request with a database read;
5. a sample of the payments is sent again with the same key: each must answer
   200, ``replayed``, with the first payment's id;
6. every customer's balances read through the API must equal what the
   client's own tally of deposits and successful payments says;
7. the server stops, and then ``zhifu ledger verify``'s code path runs, and
   the settled transfer orders in the database must be exactly the payments
   that were answered 201 (no payment lost or doubled).

The load generator is a few lines of HTTP/1.1 over asyncio streams (uvloop
when installed) with requests built from byte templates: on a small machine
it shares the CPU with the server, so it must cost as little as possible
(``client_cpu_percent`` reports what it took, in percent of one core).

Other ``ZHIFU_*`` settings of the environment (pool size, group-commit wait,
log level, ...) reach the server unchanged, so tuning can be measured;
``ZHIFU_HOME``, ``ZHIFU_DATABASE_URL`` and ``ZHIFU_LOG_FORMAT`` (json) are the
bench's own, and no key or token setting is passed on (:data:`KEY_SETTINGS`):
the scratch home makes its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from sqlalchemy import select

from zhifu.accounts.service import ACCOUNTS_LIVE_PER_CUSTOMER_MAX
from zhifu.bench.ledger import scratch_database
from zhifu.config import load_settings
from zhifu.identity.model import resident_id_check_char
from zhifu.invariant import invariant
from zhifu.money import Money
from zhifu.payments.model import OrderState, PaymentKind
from zhifu.runtime import build_runtime
from zhifu.store import tables

WORKERS_MAX: Final = 64  # as `zhifu serve --workers`
CLIENTS_MAX: Final = 1024
SECONDS_MAX: Final = 3600
WARMUP_S_MAX: Final = 600
CUSTOMERS_MAX: Final = 10_000
ACCOUNTS_PER_CUSTOMER_MAX: Final = ACCOUNTS_LIVE_PER_CUSTOMER_MAX
REPLAYS_MAX: Final = 10_000

CURRENCY: Final = "CNY"
DEPOSIT_MINOR: Final = 10_000_000  # CNY 100,000.00 per account: never runs dry
PAYMENT_MINOR_MIN: Final = 1
PAYMENT_MINOR_MAX: Final = 100  # CNY 1.00, far below the step-up threshold
MEMO: Final = "bench"
PASSWORD: Final = "bench horse battery staple"  # noqa: S105 - benchmark data
TELLER_USERNAME: Final = "bench-teller"

# Setup signs people in (argon2id, 46 MiB each): a few at a time keep both
# cores busy without asking the server for gigabytes.
SETUP_CONCURRENCY: Final = 8
STARTUP_TIMEOUT_S: Final = 60.0
SHUTDOWN_TIMEOUT_S: Final = 30.0
CLI_TIMEOUT_S: Final = 120.0
REQUEST_TIMEOUT_S: Final = 30.0  # a request in flight at a phase's end gets this long
START_ATTEMPTS_MAX: Final = 3  # a free port can be taken between probing and binding
ERROR_SAMPLES_MAX: Final = 5
ERROR_SAMPLE_CHARS_MAX: Final = 300
LOG_TAIL_CHARS: Final = 4000
ERROR_TRACE_CHARS_MAX: Final = 1500
LOG_ERROR_LEVELS: Final = frozenset({"error", "critical", "exception"})

# Never the real keys: the scratch home makes its own (files under ZHIFU_HOME).
KEY_SETTINGS: Final = frozenset(
    {
        "ZHIFU_API_TOKEN",
        "ZHIFU_LEDGER_SIGNING_KEY",
        "ZHIFU_LEDGER_SIGNING_KEY_FILE",
        "ZHIFU_LEDGER_VERIFY_KEYS",
        "ZHIFU_MASTER_KEYS",
        "ZHIFU_MASTER_KEY_FILE",
    }
)

Progress = Callable[[int], None]

_PAYMENT_ID: Final = re.compile(rb'"id":"([0-9a-f-]{36})"')
_REPLAYED: Final = b'"replayed":true'


@dataclass(frozen=True, slots=True)
class PaymentsBenchConfig:
    database_url: str | None = None
    workers: int = 1
    clients: int = 64
    seconds: float = 10.0
    warmup_s: float = 2.0
    customers: int = 100
    accounts_per_customer: int = 4
    replays: int = 100
    seed: int = 1


def check_config(config: PaymentsBenchConfig) -> None:
    """Raises ValueError naming the option that is out of bounds."""
    url = config.database_url
    if url is not None and not url.startswith(("sqlite", "postgres://", "postgresql")):
        raise ValueError(
            "--database-url must be a PostgreSQL server URL (postgresql://...) or sqlite://"
        )
    if not 1 <= config.workers <= WORKERS_MAX:
        raise ValueError(f"--workers must be between 1 and {WORKERS_MAX}")
    if not 1 <= config.clients <= CLIENTS_MAX:
        raise ValueError(f"--clients must be between 1 and {CLIENTS_MAX}")
    if not 0 < config.seconds <= SECONDS_MAX:
        raise ValueError(f"--seconds must be more than 0 and at most {SECONDS_MAX}")
    if not 0 <= config.warmup_s <= WARMUP_S_MAX:
        raise ValueError(f"--warmup-s must be between 0 and {WARMUP_S_MAX}")
    if not 1 <= config.customers <= CUSTOMERS_MAX:
        raise ValueError(f"--customers must be between 1 and {CUSTOMERS_MAX}")
    if not 1 <= config.accounts_per_customer <= ACCOUNTS_PER_CUSTOMER_MAX:
        raise ValueError(
            f"--accounts-per-customer must be between 1 and {ACCOUNTS_PER_CUSTOMER_MAX}"
        )
    if config.customers * config.accounts_per_customer < 2:
        raise ValueError(
            "a payment needs two accounts: raise --customers or --accounts-per-customer"
        )
    if not 0 <= config.replays <= REPLAYS_MAX:
        raise ValueError(f"--replays must be between 0 and {REPLAYS_MAX}")


def progress_total(config: PaymentsBenchConfig) -> int:
    """Steps the progress callback is called for: one per sign-up and sign-in,
    per account opened and funded, per second of load, per replay."""
    accounts = config.customers * config.accounts_per_customer
    seconds = round(config.warmup_s) + 2 * round(config.seconds)
    return 2 * config.customers + 2 * accounts + seconds + config.replays


# --- HTTP/1.1 over asyncio streams -------------------------------------------------------


class HttpError(Exception):
    """The server closed the connection or answered something that is not HTTP/1.1."""


class Connection:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """(status, body) of the answer to ``request``, a complete HTTP/1.1 message."""
        self.writer.write(request)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise HttpError("the server closed the connection") from exc
        if not head.startswith(b"HTTP/1.1 "):
            raise HttpError(f"not an HTTP/1.1 answer: {head[:40]!r}")
        status = int(head[9:12])
        start = head.lower().find(b"\r\ncontent-length:")
        if start < 0:
            raise HttpError("an answer without Content-Length (chunked is not expected)")
        end = head.index(b"\r\n", start + 2)
        length = int(head[start + 17 : end])
        try:
            body = await self.reader.readexactly(length)
        except asyncio.IncompleteReadError as exc:
            raise HttpError("the server closed the connection mid-answer") from exc
        return status, body

    async def close(self) -> None:
        self.writer.close()
        with suppress(OSError):
            await self.writer.wait_closed()


def build_request(
    method: str,
    path: str,
    host: str,
    *,
    token: str | None = None,
    body: bytes | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines += [f"{name}: {value}" for name, value in headers]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# --- the server ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Server:
    host: str
    port: int
    pid: int
    log_path: Path

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"


def server_env(home: Path, database_url: str) -> dict[str, str]:
    """The environment of the server and the operator's commands: this one's
    tuning, with the scratch home, database and keys."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in KEY_SETTINGS and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    # JSON logs, so that the errors can be picked out; the level stays the
    # environment's (INFO by default: an access-log line per request, as served).
    env.update(ZHIFU_HOME=str(home), ZHIFU_DATABASE_URL=database_url, ZHIFU_LOG_FORMAT="json")
    return env


def run_cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    """``zhifu ARGS`` as the operator runs it; its stdout. Raises RuntimeError on failure."""
    completed = subprocess.run(
        [sys.executable, "-m", "zhifu.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"zhifu {args[0]} {args[1]} exited with {completed.returncode}: {completed.stderr}"
        )
    return completed.stdout


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _tail(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:]


def _start_server(
    env: dict[str, str], home: Path, workers: int
) -> tuple[subprocess.Popen[bytes], Server]:
    for attempt in range(START_ATTEMPTS_MAX):
        port = _free_port()
        log_path = home / f"server-{attempt}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "zhifu.cli",
                    "serve",
                    "--port",
                    str(port),
                    "--workers",
                    str(workers),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            if _healthy(port):
                return process, Server("127.0.0.1", port, process.pid, log_path)
            time.sleep(0.1)
        if process.poll() is None:
            _stop_server(process)
            raise RuntimeError(f"the server did not answer /healthz in {STARTUP_TIMEOUT_S:g} s")
    raise RuntimeError(
        f"the server would not start in {START_ATTEMPTS_MAX} attempts:\n{_tail(log_path)}"
    )


def _stop_server(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then SIGKILL past the shutdown time; the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)


@contextmanager
def _served(env: dict[str, str], home: Path, workers: int) -> Iterator[Server]:
    process, server = _start_server(env, home, workers)
    try:
        yield server
    finally:
        status = _stop_server(process)
    if status not in (0, -signal.SIGTERM):
        raise RuntimeError(f"the server exited with status {status}:\n{_tail(server.log_path)}")


def cpu_seconds(pid: int) -> float | None:
    """CPU time used so far by process ``pid`` and its descendants (the
    server's workers), from Linux's /proc; None where there is none."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return None
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        # After the command's closing parenthesis: state, ppid, ..., utime, stime (man 5 proc).
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    if pid not in ticks:
        return None
    family, grown = {pid}, True
    while grown:
        before = len(family)
        family |= {child for child, parent in parents.items() if parent in family}
        grown = len(family) > before
    return sum(ticks[p] for p in family) / os.sysconf("SC_CLK_TCK")


def logged_errors(path: Path) -> list[str]:
    """The error lines of the server's JSON log, each as its event and the end
    of its traceback."""
    errors = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
            level = str(entry.get("level", "")).lower()
        except (json.JSONDecodeError, AttributeError):
            continue  # uvicorn's own start-up lines
        if level in LOG_ERROR_LEVELS:
            trace = str(entry.get("exception", ""))[-ERROR_TRACE_CHARS_MAX:]
            errors.append(f"{entry.get('event')} ({entry.get('route', '-')}): ...{trace}")
    return errors


# --- set-up through the API --------------------------------------------------------------


@dataclass(slots=True)
class Account:
    id: str
    number: str
    token: str
    customer: int
    balance_minor: int = 0  # what the client's tally says it must hold


@dataclass(slots=True)
class Customer:
    email: str
    token: str = ""
    accounts: list[Account] = field(default_factory=list)


def resident_id(n: int) -> str:
    """A valid resident ID of its own for each n below 10,000,000."""
    day, serial = divmod(n, 1000)
    year, day = divmod(day, 336)
    month, day = divmod(day, 28)
    first_17 = f"110105{1950 + year:04d}{month + 1:02d}{day + 1:02d}{serial:03d}"
    return first_17 + resident_id_check_char(first_17)


def letters(n: int) -> str:
    """A name part without digits (names may not contain any)."""
    text = ""
    while True:
        n, rest = divmod(n, 26)
        text += chr(ord("a") + rest)
        if n == 0:
            return text.capitalize()


async def _expect(connection: Connection, request: bytes, status: int, what: str) -> dict[str, Any]:
    got, body = await connection.send(request)
    if got != status:
        raise RuntimeError(
            f"{what}: expected {status}, got {got}: {body[:ERROR_SAMPLE_CHARS_MAX]!r}"
        )
    answer: dict[str, Any] = json.loads(body)
    return answer


async def _in_parallel(
    server: Server,
    numbers: range,
    job: Callable[[Connection, int], Awaitable[None]],
    progress: Progress | None,
) -> None:
    """``job(connection, n)`` for each n of ``numbers``, SETUP_CONCURRENCY at a time."""
    queue = iter(numbers)

    async def worker() -> None:
        connection = await Connection.open(server.host, server.port)
        try:
            for n in queue:
                await job(connection, n)
                if progress is not None:
                    progress(1)
        finally:
            await connection.close()

    await asyncio.gather(*(worker() for _ in range(min(SETUP_CONCURRENCY, len(numbers)))))


async def _sign_up(
    server: Server, config: PaymentsBenchConfig, progress: Progress | None
) -> list[Customer]:
    customers = [Customer(email=f"bench{n}@example.com") for n in range(config.customers)]
    host = server.authority

    async def register(connection: Connection, n: int) -> None:
        body = {
            "name": f"Lin {letters(n)}",
            "resident_id": resident_id(n),
            "mobile": f"+86139{n:08d}",
            "email": customers[n].email,
            "password": PASSWORD,
        }
        request = build_request("POST", "/v1/customers", host, body=_json(body))
        await _expect(connection, request, 201, "registering a customer")

    async def sign_in(connection: Connection, n: int) -> None:
        body = {"identifier": customers[n].email, "password": PASSWORD}
        request = build_request("POST", "/v1/auth/login", host, body=_json(body))
        answer = await _expect(connection, request, 200, "a customer signing in")
        if answer.get("status") != "authenticated":
            raise RuntimeError(f"a customer's sign-in asked for more: {answer.get('status')}")
        customers[n].token = answer["session_token"]

    await _in_parallel(server, range(config.customers), register, progress)
    await _in_parallel(server, range(config.customers), sign_in, progress)
    return customers


async def _open_and_fund(
    server: Server,
    customers: list[Customer],
    config: PaymentsBenchConfig,
    teller_token: str,
    progress: Progress | None,
) -> list[Account]:
    host = server.authority
    per = config.accounts_per_customer
    total = len(customers) * per
    opened: list[Account | None] = [None] * total
    deposit = Money(DEPOSIT_MINOR, CURRENCY).to_decimal_string()

    async def open_account(connection: Connection, n: int) -> None:
        customer = customers[n // per]
        body = {"product": "current", "account_class": "I", "currency": CURRENCY}
        request = build_request(
            "POST",
            "/v1/accounts",
            host,
            token=customer.token,
            body=_json(body),
            headers=[("Idempotency-Key", f"open-{n}")],
        )
        answer = await _expect(connection, request, 201, "opening an account")
        opened[n] = Account(answer["id"], answer["number"], customer.token, n // per)

    await _in_parallel(server, range(total), open_account, progress)
    accounts = [a for a in opened if a is not None]
    invariant(len(accounts) == total, "every account opening answered 201 or raised")

    async def fund(connection: Connection, n: int) -> None:
        body = {"account_id": accounts[n].id, "amount": deposit, "currency": CURRENCY}
        request = build_request(
            "POST",
            "/v1/teller/deposits",
            host,
            token=teller_token,
            body=_json(body),
            headers=[("Idempotency-Key", f"deposit-{n}")],
        )
        await _expect(connection, request, 200, "a teller's cash deposit")
        accounts[n].balance_minor = DEPOSIT_MINOR

    # The first deposit alone: it creates the bank's cash account, and on
    # PostgreSQL concurrent first deposits race to create it (a 500 so far).
    await _in_parallel(server, range(1), fund, progress)
    await _in_parallel(server, range(1, total), fund, progress)
    for account in accounts:
        customers[account.customer].accounts.append(account)
    return accounts


async def _staff_sign_in(server: Server, password: str) -> str:
    connection = await Connection.open(server.host, server.port)
    try:
        body = _json({"identifier": TELLER_USERNAME, "password": password})
        request = build_request("POST", "/v1/staff/login", server.authority, body=body)
        answer = await _expect(connection, request, 200, "the teller signing in")
    finally:
        await connection.close()
    if answer.get("status") != "authenticated":
        raise RuntimeError(f"the teller's sign-in asked for more: {answer.get('status')}")
    token: str = answer["session_token"]
    return token


# --- load --------------------------------------------------------------------------------


@dataclass(slots=True)
class Phase:
    """What the clients saw during one timed phase."""

    ok: int = 0
    errors: int = 0
    unanswered: int = 0  # requests with no answer: their outcome is unknown
    latencies_s: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    # CPU time over the phase, in percent of one core (the server's workers summed).
    client_cpu_percent: float = 0.0
    server_cpu_percent: float | None = None

    def error(self, what: str, detail: bytes | str) -> None:
        self.errors += 1
        self.failures[what] += 1
        if len(self.samples) < ERROR_SAMPLES_MAX:
            text = detail.decode(errors="replace") if isinstance(detail, bytes) else detail
            self.samples.append(f"{what}: {text[:ERROR_SAMPLE_CHARS_MAX]}")

    @property
    def per_s(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0


Step = Callable[[Connection, random.Random, Phase], Awaitable[None]]


class PaymentBook:
    """Builds payment requests from byte templates and keeps the client's tally:
    every paid id, and what each account must hold."""

    def __init__(self, accounts: list[Account], host: str, replays: int, seed: int) -> None:
        self.accounts = accounts
        self.heads = [
            (
                f"POST /v1/payments HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {a.token}"
                "\r\nContent-Type: application/json\r\n"
            ).encode()
            for a in accounts
        ]
        self.payers = [
            f'{{"from_account_id":"{a.id}","to_account_number":"'.encode() for a in accounts
        ]
        self.payees = [a.number.encode() for a in accounts]
        self.tail = f'","currency":"{CURRENCY}","memo":"{MEMO}"}}'.encode()
        self.paid_ids: list[bytes] = []
        self.replays = replays
        self.sample: list[tuple[bytes, bytes]] = []  # (request, payment id): to send again
        self.sample_rng = random.Random(seed)
        self.sequence = 0

    async def pay(self, connection: Connection, rng: random.Random, phase: Phase) -> None:
        count = len(self.accounts)
        payer = rng.randrange(count)
        payee = rng.randrange(count - 1)
        payee += payee >= payer
        amount = rng.randint(PAYMENT_MINOR_MIN, PAYMENT_MINOR_MAX)
        self.sequence += 1
        body = b'%s%s","amount":"%d.%02d%s' % (
            self.payers[payer],
            self.payees[payee],
            amount // 100,
            amount % 100,
            self.tail,
        )
        request = b"%sContent-Length: %d\r\nIdempotency-Key: p%d\r\n\r\n%s" % (
            self.heads[payer],
            len(body),
            self.sequence,
            body,
        )
        started = time.perf_counter()
        status, answer = await connection.send(request)
        phase.latencies_s.append(time.perf_counter() - started)
        found = _PAYMENT_ID.search(answer) if status == 201 else None
        if found is None:
            phase.error(str(status), answer)
            return
        phase.ok += 1
        self.accounts[payer].balance_minor -= amount
        self.accounts[payee].balance_minor += amount
        self.paid_ids.append(found.group(1))
        self._maybe_sample(request, found.group(1))

    def _maybe_sample(self, request: bytes, payment_id: bytes) -> None:
        """Reservoir sampling: each payment has the same chance to be sent again."""
        seen = len(self.paid_ids)
        if len(self.sample) < self.replays:
            self.sample.append((request, payment_id))
            return
        slot = self.sample_rng.randrange(seen)
        if slot < self.replays:
            self.sample[slot] = (request, payment_id)


def floor_step(accounts: list[Account], host: str) -> Step:
    """GET /v1/accounts/{id} of a random account, with its owner's session."""
    requests = [build_request("GET", f"/v1/accounts/{a.id}", host, token=a.token) for a in accounts]

    async def step(connection: Connection, rng: random.Random, phase: Phase) -> None:
        started = time.perf_counter()
        status, answer = await connection.send(requests[rng.randrange(len(requests))])
        phase.latencies_s.append(time.perf_counter() - started)
        if status == 200:
            phase.ok += 1
        else:
            phase.error(str(status), answer)

    return step


async def _tick(progress: Progress | None, seconds: float) -> None:
    steps = round(seconds)
    if progress is None or steps == 0:
        return
    for _ in range(steps):
        await asyncio.sleep(seconds / steps)
        progress(1)


async def _run_phase(
    server: Server,
    connections: list[Connection],
    step: Step,
    seconds: float,
    seed: int,
    progress: Progress | None,
) -> Phase:
    """Every client runs ``step`` back to back for ``seconds``; a request still
    unanswered REQUEST_TIMEOUT_S later counts as an error."""
    phase = Phase()
    client_cpu_s, server_cpu_s = time.process_time(), cpu_seconds(server.pid)
    started = time.perf_counter()
    deadline = started + seconds

    async def client(index: int) -> None:
        rng = random.Random(seed * 1_000_003 + index)
        while time.perf_counter() < deadline:
            try:
                await step(connections[index], rng, phase)
            except (HttpError, OSError) as exc:
                phase.error("no answer", str(exc))
                phase.unanswered += 1
                await connections[index].close()
                connections[index] = await Connection.open(server.host, server.port)

    tasks = [asyncio.create_task(client(i)) for i in range(len(connections))]
    ticker = asyncio.create_task(_tick(progress, seconds))
    _, pending = await asyncio.wait(tasks, timeout=seconds + REQUEST_TIMEOUT_S)
    phase.elapsed_s = time.perf_counter() - started
    phase.client_cpu_percent = _percent(time.process_time() - client_cpu_s, phase.elapsed_s)
    server_cpu_s_after = cpu_seconds(server.pid)
    if server_cpu_s is not None and server_cpu_s_after is not None:
        phase.server_cpu_percent = _percent(server_cpu_s_after - server_cpu_s, phase.elapsed_s)
    for index, task in enumerate(tasks):
        if task in pending:
            task.cancel()
            phase.error("no answer", f"none within {REQUEST_TIMEOUT_S:g} s of the phase's end")
            phase.unanswered += 1
            await connections[index].close()
            connections[index] = await Connection.open(server.host, server.port)
        elif task.exception() is not None:
            raise RuntimeError("a client failed") from task.exception()
    await ticker
    return phase


def _percent(cpu_s: float, elapsed_s: float) -> float:
    return round(100 * cpu_s / elapsed_s, 1) if elapsed_s > 0 else 0.0


def _percentile_ms(latencies_s: list[float], q: float) -> float:
    if not latencies_s:
        return 0.0
    ordered = sorted(latencies_s)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000, 2)


# --- checks --------------------------------------------------------------------------------


async def _check_replays(
    server: Server, book: PaymentBook, progress: Progress | None
) -> tuple[int, list[str]]:
    """(replays that answered the first payment again, what the others answered)."""
    failures: list[str] = []

    async def replay(connection: Connection, n: int) -> None:
        request, payment_id = book.sample[n]
        status, answer = await connection.send(request)
        found = _PAYMENT_ID.search(answer)
        same = found is not None and found.group(1) == payment_id
        if not (status == 200 and same and _REPLAYED in answer):
            failures.append(f"{status}: {answer[:ERROR_SAMPLE_CHARS_MAX].decode(errors='replace')}")

    await _in_parallel(server, range(len(book.sample)), replay, progress)
    if progress is not None:
        progress(book.replays - len(book.sample))
    return len(book.sample) - len(failures), failures


async def _check_balances(server: Server, customers: list[Customer]) -> tuple[int, int]:
    """Every customer's balances through the API against the client's tally:
    (accounts that match, the sum of all balances in minor units)."""
    matched = 0
    total_minor = 0

    async def read(connection: Connection, n: int) -> None:
        nonlocal matched, total_minor
        customer = customers[n]
        request = build_request("GET", "/v1/accounts", server.authority, token=customer.token)
        status, body = await connection.send(request)
        if status != 200:
            raise RuntimeError(f"reading a customer's accounts: {status}: {body[:300]!r}")
        expected = {a.id: a.balance_minor for a in customer.accounts}
        for account in json.loads(body):
            held = Money.parse(account["balance"], account["currency"]).amount_minor
            total_minor += held
            matched += expected.get(account["id"]) == held

    await _in_parallel(server, range(len(customers)), read, None)
    return matched, total_minor


def _check_database(env: dict[str, str], paid_ids: set[str], unanswered: int) -> dict[str, Any]:
    """After the server stopped: ``zhifu ledger verify``, and the settled
    transfer orders against the payments answered 201."""
    runtime = build_runtime(load_settings(env))
    try:
        report = runtime.ledger.verify()
        orders = tables.payments_orders
        with runtime.engine.connect() as connection:
            rows = connection.execute(
                select(orders.c.id, orders.c.state).where(
                    orders.c.kind == PaymentKind.TRANSFER.value
                )
            ).all()
    finally:
        runtime.close()
    settled = {str(row.id) for row in rows if row.state == OrderState.SETTLED.value}
    missing = len(paid_ids - settled)
    unexpected = len(settled - paid_ids)
    # A payment that got no answer may or may not have been made: it may be
    # settled, but no more orders than such payments.
    payments_ok = missing == 0 and unexpected <= unanswered and len(rows) == len(settled)
    return {
        "ledger_verified": report.ok,
        "ledger_problems": [p for check in report.checks for p in check.problems][
            :ERROR_SAMPLES_MAX
        ],
        "payments_checked": len(rows),
        "payments_settled": len(settled),
        "payments_missing": missing,
        "payments_unexpected": unexpected,
        "payments_ok": payments_ok,
    }


# --- the run -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Drive:
    """What the clients did while the server ran."""

    figures: dict[str, Any]
    paid_ids: set[str]
    unanswered: int


async def _load(
    server: Server,
    book: PaymentBook,
    floor: Step,
    config: PaymentsBenchConfig,
    progress: Progress | None,
) -> tuple[Phase, Phase, Phase]:
    """Warm-up, measured payments, then the floor, on the same connections."""
    connections = [await Connection.open(server.host, server.port) for _ in range(config.clients)]
    try:
        seed = config.seed
        warmup = await _run_phase(server, connections, book.pay, config.warmup_s, seed, progress)
        payments = await _run_phase(
            server, connections, book.pay, config.seconds, seed + 1, progress
        )
        floor_phase = await _run_phase(
            server, connections, floor, config.seconds, seed + 2, progress
        )
    finally:
        for connection in connections:
            await connection.close()
    return warmup, payments, floor_phase


async def _drive(
    server: Server, config: PaymentsBenchConfig, teller_password: str, progress: Progress | None
) -> _Drive:
    started = time.perf_counter()
    customers = await _sign_up(server, config, progress)
    teller_token = await _staff_sign_in(server, teller_password)
    accounts = await _open_and_fund(server, customers, config, teller_token, progress)
    setup_s = time.perf_counter() - started
    book = PaymentBook(accounts, server.authority, config.replays, config.seed)
    floor = floor_step(accounts, server.authority)
    warmup, payments, floor_phase = await _load(server, book, floor, config, progress)
    replays_ok, replay_failures = await _check_replays(server, book, progress)
    balances_matched, balances_minor = await _check_balances(server, customers)
    unanswered = warmup.unanswered + payments.unanswered
    deposits_minor = DEPOSIT_MINOR * len(accounts)
    figures: dict[str, Any] = {
        "customers": len(customers),
        "accounts": len(accounts),
        "setup_s": round(setup_s, 1),
        "warmup_payments": warmup.ok,
        "payments": payments.ok,
        "payments_per_s": round(payments.per_s, 1),
        "p50_ms": _percentile_ms(payments.latencies_s, 0.50),
        "p90_ms": _percentile_ms(payments.latencies_s, 0.90),
        "p99_ms": _percentile_ms(payments.latencies_s, 0.99),
        "max_ms": _percentile_ms(payments.latencies_s, 1.0),
        "errors": warmup.errors + payments.errors + floor_phase.errors + len(replay_failures),
        "payment_errors": warmup.errors + payments.errors,
        "floor_endpoint": "GET /v1/accounts/{id}",
        "floor_requests": floor_phase.ok,
        "floor_requests_per_s": round(floor_phase.per_s, 1),
        "floor_p50_ms": _percentile_ms(floor_phase.latencies_s, 0.50),
        "floor_p99_ms": _percentile_ms(floor_phase.latencies_s, 0.99),
        "floor_errors": floor_phase.errors,
        "ratio": round(payments.per_s / floor_phase.per_s, 3) if floor_phase.per_s else 0.0,
        "client_cpu_percent": payments.client_cpu_percent,
        "server_cpu_percent": payments.server_cpu_percent,
        "floor_client_cpu_percent": floor_phase.client_cpu_percent,
        "floor_server_cpu_percent": floor_phase.server_cpu_percent,
        "replays_checked": len(book.sample),
        "replays_ok": replays_ok,
        "balances_checked": len(accounts),
        "balances_matched": balances_matched,
        "money_ok": balances_matched == len(accounts) and balances_minor == deposits_minor,
        "failures": dict(warmup.failures + payments.failures + floor_phase.failures),
        "error_samples": (
            warmup.samples + payments.samples + floor_phase.samples + replay_failures
        )[:ERROR_SAMPLES_MAX],
    }
    paid = {payment_id.decode() for payment_id in book.paid_ids}
    return _Drive(figures, paid, unanswered)


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (it comes with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_payments_bench(
    config: PaymentsBenchConfig, progress: Progress | None = None
) -> dict[str, Any]:
    """Run the whole benchmark; the figures and checks as one JSON-ready dict.

    Raises ValueError for a config out of bounds, RuntimeError when the server
    or the set-up fails (the figures need every customer and account)."""
    check_config(config)
    with (
        scratch_database(config.database_url) as (url, engine_name),
        tempfile.TemporaryDirectory(prefix="zhifu-bench-home-") as directory,
    ):
        home = Path(directory)
        env = server_env(home, url)
        run_cli(env, "db", "upgrade")
        teller_password = secrets.token_urlsafe(24)
        run_cli(
            env,
            "staff",
            "create",
            TELLER_USERNAME,
            "--name",
            "Bench Teller",
            "--role",
            "teller",
            "--password-stdin",
            stdin=teller_password + "\n",
        )
        with (
            _served(env, home, config.workers) as server,
            asyncio.Runner(loop_factory=_event_loop_factory()) as runner,
        ):
            try:
                drive = runner.run(_drive(server, config, teller_password, progress))
            except RuntimeError as exc:
                shown = "\n".join(logged_errors(server.log_path)[:ERROR_SAMPLES_MAX])
                raise RuntimeError(f"{exc}\nthe server logged:\n{shown[:LOG_TAIL_CHARS]}") from exc
        log_errors = len(logged_errors(server.log_path))
        checks = _check_database(env, drive.paid_ids, drive.unanswered)
    result: dict[str, Any] = {
        "engine": engine_name,
        "workers": config.workers,
        "clients": config.clients,
        "seconds": config.seconds,
        **drive.figures,
        **checks,
        "server_log_errors": log_errors,
    }
    result["ok"] = (
        result["errors"] == 0
        and result["money_ok"]
        and result["payments_ok"]
        and result["ledger_verified"]
        and log_errors == 0
    )
    return result


def summary(result: dict[str, Any]) -> list[str]:
    """A few lines for a person: the figures, then whether every check held."""
    checks = [
        "ledger verified" if result["ledger_verified"] else "LEDGER VERIFICATION FAILED",
        f"{result['payments_settled']} payments settled"
        + (" exactly once each" if result["payments_ok"] else ": SOME LOST OR DOUBLED"),
        f"{result['balances_matched']}/{result['balances_checked']} balances as expected",
        f"{result['replays_ok']}/{result['replays_checked']} replays answered the first payment",
    ]
    return [
        f"{result['engine']}, {result['workers']} server worker(s), {result['clients']} clients,"
        f" {result['accounts']} accounts of {result['customers']} customers",
        f"payments: {result['payments_per_s']}/s, p50 {result['p50_ms']} ms,"
        f" p99 {result['p99_ms']} ms, {result['errors']} errors",
        f"floor ({result['floor_endpoint']}): {result['floor_requests_per_s']}/s,"
        f" p50 {result['floor_p50_ms']} ms, p99 {result['floor_p99_ms']} ms;"
        f" ratio {result['ratio']}",
        "checks: " + ", ".join(checks),
        "ok" if result["ok"] else "FAILED",
    ]
