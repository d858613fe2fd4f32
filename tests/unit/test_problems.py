"""Problem responses (RFC 9457): every error is application/problem+json."""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, HTTPException, Query
from httpx import Response
from pydantic import BaseModel, Field
from starlette.exceptions import StarletteDeprecationWarning

from zhifu.api.app import create_app
from zhifu.api.problems import (
    INTERNAL_ERROR_DETAIL,
    PROBLEM_MEDIA_TYPE,
    PROBLEM_TYPE_BASE,
    VALIDATION_ERRORS_MAX,
    Problem,
    ProblemError,
    ValidationProblem,
    error_mapping_for,
    field_errors,
    install_problem_handlers,
    problem_responses,
    problem_type,
    register_error_mapping,
)
from zhifu.config import load_settings
from zhifu.ops.logging import configure_logging
from zhifu.runtime import Runtime, build_runtime

with warnings.catch_warnings():
    # starlette's TestClient warns that it will move from httpx to httpx2.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient


class FakeDomainError(Exception):
    """Stands for a context's root error (e.g. MoneyError)."""

    code = "fake_rule_broken"


class FakeSpecificError(FakeDomainError):
    pass


class LateMappedError(Exception):
    """Mapped only after the app was built."""


register_error_mapping(FakeDomainError, 422, "fake-rule-broken", "Fake rule broken")
register_error_mapping(FakeSpecificError, 409, "fake-conflict", "Fake conflict")


class TransferIn(BaseModel):
    password: str = Field(max_length=8)
    amount_minor: int
    card_number: str = Field(pattern=r"^[0-9]{16}$")


class ManyIn(BaseModel):
    values: list[int]


def _test_router() -> APIRouter:
    router = APIRouter(prefix="/test")

    @router.get("/problem")
    def raise_problem() -> None:
        raise ProblemError(
            409,
            "duplicate-order",
            "Duplicate order",
            "order 7 exists",
            extra={"order_id": "7"},
            headers={"Retry-After": "3"},
        )

    @router.get("/domain")
    def raise_domain() -> None:
        raise FakeDomainError("amount must be positive, got -5")

    @router.get("/specific")
    def raise_specific() -> None:
        raise FakeSpecificError("already settled")

    @router.get("/late")
    def raise_late() -> None:
        raise LateMappedError("late but mapped")

    @router.get("/boom")
    def boom() -> None:
        raise RuntimeError("db password=hunter2 at 10.0.0.5")

    @router.post("/transfers/{transfer_id}", responses=problem_responses(404, 422))
    def create_transfer(transfer_id: int, body: TransferIn) -> dict[str, int]:
        return {"transfer_id": transfer_id}

    @router.get("/page")
    def page(limit: int = Query(ge=1, le=100)) -> dict[str, int]:
        return {"limit": limit}

    @router.post("/many")
    def many(body: ManyIn) -> dict[str, int]:
        return {"count": len(body.values)}

    return router


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    runtime = build_runtime(load_settings({"ZHIFU_HOME": str(tmp_path)}))
    yield runtime
    runtime.close()


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    configure_logging("INFO", "json", stream=buffer)
    yield buffer
    configure_logging("INFO", "json", stream=io.StringIO())


@pytest.fixture
def client(runtime: Runtime) -> TestClient:
    app = create_app(runtime)
    app.include_router(_test_router())
    return TestClient(app)


def _assert_problem(response: Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = response.json()
    assert body["type"] == PROBLEM_TYPE_BASE + slug
    assert body["status"] == status
    assert body["title"]
    assert body["instance"] == response.request.url.path
    assert body["request_id"] == response.headers["x-request-id"]
    Problem.model_validate(body)
    return body


# --- the ProblemError value and the registry ---------------------------------


def test_problem_type_is_a_uri_under_the_problem_base() -> None:
    assert problem_type("not-found") == "https://zhifu.dev/problems/not-found"


@pytest.mark.parametrize("slug", ["", "Not-Found", "not_found", "-x", "x-", "a b"])
def test_problem_type_rejects_bad_slugs(slug: str) -> None:
    with pytest.raises(ValueError, match="slug"):
        problem_type(slug)


@pytest.mark.parametrize("status", [200, 399, 600])
def test_problem_error_rejects_non_error_status(status: int) -> None:
    with pytest.raises(ValueError, match=r"400\.\.599"):
        ProblemError(status, "x", "X")


def test_problem_error_accepts_the_status_limits() -> None:
    assert ProblemError(400, "x", "X").status == 400
    assert ProblemError(599, "x", "X").status == 599


@pytest.mark.parametrize("member", ["type", "title", "status", "detail", "instance", "request_id"])
def test_problem_error_extra_cannot_replace_reserved_members(member: str) -> None:
    with pytest.raises(ValueError, match="may not replace"):
        ProblemError(400, "x", "X", extra={member: "spoofed"})


def test_register_error_mapping_is_idempotent_and_refuses_conflicts() -> None:
    register_error_mapping(FakeDomainError, 422, "fake-rule-broken", "Fake rule broken")
    with pytest.raises(ValueError, match="already mapped"):
        register_error_mapping(FakeDomainError, 400, "other", "Other")


def test_register_error_mapping_validates_status_and_slug() -> None:
    class Unmapped(Exception):
        pass

    with pytest.raises(ValueError):
        register_error_mapping(Unmapped, 302, "moved", "Moved")
    with pytest.raises(ValueError):
        register_error_mapping(Unmapped, 400, "Bad Slug", "Bad")
    assert error_mapping_for(Unmapped()) is None


def test_error_mapping_for_picks_the_most_specific_class() -> None:
    specific = error_mapping_for(FakeSpecificError())
    general = error_mapping_for(FakeDomainError())
    assert specific is not None and specific.status == 409
    assert general is not None and general.status == 422


def test_field_errors_join_locations_and_never_carry_input() -> None:
    errors = [
        {"loc": ("body", "items", 0, "pin"), "msg": "bad", "type": "x", "input": "1234"},
        {"loc": (), "msg": "whole body", "type": "y", "input": {"password": "p"}},
    ]
    assert field_errors(errors) == [
        {"field": "body.items.0.pin", "message": "bad", "type": "x"},
        {"field": "", "message": "whole body", "type": "y"},
    ]


# --- handlers, through the app ------------------------------------------------


def test_problem_error_from_a_route(client: TestClient) -> None:
    response = client.get("/test/problem?secret=abc")
    body = _assert_problem(response, 409, "duplicate-order")
    assert body["detail"] == "order 7 exists"
    assert body["order_id"] == "7"
    assert body["instance"] == "/test/problem"  # never the query string
    assert response.headers["retry-after"] == "3"
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(("status", "slug"), [(418, "im-a-teapot"), (599, "server-error")])
def test_http_exception_of_any_status_is_a_problem(status: int, slug: str) -> None:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/raise")
    def raise_it() -> None:
        raise HTTPException(status_code=status)

    _assert_problem(TestClient(app).get("/raise"), status, slug)


def test_unknown_route_is_a_404_problem(client: TestClient) -> None:
    body = _assert_problem(client.get("/no/such/path"), 404, "not-found")
    assert body["instance"] == "/no/such/path"


def test_wrong_method_is_a_405_problem_with_allow(client: TestClient) -> None:
    response = client.delete("/healthz")
    body = _assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "GET"
    assert body["detail"] == "This method is not allowed here; allowed methods: GET."


def test_validation_error_is_a_422_problem_listing_fields(client: TestClient) -> None:
    response = client.post(
        "/test/transfers/abc",
        json={"password": "hunter2-is-too-long", "amount_minor": "ten", "card_number": "4111x"},
    )
    body = _assert_problem(response, 422, "invalid-request")
    ValidationProblem.model_validate(body)
    fields = {error["field"] for error in body["errors"]}
    assert fields == {"path.transfer_id", "body.password", "body.amount_minor", "body.card_number"}
    for error in body["errors"]:
        assert set(error) == {"field", "message", "type"}
    # The rejected values never come back: they may be secrets.
    for secret in ("hunter2-is-too-long", "4111x", '"ten"'):
        assert secret not in response.text


def test_validation_error_in_the_query_names_the_parameter(client: TestClient) -> None:
    body = _assert_problem(client.get("/test/page?limit=0"), 422, "invalid-request")
    assert [error["field"] for error in body["errors"]] == ["query.limit"]


def test_validation_error_for_a_malformed_json_body(client: TestClient) -> None:
    response = client.post(
        "/test/transfers/1",
        content=b'{"password": "s3cr3t",',
        headers={"content-type": "application/json"},
    )
    _assert_problem(response, 422, "invalid-request")
    assert "s3cr3t" not in response.text


def test_validation_errors_at_the_limit_are_all_listed(client: TestClient) -> None:
    values = ["x"] * VALIDATION_ERRORS_MAX
    body = _assert_problem(
        client.post("/test/many", json={"values": values}), 422, "invalid-request"
    )
    assert len(body["errors"]) == VALIDATION_ERRORS_MAX
    assert "first" not in str(body["detail"])


def test_validation_errors_past_the_limit_are_truncated(client: TestClient) -> None:
    values = ["x"] * (VALIDATION_ERRORS_MAX + 1)
    body = _assert_problem(
        client.post("/test/many", json={"values": values}), 422, "invalid-request"
    )
    assert len(body["errors"]) == VALIDATION_ERRORS_MAX
    assert f"The first {VALIDATION_ERRORS_MAX} are listed" in str(body["detail"])


def test_mapped_domain_error_becomes_its_problem(client: TestClient) -> None:
    body = _assert_problem(client.get("/test/domain"), 422, "fake-rule-broken")
    assert body["detail"] == "amount must be positive, got -5"
    assert body["code"] == "fake_rule_broken"
    assert body["title"] == "Fake rule broken"


def test_mapped_subclass_uses_its_own_mapping(client: TestClient) -> None:
    _assert_problem(client.get("/test/specific"), 409, "fake-conflict")


def test_mapping_registered_after_the_app_was_built_still_applies(client: TestClient) -> None:
    register_error_mapping(LateMappedError, 400, "late-mapped", "Late mapped")
    body = _assert_problem(client.get("/test/late"), 400, "late-mapped")
    assert "code" not in body


def test_unhandled_exception_is_a_generic_500_logged_with_its_trace(
    client: TestClient, log_buffer: io.StringIO
) -> None:
    response = client.get("/test/boom")
    body = _assert_problem(response, 500, "internal-error")
    assert body["detail"] == INTERNAL_ERROR_DETAIL
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    lines = [json.loads(line) for line in log_buffer.getvalue().splitlines()]
    errors = [line for line in lines if line["event"] == "unhandled_exception"]
    assert len(errors) == 1, "logged once, not again by the server"
    assert errors[0]["request_id"] == body["request_id"]
    assert errors[0]["route"] == "/test/boom"
    assert "Traceback" in errors[0]["exception"]
    assert "RuntimeError" in errors[0]["exception"]


def test_handlers_without_the_middleware_still_answer_problems() -> None:
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(_test_router())
    client = TestClient(app, raise_server_exceptions=False)
    response = client.get("/test/boom")
    body = _assert_problem(response, 500, "internal-error")
    assert len(str(body["request_id"])) == 32
    _assert_problem(client.get("/missing"), 404, "not-found")


# --- OpenAPI --------------------------------------------------------------------


def test_openapi_documents_problems_as_problem_json(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    responses = schema["paths"]["/test/transfers/{transfer_id}"]["post"]["responses"]
    assert set(responses["404"]["content"]) == {PROBLEM_MEDIA_TYPE}
    assert responses["404"]["content"][PROBLEM_MEDIA_TYPE]["schema"]["$ref"].endswith("/Problem")
    assert set(responses["422"]["content"]) == {PROBLEM_MEDIA_TYPE}
    assert responses["422"]["content"][PROBLEM_MEDIA_TYPE]["schema"]["$ref"].endswith(
        "/ValidationProblem"
    )
    # Routes that declare nothing still get the real 422 shape.
    page = schema["paths"]["/test/page"]["get"]["responses"]["422"]
    assert page["content"][PROBLEM_MEDIA_TYPE]["schema"]["$ref"].endswith("/ValidationProblem")
    components = schema["components"]["schemas"]
    assert {"Problem", "ValidationProblem", "ProblemFieldError"} <= set(components)
    assert "HTTPValidationError" not in components


def test_problem_responses_rejects_success_statuses() -> None:
    with pytest.raises(ValueError):
        problem_responses(200)
