"""End-to-end fixtures: a real ``zhifu serve`` process, reached over real HTTP.

Each test module gets its own server: its own free port, its own ``ZHIFU_HOME``
(SQLite database, signing key, service token) and JSON logs in a file there.
So modules run side by side under pytest-xdist (``-n auto --dist loadgroup``;
each module is one ``xdist_group``, which keeps its tests on one worker and
starts its server once).

The fixture migrates the schema with ``zhifu db upgrade``, reads the service
token with ``zhifu service-token`` (both in the server's environment), waits
for ``/healthz``, and at the end stops the server with SIGTERM. A server that
does not finish its shutdown and exit in time, or that logged an error, fails the
module.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
PROBLEM_TYPE_BASE: Final = "https://zhifu.dev/problems/"
STARTUP_TIMEOUT_S: Final = 30.0
SHUTDOWN_TIMEOUT_S: Final = 15.0
CLI_TIMEOUT_S: Final = 60.0
HTTP_TIMEOUT_S: Final = 60.0
START_ATTEMPTS_MAX: Final = 3  # a free port can be taken between probing and binding
LOG_TAIL_CHARS: Final = 4000
ERROR_LEVELS: Final = frozenset({"error", "critical", "exception"})
CLEAN_EXIT_STATUSES: Final = frozenset({0, -signal.SIGTERM})
# Logged once the app's lifespan has closed the runtime (worker, committer, engine).
SHUTDOWN_EVENTS: Final = frozenset({"api_stopped", "Application shutdown complete."})


@dataclass(frozen=True)
class LiveServer:
    """A running ``zhifu serve`` process and what a client needs to reach it."""

    base_url: str
    token: str
    home: Path
    env: dict[str, str]
    stdout_path: Path
    stderr_path: Path

    def log_text(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        """The server's JSON log lines (stderr) so far."""
        return _read_log(self.stderr_path)


def _read_log(path: Path) -> list[dict[str, Any]]:
    """Every line of a server log; fails the test on a line that is not JSON."""
    lines = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"ZHIFU_LOG_FORMAT=json, yet the server logged a non-JSON line: {line!r}")
    return lines


def server_env(home: Path) -> dict[str, str]:
    """This process's environment without any ZHIFU_* setting, plus the server's own."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ZHIFU_") and key != "PROMETHEUS_MULTIPROC_DIR"
    }
    env["ZHIFU_HOME"] = str(home)
    env["ZHIFU_LOG_FORMAT"] = "json"
    return env


def run_cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    """Run ``zhifu ARGS`` in ``env`` (``stdin`` as its standard input, if given);
    its stdout. Fails the test on a non-zero exit."""
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
        pytest.fail(
            f"zhifu {' '.join(args)} exited with {completed.returncode}:\n"
            f"{completed.stdout}\n{completed.stderr}"
        )
    return completed.stdout


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _tail(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:]


def _wait_healthy(process: subprocess.Popen[bytes], base_url: str) -> bool:
    """True once /healthz answers 200; False if the process exits first."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"the server at {base_url} did not answer /healthz in {STARTUP_TIMEOUT_S:g} s")


def _start(env: dict[str, str], home: Path, attempt: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    stdout_path = home / f"server-{attempt}.out"
    stderr_path = home / f"server-{attempt}.log"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "zhifu.cli", "serve", "--port", str(port)],
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    return process, f"http://127.0.0.1:{port}"


def _stop(process: subprocess.Popen[bytes], stderr_path: Path) -> None:
    """SIGTERM, then insist on a complete shutdown within the time limit."""
    if process.poll() is not None:
        pytest.fail(
            f"the server died during the tests (exit status {process.returncode}):\n"
            f"{_tail(stderr_path)}"
        )
    process.send_signal(signal.SIGTERM)
    try:
        status = process.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"the server did not stop within {SHUTDOWN_TIMEOUT_S:g} s of SIGTERM")
    # uvicorn re-raises the signal it caught once it has shut down, so a clean
    # stop by SIGTERM ends with that signal's status rather than 0.
    if status not in CLEAN_EXIT_STATUSES:
        pytest.fail(f"the server exited with status {status}:\n{_tail(stderr_path)}")
    events = {line.get("event") for line in _read_log(stderr_path)}
    missing = SHUTDOWN_EVENTS - events
    if missing:
        pytest.fail(f"the server did not shut down cleanly (no {sorted(missing)} logged)")


def _logged_errors(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if str(line.get("level", "")).lower() in ERROR_LEVELS]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real server for this module, stopped (and checked) when the module is done."""
    home = tmp_path_factory.mktemp("zhifu-home")
    env = server_env(home)
    run_cli(env, "db", "upgrade")
    token = run_cli(env, "service-token").strip()
    assert token, "zhifu service-token printed nothing"
    for attempt in range(START_ATTEMPTS_MAX):
        process, base_url = _start(env, home, attempt)
        if _wait_healthy(process, base_url):
            break
        # Exited before answering: most likely the port was taken meanwhile.
        process.wait()
    else:
        pytest.fail(
            f"the server would not start in {START_ATTEMPTS_MAX} attempts:\n"
            f"{_tail(home / f'server-{attempt}.log')}"
        )
    server = LiveServer(
        base_url=base_url,
        token=token,
        home=home,
        env=env,
        stdout_path=home / f"server-{attempt}.out",
        stderr_path=home / f"server-{attempt}.log",
    )
    try:
        yield server
    finally:
        _stop(process, server.stderr_path)
    errors = _logged_errors(server.log_lines())
    if errors:
        pytest.fail(f"the server logged {len(errors)} error(s): {errors[:3]}")


@pytest.fixture
def api(live_server: LiveServer) -> Iterator[httpx.Client]:
    """A client that presents the service token."""
    with httpx.Client(
        base_url=live_server.base_url,
        headers={"Authorization": f"Bearer {live_server.token}"},
        timeout=HTTP_TIMEOUT_S,
    ) as client:
        yield client


@pytest.fixture
def anonymous(live_server: LiveServer) -> Iterator[httpx.Client]:
    """A client without credentials."""
    with httpx.Client(base_url=live_server.base_url, timeout=HTTP_TIMEOUT_S) as client:
        yield client


def check_problem(response: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    """Assert ``response`` is an RFC 9457 problem of ``status``; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM_MEDIA_TYPE
    body = response.json()
    assert isinstance(body, dict)
    for member in ("type", "title", "status", "instance", "request_id"):
        assert member in body, f"problem lacks {member!r}: {body}"
    assert body["type"].startswith(PROBLEM_TYPE_BASE)
    if slug is not None:
        assert body["type"] == PROBLEM_TYPE_BASE + slug, body
    assert isinstance(body["title"], str)
    assert body["title"]
    assert body["status"] == status
    assert body["instance"] == response.request.url.path
    assert body["request_id"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


@pytest.fixture
def assert_problem() -> Callable[..., dict[str, Any]]:
    """``assert_problem(response, status, slug=None)``: see :func:`check_problem`."""
    return check_problem
