"""The HTTP skeleton: health, readiness, metrics, request ids, docs, OpenAPI, logs."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from fastapi import APIRouter
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine
from starlette.exceptions import StarletteDeprecationWarning

from zhifu import __version__
from zhifu.api import app as app_module
from zhifu.api.app import create_app, create_app_from_env
from zhifu.api.problems import PROBLEM_MEDIA_TYPE
from zhifu.api.request_context import REQUEST_ID_LENGTH_MAX
from zhifu.api.routers import health
from zhifu.config import load_settings
from zhifu.ops.logging import REDACTED, TOO_DEEP, configure_logging, get_logger, redact_secrets
from zhifu.ops.metrics import UNMATCHED_ROUTE
from zhifu.runtime import Runtime, build_runtime

with warnings.catch_warnings():
    # starlette's TestClient warns that it will move from httpx to httpx2.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

HEX32 = re.compile(r"[0-9a-f]{32}")
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    runtime = build_runtime(load_settings({"ZHIFU_HOME": str(tmp_path)}))
    yield runtime
    runtime.close()


@pytest.fixture
def client(runtime: Runtime) -> TestClient:
    app = create_app(runtime)
    router = APIRouter()

    @router.get("/test/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    app.include_router(router)
    return TestClient(app)


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    configure_logging("DEBUG", "json", stream=buffer)
    yield buffer
    configure_logging("INFO", "json", stream=io.StringIO())


def _log_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def _requests_total(client: TestClient, method: str, route: str, status: str) -> float:
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name != "zhifu_http_requests":
            continue
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_total") and labels == {
                "method": method,
                "route": route,
                "status": status,
            }:
                return sample.value
    return 0.0


# --- health and readiness --------------------------------------------------------


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_when_the_database_answers(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok"}}


def test_readyz_is_a_503_problem_when_the_database_is_unreachable(
    runtime: Runtime, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    runtime.engine.dispose()
    runtime.engine = create_engine(f"sqlite:///{blocker / 'zhifu.db'}")
    response = TestClient(create_app(runtime)).get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = response.json()
    assert body["type"].endswith("/not-ready")
    assert body["checks"] == {"database": "failed"}
    assert "database" in body["detail"]
    assert str(tmp_path) not in response.text  # the driver's message stays in the log
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["instance"] == "/readyz"
    assert response.headers["retry-after"] == str(health.READY_RETRY_AFTER_S)


def test_readyz_gives_up_on_a_database_that_does_not_answer(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    monkeypatch.setattr(health, "READY_CHECK_TIMEOUT_S", 0.05)
    monkeypatch.setattr(health, "ping", lambda _engine: release.wait(10))
    try:
        response = client.get("/readyz")
    finally:
        release.set()
    assert response.status_code == 503
    assert "no answer within" in response.json()["detail"]


def test_readyz_does_not_pile_up_threads_behind_hung_checks(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    slots = threading.BoundedSemaphore(health.READY_CHECKS_IN_FLIGHT_MAX)
    monkeypatch.setattr(health, "_check_slots", slots)
    for _ in range(health.READY_CHECKS_IN_FLIGHT_MAX):
        assert slots.acquire(blocking=False)  # stands for hung checks
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "still waiting" in response.json()["detail"]
    slots.release()  # one hung check ends: the next probe may run
    assert client.get("/readyz").status_code == 200


def test_readyz_releases_its_slot_after_each_check(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    slots = threading.BoundedSemaphore(1)
    monkeypatch.setattr(health, "_check_slots", slots)
    for _ in range(3):
        assert client.get("/readyz").status_code == 200
    assert slots.acquire(blocking=False)


# --- metrics ------------------------------------------------------------------------


def test_metrics_is_prometheus_text(client: TestClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {"zhifu_http_requests", "zhifu_http_request_duration_seconds"} <= names


def test_a_request_shows_up_in_metrics_under_its_route_template(client: TestClient) -> None:
    before = _requests_total(client, "GET", "/test/items/{item_id}", "200")
    assert client.get("/test/items/41").status_code == 200
    assert client.get("/test/items/42").status_code == 200
    after = _requests_total(client, "GET", "/test/items/{item_id}", "200")
    assert after == before + 2
    assert "/test/items/41" not in client.get("/metrics").text


def test_plain_starlette_routes_are_labelled_with_their_path(client: TestClient) -> None:
    before = _requests_total(client, "GET", "/openapi.json", "200")
    client.get("/openapi.json")
    assert _requests_total(client, "GET", "/openapi.json", "200") == before + 1


def test_unknown_routes_and_methods_share_bounded_labels(client: TestClient) -> None:
    before = _requests_total(client, "GET", UNMATCHED_ROUTE, "404")
    client.get("/random/path/1")
    client.get("/random/path/2")
    assert _requests_total(client, "GET", UNMATCHED_ROUTE, "404") == before + 2
    before_other = _requests_total(client, "OTHER", "/healthz", "405")
    client.request("BREW", "/healthz")
    assert _requests_total(client, "OTHER", "/healthz", "405") == before_other + 1


def test_multiprocess_mode_reports_every_worker(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    record = (
        "from zhifu.ops.metrics import observe_http_request\n"
        "observe_http_request('GET', '/healthz', 200, 0.001)\n"
    )
    for _ in range(2):  # two "workers", each its own process
        subprocess.run([sys.executable, "-c", record], env=env, check=True, cwd=REPO_ROOT)
    render = "from zhifu.ops.metrics import render_metrics\nprint(render_metrics()[0].decode())\n"
    result = subprocess.run(
        [sys.executable, "-c", render],
        env=env,
        check=True,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert 'zhifu_http_requests_total{method="GET",route="/healthz",status="200"} 2.0' in (
        result.stdout
    )


# --- request ids ------------------------------------------------------------------


def test_request_id_is_generated_when_absent(client: TestClient) -> None:
    first = client.get("/healthz").headers["x-request-id"]
    second = client.get("/healthz").headers["x-request-id"]
    assert HEX32.fullmatch(first)
    assert HEX32.fullmatch(second)
    assert first != second


@pytest.mark.parametrize(
    "request_id", ["abc", "A.b-c_9", "x" * REQUEST_ID_LENGTH_MAX, "0190c4c5-7e0c-7f00-8000-0000"]
)
def test_a_well_formed_request_id_is_echoed(client: TestClient, request_id: str) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": request_id})
    assert response.headers["x-request-id"] == request_id


@pytest.mark.parametrize(
    "request_id",
    ["", "x" * (REQUEST_ID_LENGTH_MAX + 1), "has space", "semi;colon", "new\\nline", "é"],
)
def test_a_malformed_request_id_is_replaced(client: TestClient, request_id: str) -> None:
    response = client.get("/healthz", headers=[(b"X-Request-ID", request_id.encode("utf-8"))])
    assert HEX32.fullmatch(response.headers["x-request-id"])


def test_problem_request_id_matches_the_client_header(client: TestClient) -> None:
    response = client.get("/nowhere", headers={"X-Request-ID": "trace-123"})
    assert response.json()["request_id"] == "trace-123"
    assert response.headers["x-request-id"] == "trace-123"


def test_access_log_line_is_bounded_and_carries_the_request_id(
    client: TestClient, log_buffer: io.StringIO
) -> None:
    client.get(
        "/test/items/7?token=s3cr3t",
        headers={"X-Request-ID": "req-1", "Authorization": "Bearer s3cr3t"},
    )
    access = [line for line in _log_lines(log_buffer) if line["logger"] == "zhifu.access"]
    assert len(access) == 1
    line = access[0]
    assert line["event"] == "http_request"
    assert line["method"] == "GET"
    assert line["route"] == "/test/items/{item_id}"
    assert line["status"] == 200
    assert line["request_id"] == "req-1"
    assert isinstance(line["duration_ms"], float | int)
    assert {"timestamp", "level"} <= set(line)
    assert "s3cr3t" not in log_buffer.getvalue()


# --- docs and OpenAPI ---------------------------------------------------------------


def test_docs_page_needs_no_network(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert not re.search(r"(?i)https?://", page), "no external URLs"
    assert "//cdn" not in page
    assert not re.search(r"(?i)<(script|link|img)[^>]+(src|href)=\"//", page)
    assert 'data-openapi-url="/openapi.json"' in page


def test_docs_page_policy_allows_exactly_its_inline_script_and_style(client: TestClient) -> None:
    response = client.get("/docs")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "connect-src 'self'" in policy
    for tag in ("script", "style"):
        match = re.search(rf"<{tag}>(.*?)</{tag}>", response.text, re.DOTALL)
        assert match is not None
        digest = base64.b64encode(hashlib.sha256(match.group(1).encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in policy


def test_openapi_document(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "zhifu"
    assert schema["info"]["version"] == __version__
    for path in ("/healthz", "/readyz", "/metrics"):
        assert schema["paths"][path]["get"]["tags"] == ["operations"]
        assert schema["paths"][path]["get"]["summary"]
    assert "/docs" not in schema["paths"]
    assert "/openapi.json" not in schema["paths"]
    ready = schema["paths"]["/readyz"]["get"]["responses"]
    assert set(ready["503"]["content"]) == {PROBLEM_MEDIA_TYPE}
    assert set(schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert "operations" in {tag["name"] for tag in schema["tags"]}
    _assert_refs_resolve(schema, schema)


def _assert_refs_resolve(node: Any, schema: dict[str, Any]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            target: Any = schema
            for part in ref.removeprefix("#/").split("/"):
                target = target[part]
        for value in node.values():
            _assert_refs_resolve(value, schema)
    elif isinstance(node, list):
        for item in node:
            _assert_refs_resolve(item, schema)


# --- the server factory -------------------------------------------------------------


def test_create_app_from_env_builds_and_closes_its_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_buffer: io.StringIO
) -> None:
    monkeypatch.setenv("ZHIFU_HOME", str(tmp_path))
    monkeypatch.delenv("ZHIFU_DATABASE_URL", raising=False)
    monkeypatch.setenv("ZHIFU_LOG_FORMAT", "json")
    # Keep the factory's logging configuration off the real stderr.
    monkeypatch.setattr(
        app_module,
        "configure_logging",
        lambda level, fmt: configure_logging(level, fmt, stream=log_buffer),
    )
    app = create_app_from_env()
    closed: list[bool] = []
    runtime: Runtime = app.state.runtime
    original_close = runtime.close
    monkeypatch.setattr(runtime, "close", lambda: (closed.append(True), original_close()))
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        assert closed == []
    assert closed == [True]
    assert runtime.settings.home == tmp_path
    events = [line["event"] for line in _log_lines(log_buffer)]
    assert "api_started" in events
    assert "api_stopped" in events


def test_create_app_leaves_a_borrowed_runtime_open(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[bool] = []
    monkeypatch.setattr(runtime, "close", lambda: closed.append(True))
    with TestClient(create_app(runtime)) as client:
        assert client.get("/healthz").status_code == 200
    assert closed == []  # the caller closes what it lent


# --- logging and redaction ----------------------------------------------------------


def test_log_lines_are_json_with_timestamp_level_logger_and_context(
    log_buffer: io.StringIO,
) -> None:
    with structlog.contextvars.bound_contextvars(request_id="req-9"):
        get_logger("zhifu.test").info("something_happened", amount_minor=100)
    (line,) = _log_lines(log_buffer)
    assert line["event"] == "something_happened"
    assert line["level"] == "info"
    assert line["logger"] == "zhifu.test"
    assert line["request_id"] == "req-9"
    assert line["amount_minor"] == 100
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", line["timestamp"])


def test_secret_keys_are_redacted_at_every_depth(log_buffer: io.StringIO) -> None:
    get_logger("zhifu.test").info(
        "login",
        user="alice",
        password="hunter2",
        Authorization="Bearer abc.def",
        apiKey="k-123",
        # Secrets that cannot occur by chance in a timestamp or a request id.
        card={"card_number": "4111111111111111", "expiry": "12/30", "PIN": "pin-8642"},
        attempts=[{"otp": "otp-654321", "ok": False}, {"session_token": "tok-1"}],
        nested={"level1": {"level2": {"private_key": "-----BEGIN", "note": "fine"}}},
    )
    text = log_buffer.getvalue()
    for secret in ("hunter2", "abc.def", "k-123", "4111111111111111", "pin-8642", "tok-1"):
        assert secret not in text
    assert "-----BEGIN" not in text
    assert "otp-654321" not in text
    (line,) = _log_lines(log_buffer)
    assert line["user"] == "alice"
    assert line["password"] == REDACTED
    assert line["Authorization"] == REDACTED
    assert line["apiKey"] == REDACTED
    assert line["card"] == {"card_number": REDACTED, "expiry": "12/30", "PIN": REDACTED}
    assert line["attempts"] == [{"otp": REDACTED, "ok": False}, {"session_token": REDACTED}]
    assert line["nested"]["level1"]["level2"] == {"private_key": REDACTED, "note": "fine"}


def test_stdlib_logs_are_formatted_and_redacted_too(log_buffer: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").info(
        "started %s", "server", extra={"db_password": "pw-1", "worker": 3, "color_message": "x"}
    )
    (line,) = _log_lines(log_buffer)
    assert line["event"] == "started server"
    assert line["logger"] == "uvicorn.error"
    assert line["level"] == "info"
    assert line["db_password"] == REDACTED
    assert line["worker"] == 3
    assert "message" not in line
    assert "color_message" not in line
    assert "pw-1" not in log_buffer.getvalue()


def test_loggers_that_write_query_strings_are_silenced(log_buffer: io.StringIO) -> None:
    # uvicorn's access line carries the query string; ours does not.
    logging.getLogger("uvicorn.access").info('"GET /x?token=abc HTTP/1.1" 200')
    logging.getLogger("httpx").info("HTTP Request: GET /x?token=abc")
    assert log_buffer.getvalue() == ""


def test_redaction_stops_at_the_depth_limit() -> None:
    deep: dict[str, Any] = {"password": "x"}
    for _ in range(20):
        deep = {"inner": deep}
    event = redact_secrets(None, "info", {"event": "e", "data": deep})
    assert "'x'" not in repr(event)
    assert TOO_DEEP in repr(event)


def test_console_format_renders_and_redacts() -> None:
    buffer = io.StringIO()
    try:
        configure_logging("INFO", "console", stream=buffer)
        get_logger("zhifu.test").info("hello", token="t-1", amount_minor=5)
    finally:
        configure_logging("INFO", "json", stream=io.StringIO())
    output = buffer.getvalue()
    assert "hello" in output
    assert "amount_minor=5" in output
    assert "t-1" not in output


def test_log_level_filters(log_buffer: io.StringIO) -> None:
    configure_logging("WARNING", "json", stream=log_buffer)
    get_logger("zhifu.test").info("quiet")
    get_logger("zhifu.test").warning("loud")
    assert [line["event"] for line in _log_lines(log_buffer)] == ["loud"]


@pytest.mark.parametrize(("level", "fmt"), [("INFO", "xml"), ("TRACE", "json")])
def test_configure_logging_rejects_unknown_values(level: str, fmt: str) -> None:
    with pytest.raises(ValueError, match="must be one of"):
        configure_logging(level, fmt, stream=io.StringIO())
