"""Operations endpoints of a real server: health, readiness, metrics, OpenAPI, docs, logs."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.xdist_group("e2e-operations")

PROBLEM_MEDIA_TYPE = "application/problem+json"
LOG_WAIT_S = 5.0
LEDGER_PATHS = {
    "/v1/ledger/accounts": {"post"},
    "/v1/ledger/accounts/{account_id}": {"get"},
    "/v1/ledger/accounts/{account_id}/close": {"post"},
    "/v1/ledger/accounts/{account_id}/transfers": {"get"},
    "/v1/ledger/accounts/{account_id}/statement": {"get"},
    "/v1/ledger/accounts/{account_id}/balance": {"get"},
    "/v1/ledger/transfers": {"post"},
    "/v1/ledger/transfers/{transfer_id}": {"get"},
    "/v1/ledger/transfers/{transfer_id}/proof": {"get"},
    "/v1/ledger/journal/head": {"get"},
}


def _requests_total(client: httpx.Client) -> dict[tuple[str, str, str], float]:
    """zhifu_http_requests_total by (method, route, status), as the server reports it."""
    response = client.get("/metrics")
    assert response.status_code == 200
    totals: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "zhifu_http_requests_total":
                labels = sample.labels
                totals[(labels["method"], labels["route"], labels["status"])] = sample.value
    return totals


def test_healthz_answers_ok(anonymous: httpx.Client) -> None:
    response = anonymous.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_readyz_reports_the_database_ok(anonymous: httpx.Client) -> None:
    response = anonymous.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok"}}


def test_a_client_request_id_is_echoed(anonymous: httpx.Client) -> None:
    response = anonymous.get("/healthz", headers={"X-Request-ID": "e2e-trace.42"})
    assert response.headers["x-request-id"] == "e2e-trace.42"


def test_metrics_count_requests_by_route_template(api: httpx.Client) -> None:
    account_id = uuid.uuid4()
    assert api.get(f"/v1/ledger/accounts/{account_id}").status_code == 404
    assert api.get("/healthz").status_code == 200
    assert api.get(f"/no/such/path/{account_id}").status_code == 404

    response = api.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    assert "zhifu_http_requests_total" in response.text
    assert "zhifu_http_request_duration_seconds_bucket" in response.text
    assert str(account_id) not in response.text, "raw paths must never become label values"
    totals = _requests_total(api)
    assert totals[("GET", "/v1/ledger/accounts/{account_id}", "404")] >= 1
    assert totals[("GET", "/healthz", "200")] >= 1
    assert totals[("GET", "unmatched", "404")] >= 1
    for _, route, _ in totals:
        assert route == "unmatched" or route.startswith("/"), route


def test_metrics_count_grows_with_each_request(anonymous: httpx.Client) -> None:
    key = ("GET", "/readyz", "200")
    before = _requests_total(anonymous).get(key, 0.0)
    for _ in range(3):
        assert anonymous.get("/readyz").status_code == 200
    assert _requests_total(anonymous)[key] == before + 3


def test_openapi_lists_the_ledger_paths(anonymous: httpx.Client) -> None:
    response = anonymous.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    ledger_paths = {p: item for p, item in schema["paths"].items() if p.startswith("/v1/ledger")}
    assert {p: set(item) for p, item in ledger_paths.items()} == LEDGER_PATHS
    for item in ledger_paths.values():
        for operation in item.values():
            assert operation["tags"] == ["ledger"]
            assert operation["summary"]


def test_openapi_documents_problem_responses(anonymous: httpx.Client) -> None:
    schema = anonymous.get("/openapi.json").json()
    paths = schema["paths"]

    def content(path: str, method: str, status: str) -> dict[str, Any]:
        result: dict[str, Any] = paths[path][method]["responses"][status]["content"]
        return result

    for path, methods in LEDGER_PATHS.items():
        for method in methods:
            for status in ("401", "422"):
                assert set(content(path, method, status)) == {PROBLEM_MEDIA_TYPE}, (path, status)
    not_found = content("/v1/ledger/accounts/{account_id}", "get", "404")[PROBLEM_MEDIA_TYPE]
    assert not_found["schema"]["$ref"] == "#/components/schemas/Problem"
    invalid = content("/v1/ledger/transfers", "post", "422")[PROBLEM_MEDIA_TYPE]
    assert invalid["schema"]["$ref"] == "#/components/schemas/ValidationProblem"
    assert set(content("/v1/ledger/accounts/{account_id}/close", "post", "409")) == {
        PROBLEM_MEDIA_TYPE
    }
    assert set(content("/v1/ledger/accounts/{account_id}/transfers", "get", "400")) == {
        PROBLEM_MEDIA_TYPE
    }
    problem = schema["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "instance", "request_id"} <= set(problem["required"])
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_docs_page_has_no_external_urls(anonymous: httpx.Client) -> None:
    response = anonymous.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert not re.search(r"(?i)https?://", page), "no external URLs"
    assert not re.search(r"(?i)(src|href)\s*=\s*[\"']?//", page), "no protocol-relative URLs"
    assert "//cdn" not in page
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "/openapi.json" in page


def test_unknown_route_is_a_problem(
    anonymous: httpx.Client, assert_problem: Callable[..., dict[str, Any]]
) -> None:
    body = assert_problem(anonymous.get("/v1/nothing-here"), 404, "not-found")
    assert body["detail"]


def test_wrong_method_is_a_problem(
    anonymous: httpx.Client, assert_problem: Callable[..., dict[str, Any]]
) -> None:
    response = anonymous.delete("/healthz")
    assert_problem(response, 405, "method-not-allowed")
    assert "GET" in response.headers["allow"]


def test_logs_are_json_lines_with_request_ids_and_no_token(
    live_server: Any, api: httpx.Client
) -> None:
    response = api.get("/v1/ledger/journal/head", headers={"X-Request-ID": "e2e-log-check"})
    assert response.status_code == 200
    # The access line is written once the response has gone out: wait for it.
    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        lines = live_server.log_lines()  # every line must parse as JSON
        access = [
            line
            for line in lines
            if line.get("event") == "http_request" and line.get("request_id") == "e2e-log-check"
        ]
        if access or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(access) == 1
    assert access[0]["route"] == "/v1/ledger/journal/head"
    assert access[0]["status"] == 200
    assert access[0]["logger"] == "zhifu.access"
    assert live_server.token not in live_server.log_text()
