"""RFC 9457 problem details: the one shape of every error the API returns.

Every error response has media type ``application/problem+json`` and a body
with ``type`` (a URI under ``https://zhifu.dev/problems/``), ``title``,
``status``, ``detail`` (when there is something to say), ``instance`` (the
request path, never the query string) and ``request_id`` (the same as the
``X-Request-ID`` response header). Some problems add members: a 422 lists
``errors`` (field, message, type); a context's error may add ``code``.

Where errors come from:
- :class:`ProblemError`, raised by routers for HTTP-level failures.
- Typed domain errors mapped with :func:`register_error_mapping`: the domain
  raises its own error and never imports anything from here.
- Starlette's ``HTTPException`` (unknown route 404, wrong method 405) and
  FastAPI's ``RequestValidationError`` (422; the rejected input is never
  echoed back, since it may be a password or a card number).
- Anything else is a bug: a 500 with a generic detail, logged with its stack
  trace server-side, nothing about the internals sent to the client.
"""

from __future__ import annotations

import http
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from zhifu.api.request_context import REQUEST_ID_HEADER, request_id_of, route_template
from zhifu.ops.logging import get_logger

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
PROBLEM_TYPE_BASE: Final = "https://zhifu.dev/problems/"
# Members every problem has; extra members may not replace them.
RESERVED_MEMBERS: Final = frozenset({"type", "title", "status", "detail", "instance", "request_id"})
# A 422 lists at most this many field errors, so a huge bad payload cannot
# produce a huge error response.
VALIDATION_ERRORS_MAX: Final = 100
INTERNAL_ERROR_DETAIL: Final = (
    "An unexpected error occurred. Quote the request_id when reporting this problem."
)
_SLUG_PATTERN: Final = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_DEFAULT_DETAILS: Final = {
    404: "No resource exists at this path.",
}

_log = get_logger("zhifu.api.problems")


def problem_type(slug: str) -> str:
    """The ``type`` URI of the problem named ``slug`` (lower-case words joined by '-')."""
    if _SLUG_PATTERN.fullmatch(slug) is None:
        raise ValueError(f"problem slug must be lower-case words joined by '-', got {slug!r}")
    return PROBLEM_TYPE_BASE + slug


def _check_status(status: int) -> None:
    if not 400 <= status <= 599:
        raise ValueError(f"a problem's status must be 400..599, got {status}")


def _check_extra(extra: Mapping[str, Any] | None) -> None:
    clash = RESERVED_MEMBERS.intersection(extra or {})
    if clash:
        raise ValueError(f"extra problem members may not replace {sorted(clash)}")


class ProblemError(Exception):
    """An HTTP-level failure that a router raises; becomes a problem response.

    ``slug`` names the problem type (``https://zhifu.dev/problems/<slug>``);
    ``extra`` adds members to the body (not the reserved ones); ``headers``
    go on the response (``Retry-After``, ``Allow``, ...).
    """

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str | None = None,
        *,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        _check_status(status)
        _check_extra(extra)
        self.status = status
        self.type = problem_type(slug)
        self.slug = slug
        self.title = title
        self.detail = detail
        self.extra: dict[str, Any] = dict(extra or {})
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(detail or title)


@dataclass(frozen=True, slots=True)
class ErrorMapping:
    """How one domain error type becomes a problem."""

    status: int
    slug: str
    title: str


# Keyed by class; looked up along the raised error's MRO.
_ERROR_MAPPINGS: dict[type, ErrorMapping] = {}


def register_error_mapping(exc_type: type[Exception], status: int, slug: str, title: str) -> None:
    """Answer ``exc_type`` (and its subclasses) with a problem of ``status``.

    The problem's ``detail`` is ``str(exc)``, so the error's message must be
    written for the client; an error with a string ``code`` attribute also
    gets a ``code`` member. The most specific registered class wins.
    Registering the same type again with the same mapping is allowed.

    Raises:
        ValueError: bad status or slug, or the type is already mapped differently.
    """
    _check_status(status)
    problem_type(slug)
    mapping = ErrorMapping(status=status, slug=slug, title=title)
    existing = _ERROR_MAPPINGS.get(exc_type)
    if existing is not None and existing != mapping:
        raise ValueError(f"{exc_type.__qualname__} is already mapped to {existing}")
    _ERROR_MAPPINGS[exc_type] = mapping


def error_mapping_for(exc: BaseException) -> ErrorMapping | None:
    """The mapping registered for ``exc``'s class or its nearest mapped base class."""
    for cls in type(exc).__mro__:
        mapping = _ERROR_MAPPINGS.get(cls)
        if mapping is not None:
            return mapping
    return None


class ProblemJSONResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


class Problem(BaseModel):
    """An RFC 9457 problem, as every error response of this API is shaped."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=[PROBLEM_TYPE_BASE + "not-found"])
    title: str = Field(examples=["Not Found"])
    status: int = Field(ge=400, le=599, examples=[404])
    detail: str | None = Field(default=None, examples=[_DEFAULT_DETAILS[404]])
    instance: str = Field(description="The request path.", examples=["/v1/ledger/accounts/42"])
    request_id: str = Field(description="Equal to the X-Request-ID response header.")


class ProblemFieldError(BaseModel):
    """One rejected part of a request."""

    field: str = Field(description="Location joined with '.'", examples=["body.amount_minor"])
    message: str
    type: str = Field(description="Machine-readable error type", examples=["int_parsing"])


class ValidationProblem(Problem):
    """A 422 problem: the request's parameters or body did not validate."""

    errors: list[ProblemFieldError]


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries documenting problem answers for a router or route."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        _check_status(status)
        model = ValidationProblem if status == 422 else Problem
        responses[status] = {"model": model, "description": _phrase(status)}
    return responses


def problem_response(
    request: Request,
    *,
    status: int,
    slug: str,
    title: str,
    detail: str | None = None,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> ProblemJSONResponse:
    """Build the problem response for ``request``; adds ``instance`` and ``request_id``."""
    _check_status(status)
    _check_extra(extra)
    request_id = request_id_of(request.scope)
    body: dict[str, Any] = {"type": problem_type(slug), "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body["instance"] = request.url.path
    body["request_id"] = request_id
    body.update(jsonable_encoder(dict(extra or {})))
    response_headers = {**(headers or {}), REQUEST_ID_HEADER: request_id}
    response_headers.setdefault("Cache-Control", "no-store")
    return ProblemJSONResponse(body, status_code=status, headers=response_headers)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:  # a status without a registered reason phrase
        return "Client Error" if status < 500 else "Server Error"


def _slug_for_status(status: int) -> str:
    return re.sub(r"[^a-z0-9]+", "-", _phrase(status).lower().replace("'", "")).strip("-")


def _problem_error_handler(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ProblemError):  # registered for that type only
        return unhandled_error_response(request, exc)
    return problem_response(
        request,
        status=exc.status,
        slug=exc.slug,
        title=exc.title,
        detail=exc.detail,
        extra=exc.extra,
        headers=exc.headers,
    )


def _http_exception_handler(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, StarletteHTTPException):  # registered for that type only
        return unhandled_error_response(request, exc)
    status = exc.status_code
    if status < 400:  # not an error: a redirect or "not modified" raised as an exception
        return Response(status_code=status, headers=exc.headers)
    phrase = _phrase(status)
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
    if detail is None and status == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        detail = f"This method is not allowed here; allowed methods: {allowed}."
    return problem_response(
        request,
        status=status,
        slug=_slug_for_status(status),
        title=phrase,
        detail=detail or _DEFAULT_DETAILS.get(status),
        headers=exc.headers,
    )


def _plain_message(message: str) -> str:
    """Drop pydantic's "Value error, " prefix: the message is ours and says it all."""
    return message.removeprefix("Value error, ")


def field_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    """Field, message and type of each validation error; never the rejected input."""
    listed = []
    for raw in errors[:VALIDATION_ERRORS_MAX]:
        error: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        listed.append(
            {
                "field": ".".join(str(part) for part in error.get("loc", ())),
                "message": _plain_message(str(error.get("msg", "invalid value"))),
                "type": str(error.get("type", "value_error")),
            }
        )
    return listed


def _validation_error_handler(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, RequestValidationError):  # registered for that type only
        return unhandled_error_response(request, exc)
    errors = exc.errors()
    shown = min(len(errors), VALIDATION_ERRORS_MAX)
    detail = f"{len(errors)} part(s) of the request are invalid; see errors."
    if shown < len(errors):
        detail += f" The first {shown} are listed."
    return problem_response(
        request,
        status=422,
        slug="invalid-request",
        title="Invalid request",
        detail=detail,
        extra={"errors": field_errors(errors)},
    )


def _mapped_error_response(request: Request, exc: Exception, mapping: ErrorMapping) -> Response:
    """``code``, and the error's own ``extra`` members and ``headers`` when it has them."""
    code = getattr(exc, "code", None)
    extra: dict[str, Any] = {}
    own_extra = getattr(exc, "extra", None)
    if isinstance(own_extra, Mapping):
        extra.update(own_extra)
    if isinstance(code, str):
        extra["code"] = code
    own_headers = getattr(exc, "headers", None)
    headers = (
        {str(k): str(v) for k, v in own_headers.items()}
        if isinstance(own_headers, Mapping)
        else None
    )
    return problem_response(
        request,
        status=mapping.status,
        slug=mapping.slug,
        title=mapping.title,
        detail=str(exc) or None,
        extra=extra or None,
        headers=headers,
    )


def _mapped_error_handler(request: Request, exc: Exception) -> Response:
    mapping = error_mapping_for(exc)
    if mapping is None:  # unreachable: only installed for mapped types
        return unhandled_error_response(request, exc)
    return _mapped_error_response(request, exc, mapping)


def unhandled_error_response(request: Request, exc: BaseException) -> Response:
    """The answer to an exception no handler took: mapped domain error, or a 500.

    A 500 is logged with the stack trace; the client learns only the request id.
    """
    if isinstance(exc, Exception):
        mapping = error_mapping_for(exc)
        if mapping is not None:
            return _mapped_error_response(request, exc, mapping)
    _log.error(
        "unhandled_exception",
        method=request.method,
        route=route_template(request.scope),
        exc_info=exc,
    )
    return problem_response(
        request,
        status=500,
        slug="internal-error",
        title="Internal Server Error",
        detail=INTERNAL_ERROR_DETAIL,
    )


def _unhandled_exception_handler(request: Request, exc: Exception) -> Response:
    return unhandled_error_response(request, exc)


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error of ``app`` a problem response.

    Domain error mappings registered later are still honoured: the request
    middleware and the catch-all handler consult the registry at run time.
    """
    handlers: list[tuple[type[Exception], Callable[[Request, Exception], Response]]] = [
        (ProblemError, _problem_error_handler),
        (StarletteHTTPException, _http_exception_handler),
        (RequestValidationError, _validation_error_handler),
        (Exception, _unhandled_exception_handler),
    ]
    handlers.extend((exc_type, _mapped_error_handler) for exc_type in _ERROR_MAPPINGS)
    for exc_type, handler in handlers:
        app.add_exception_handler(exc_type, handler)


_PROBLEM_SCHEMA_NAMES: Final = frozenset({"Problem", "ValidationProblem"})
_REF_PREFIX: Final = "#/components/schemas/"


def problem_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Make an OpenAPI document say what the handlers above really send.

    FastAPI documents declared problem models as ``application/json`` and
    validation errors in its own shape; this moves problems to
    ``application/problem+json`` and documents 422s as :class:`ValidationProblem`.
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (Problem, ProblemFieldError, ValidationProblem):
        components.setdefault(
            model.__name__, model.model_json_schema(ref_template=_REF_PREFIX + "{model}")
        )
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if isinstance(operation, dict):
                _rewrite_responses(operation.get("responses", {}))
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused in components and not _references(schema, _REF_PREFIX + unused):
            del components[unused]
    return schema


def _rewrite_responses(responses: dict[str, Any]) -> None:
    for status, response in responses.items():
        content = response.get("content", {})
        json_content = content.get("application/json")
        ref = json_content.get("schema", {}).get("$ref", "") if json_content else ""
        if status == "422" and ref.endswith("/HTTPValidationError"):
            response["description"] = "Invalid request"
            json_content = {"schema": {"$ref": _REF_PREFIX + "ValidationProblem"}}
        elif ref.removeprefix(_REF_PREFIX) not in _PROBLEM_SCHEMA_NAMES:
            continue
        del content["application/json"]
        content[PROBLEM_MEDIA_TYPE] = json_content


def _references(node: Any, ref: str) -> bool:
    if isinstance(node, dict):
        return node.get("$ref") == ref or any(_references(v, ref) for v in node.values())
    if isinstance(node, list):
        return any(_references(item, ref) for item in node)
    return False
