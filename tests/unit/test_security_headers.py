"""Security headers on every response, and CORS closed unless origins are configured."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from zhifu.api.app import create_app
from zhifu.api.docs_page import CONTENT_SECURITY_POLICY as DOCS_CONTENT_SECURITY_POLICY
from zhifu.api.problems import PROBLEM_MEDIA_TYPE
from zhifu.api.security_headers import (
    DEFAULT_CONTENT_SECURITY_POLICY,
    PERMISSIONS_POLICY,
    STRICT_TRANSPORT_SECURITY,
    default_headers,
)
from zhifu.config import load_settings
from zhifu.runtime import Runtime, build_runtime

with warnings.catch_warnings():
    # starlette's TestClient warns that it will move from httpx to httpx2.
    from starlette.exceptions import StarletteDeprecationWarning

    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

WEB_BANK = "https://bank.example.com"
STAFF_CONSOLE = "http://localhost:5173"
OTHER_SITE = "https://evil.example.net"
EXPECTED = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
CORS_RESPONSE_HEADERS = (
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-allow-credentials",
    "access-control-expose-headers",
)


def _runtime(tmp_path: Path, **env: str) -> Iterator[Runtime]:
    runtime = build_runtime(load_settings({"ZHIFU_HOME": str(tmp_path), **env}))
    yield runtime
    runtime.close()


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    yield from _runtime(tmp_path)


@pytest.fixture
def cors_runtime(tmp_path: Path) -> Iterator[Runtime]:
    yield from _runtime(tmp_path, ZHIFU_CORS_ORIGINS=f"{WEB_BANK}, {STAFF_CONSOLE}")


def _app_with_test_routes(runtime: Runtime) -> TestClient:
    app = create_app(runtime)
    router = APIRouter()

    @router.get("/v1/test/own-headers")
    def own_headers() -> Response:
        return JSONResponse(
            {"ok": True},
            headers={
                "Cache-Control": "private, max-age=60",
                "X-Frame-Options": "SAMEORIGIN",
                "Content-Security-Policy": "default-src 'self'",
            },
        )

    @router.get("/v1/test/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    @router.get("/v1/test/plain")
    def plain() -> dict[str, bool]:
        return {"ok": True}

    app.include_router(router)
    return TestClient(app)


@pytest.fixture
def client(runtime: Runtime) -> TestClient:
    return _app_with_test_routes(runtime)


def _assert_baseline(response: httpx.Response) -> None:
    headers = response.headers
    for name, value in EXPECTED.items():
        assert headers.get(name) == value, name


# --- security headers ---------------------------------------------------------------


def test_the_permissions_policy_is_the_documented_constant() -> None:
    assert EXPECTED["permissions-policy"] == PERMISSIONS_POLICY


def test_a_json_response_gets_every_header(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    _assert_baseline(response)
    assert response.headers["content-security-policy"] == DEFAULT_CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in DEFAULT_CONTENT_SECURITY_POLICY
    assert "strict-transport-security" not in response.headers  # plain http
    assert "cache-control" not in response.headers  # not under /v1/
    assert response.headers["x-request-id"]


def test_a_problem_response_gets_every_header(client: TestClient) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    _assert_baseline(response)
    assert response.headers["content-security-policy"] == DEFAULT_CONTENT_SECURITY_POLICY


def test_a_method_not_allowed_problem_gets_every_header(client: TestClient) -> None:
    response = client.request("BREW", "/healthz")
    assert response.status_code == 405
    _assert_baseline(response)


def test_the_docs_page_keeps_its_own_policy(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    _assert_baseline(response)
    assert response.headers["content-security-policy"] == DOCS_CONTENT_SECURITY_POLICY
    assert len(response.headers.get_list("content-security-policy")) == 1
    assert len(response.headers.get_list("x-content-type-options")) == 1


def test_metrics_and_openapi_get_the_headers(client: TestClient) -> None:
    for path in ("/metrics", "/openapi.json"):
        response = client.get(path)
        assert response.status_code == 200
        _assert_baseline(response)


def test_hsts_only_over_https(runtime: Runtime) -> None:
    app = create_app(runtime)
    over_http = TestClient(app).get("/healthz")
    assert "strict-transport-security" not in over_http.headers
    over_https = TestClient(app, base_url="https://testserver").get("/healthz")
    assert over_https.headers["strict-transport-security"] == STRICT_TRANSPORT_SECURITY
    assert STRICT_TRANSPORT_SECURITY == "max-age=31536000; includeSubDomains"
    _assert_baseline(over_https)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/test/plain", 200),
        ("/v1/ledger/accounts/0190c4c5-7e0c-7f00-8000-000000000001", 401),  # no service token
        ("/v1/nowhere", 404),
    ],
)
def test_no_store_under_v1(client: TestClient, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert response.headers["cache-control"] == "no-store"
    _assert_baseline(response)


def test_an_unhandled_error_answered_by_the_error_boundary_gets_the_headers(
    client: TestClient,
) -> None:
    response = client.get("/v1/test/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert response.headers["cache-control"] == "no-store"
    _assert_baseline(response)


def test_headers_a_response_set_itself_are_kept(client: TestClient) -> None:
    response = client.get("/v1/test/own-headers")
    assert response.headers["cache-control"] == "private, max-age=60"
    assert response.headers["x-frame-options"] == "SAMEORIGIN"
    assert response.headers["content-security-policy"] == "default-src 'self'"
    assert len(response.headers.get_list("cache-control")) == 1
    assert response.headers["x-content-type-options"] == "nosniff"


def test_default_headers_by_path_and_scheme() -> None:
    http_root = dict(default_headers({"type": "http", "path": "/healthz", "scheme": "http"}))
    assert "Cache-Control" not in http_root
    assert "Strict-Transport-Security" not in http_root
    https_v1 = dict(default_headers({"type": "http", "path": "/v1/x", "scheme": "https"}))
    assert https_v1["Cache-Control"] == "no-store"
    assert https_v1["Strict-Transport-Security"] == STRICT_TRANSPORT_SECURITY
    # "/v1" alone and look-alike prefixes are not under /v1/.
    assert "Cache-Control" not in dict(default_headers({"path": "/v10/x", "scheme": "http"}))


# --- CORS ---------------------------------------------------------------------------


def _preflight(client: TestClient, origin: str) -> httpx.Response:
    return client.options(
        "/v1/ledger/transfers",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )


def test_cors_is_closed_by_default(client: TestClient) -> None:
    response = client.get("/healthz", headers={"Origin": WEB_BANK})
    assert response.status_code == 200
    for name in CORS_RESPONSE_HEADERS:
        assert name not in response.headers
    preflight = _preflight(client, WEB_BANK)
    assert preflight.status_code == 405
    for name in CORS_RESPONSE_HEADERS:
        assert name not in preflight.headers
    _assert_baseline(preflight)


def test_a_configured_origin_is_allowed(cors_runtime: Runtime) -> None:
    client = TestClient(create_app(cors_runtime))
    for origin in (WEB_BANK, STAFF_CONSOLE):
        response = client.get("/healthz", headers={"Origin": origin})
        assert response.headers["access-control-allow-origin"] == origin
        exposed = response.headers["access-control-expose-headers"].lower()
        assert {"x-request-id", "link", "x-next-cursor"} <= {h.strip() for h in exposed.split(",")}
        assert "access-control-allow-credentials" not in response.headers
        _assert_baseline(response)


def test_another_origin_is_not_allowed(cors_runtime: Runtime) -> None:
    client = TestClient(create_app(cors_runtime))
    response = client.get("/healthz", headers={"Origin": OTHER_SITE})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    preflight = _preflight(client, OTHER_SITE)
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers


def test_a_preflight_from_a_configured_origin_is_approved(cors_runtime: Runtime) -> None:
    client = TestClient(create_app(cors_runtime))
    response = _preflight(client, WEB_BANK)
    headers = response.headers
    assert response.status_code == 200
    assert headers["access-control-allow-origin"] == WEB_BANK
    methods = {method.strip() for method in headers["access-control-allow-methods"].split(",")}
    assert methods == {"GET", "POST", "PUT", "PATCH", "DELETE"}
    allowed = {name.strip().lower() for name in headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key", "x-request-id"} <= allowed
    assert "access-control-allow-credentials" not in headers
    # The preflight passes through the request-context and security layers too.
    assert headers["x-request-id"]
    _assert_baseline(response)


def test_a_preflight_for_a_method_not_allowed_is_refused(cors_runtime: Runtime) -> None:
    client = TestClient(create_app(cors_runtime))
    response = client.options(
        "/v1/ledger/transfers",
        headers={"Origin": WEB_BANK, "Access-Control-Request-Method": "TRACE"},
    )
    assert response.status_code == 400
