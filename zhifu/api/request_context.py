"""What the middleware learns about a request and the error handlers reuse.

The request id is stored in the ASGI scope's ``state`` (readable as
``request.state.request_id``) and bound into structlog's context variables.
"""

from __future__ import annotations

import re
from typing import Any, Final

import structlog
from starlette.types import Scope

from zhifu.ids import uuid7
from zhifu.ops.metrics import UNMATCHED_ROUTE

REQUEST_ID_HEADER: Final = "X-Request-ID"
REQUEST_ID_LENGTH_MAX: Final = 64
REQUEST_ID_STATE_KEY: Final = "request_id"
# Request ids end up in logs and response headers: only characters that need
# no escaping in either place.
_REQUEST_ID_PATTERN: Final = re.compile(rf"[A-Za-z0-9._-]{{1,{REQUEST_ID_LENGTH_MAX}}}")


def new_request_id() -> str:
    """A fresh request id: a UUIDv7 as 32 hex digits, so ids sort by time."""
    return uuid7().hex


def is_valid_request_id(value: str) -> bool:
    """Whether a client-supplied id is 1 to 64 characters of ``[A-Za-z0-9._-]``."""
    return _REQUEST_ID_PATTERN.fullmatch(value) is not None


def request_id_from_headers(raw_headers: list[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-ID`` if well formed, otherwise a new id."""
    wanted = REQUEST_ID_HEADER.lower().encode("latin-1")
    for name, value in raw_headers:
        if name.lower() == wanted:
            candidate = value.decode("latin-1")
            return candidate if is_valid_request_id(candidate) else new_request_id()
    return new_request_id()


def request_id_of(scope: Scope) -> str:
    """The id the middleware gave this request (a new one if it never ran)."""
    state: Any = scope.get("state")
    if isinstance(state, dict):
        found = state.get(REQUEST_ID_STATE_KEY)
        if isinstance(found, str):
            return found
    bound = structlog.contextvars.get_contextvars().get(REQUEST_ID_STATE_KEY)
    if isinstance(bound, str):
        return bound
    return new_request_id()


def route_template(scope: Scope) -> str:
    """The template of the route that handled the request, or ``unmatched``.

    Starlette's router stores the matched route in the scope (also for a
    method that is not allowed: the route matched the path). Never the raw
    path: label values must come from a bounded set. Inside a mounted
    sub-application the template is relative to the mount point.
    """
    template = getattr(scope.get("route"), "path_format", None)
    if isinstance(template, str):
        return template
    # FastAPI's router records only its API routes in the scope; a plain route
    # (the OpenAPI document) leaves just its endpoint behind.
    endpoint = scope.get("endpoint")
    if endpoint is not None:
        for route in getattr(scope.get("router"), "routes", ()):
            template = getattr(route, "path_format", None)
            if getattr(route, "endpoint", None) is endpoint and isinstance(template, str):
                return template
    return UNMATCHED_ROUTE
