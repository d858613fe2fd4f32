"""Per-request context: request id, access log line and HTTP metrics.

A pure ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``: it adds
no task or stream per request and does not buffer or wrap the response body.

It is also the error boundary: an exception that escapes every handler is
answered here with a problem response (a mapped domain error or a 500), so
that the response still carries the request id and is counted with its real
status, and the exception is logged once instead of again by the server.
"""

from __future__ import annotations

import time
from typing import Final

import structlog
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zhifu.api.problems import unhandled_error_response
from zhifu.api.request_context import (
    REQUEST_ID_HEADER,
    REQUEST_ID_STATE_KEY,
    request_id_from_headers,
    route_template,
)
from zhifu.ops.logging import get_logger
from zhifu.ops.metrics import observe_http_request

# Methods outside this set share one label value, so clients cannot create series.
KNOWN_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
OTHER_METHOD: Final = "OTHER"
# Recorded when the request ended (client gone, task cancelled) before any
# response started; nginx's "client closed request".
NO_RESPONSE_STATUS: Final = 499

_access_log = get_logger("zhifu.access")


class RequestContextMiddleware:
    """Give each HTTP request an id, log one access line and record its metrics.

    The access line holds method, route template, status, duration and request
    id only: never the path's query string, headers or bodies, which may carry
    secrets.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from_headers(scope["headers"])
        scope.setdefault("state", {})[REQUEST_ID_STATE_KEY] = request_id
        started_s = time.perf_counter()
        status: int | None = None

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_request_id)
            except Exception as exc:
                if status is not None:  # too late for an error response
                    raise
                response = unhandled_error_response(Request(scope), exc)
                await response(scope, receive, send_with_request_id)
            finally:
                self._record(scope, status, time.perf_counter() - started_s)

    @staticmethod
    def _record(scope: Scope, status: int | None, duration_s: float) -> None:
        method = scope["method"] if scope["method"] in KNOWN_METHODS else OTHER_METHOD
        route = route_template(scope)
        status_code = NO_RESPONSE_STATUS if status is None else status
        observe_http_request(method, route, status_code, duration_s)
        _access_log.info(
            "http_request",
            method=method,
            route=route,
            status=status_code,
            duration_ms=round(duration_s * 1000, 3),
        )
