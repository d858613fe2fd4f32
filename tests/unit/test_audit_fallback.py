"""The status the audit fallback records for a request whose handler raised.

An exception no handler took is answered outside the middleware (500, or the
status of its error mapping), so the middleware never sees the response; it
must still record that status, and keep 499 for a client that went away.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.types import Message

from zhifu.api.auth import AuditFallbackMiddleware
from zhifu.identity.errors import NotFoundError
from zhifu.ops.audit import AuditEvent


class _Trail:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def record_now(self, event: AuditEvent) -> None:
        self.events.append(event)


def _run(error: BaseException) -> AuditEvent:
    trail = _Trail()
    app = SimpleNamespace(state=SimpleNamespace(runtime=SimpleNamespace(audit=trail)))

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise error

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        raise AssertionError("the failing app sends nothing")

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/anything",
        "headers": [],
        "state": {},
        "client": ("127.0.0.1", 5000),
        "app": app,
    }
    with pytest.raises(type(error)):
        asyncio.run(AuditFallbackMiddleware(failing)(scope, receive, send))
    [event] = trail.events
    return event


def test_an_unhandled_error_is_recorded_as_the_500_it_is_answered_with() -> None:
    event = _run(RuntimeError("a bug"))
    assert (event.action, event.outcome) == ("http.request", "failed")
    assert event.details == {"method": "POST", "status": 500}


def test_a_mapped_error_answered_outside_is_recorded_with_its_status() -> None:
    event = _run(NotFoundError("no such thing"))
    assert event.outcome == "denied"
    assert event.details == {"method": "POST", "status": 404}


def test_a_request_cancelled_before_any_answer_is_recorded_as_499() -> None:
    event = _run(asyncio.CancelledError())
    assert event.outcome == "failed"
    assert event.details == {"method": "POST", "status": 499}
