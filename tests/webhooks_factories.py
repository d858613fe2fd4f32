"""Test-data factories of the webhooks context: partner keys, the service and its
dispatcher on a test engine with a fake clock, and a real HTTP receiver.

:class:`Receiver` is a real ``http.server`` on a free local port, in a thread.
It checks every webhook it gets with :func:`zhifu.webhooks.signature.verify_webhook`
(the recipe recipients follow, against its own clock), records what it got,
and answers from a script of status codes (then 200). Imported directly by the
tests (``from webhooks_factories import ...``).
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from random import Random
from typing import Any

from identity_factories import FakeClock
from sqlalchemy import Engine

from zhifu.identity.partners import PartnerService
from zhifu.ops.audit import AuditContext, system_context
from zhifu.ops.outbox import OutboxDispatcher
from zhifu.security.envelope import KeyRing
from zhifu.webhooks.errors import WebhookSignatureError
from zhifu.webhooks.service import WEBHOOK_TOPIC, NewSubscription, WebhookService
from zhifu.webhooks.signature import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    ID_HEADER,
    verify_webhook,
)
from zhifu.webhooks.transport import HttpxTransport, WebhookTransport

US = 1_000_000
_partners = itertools.count(1)


def partner_ctx(key_id: str) -> AuditContext:
    """The audit context of a signed request of ``key_id``."""
    return AuditContext(actor=f"partner:{key_id}", role="partner", source="203.0.113.9")


def new_partner_key(engine: Engine, keyring: KeyRing, clock: FakeClock) -> str:
    """A fresh hmac partner key's id."""
    issued = PartnerService(engine, keyring, clock).create_key(
        f"Webhook Shop {next(_partners)}", "hmac-sha256", ["merchant"], system_context()
    )
    return issued.key.key_id


def revoke_partner_key(engine: Engine, keyring: KeyRing, clock: FakeClock, key_id: str) -> None:
    PartnerService(engine, keyring, clock).revoke_key(key_id, system_context())


def webhook_service(
    engine: Engine,
    keyring: KeyRing,
    clock: FakeClock,
    transport: WebhookTransport | None = None,
    *,
    timeout_s: float = 5.0,
) -> WebhookService:
    return WebhookService(
        engine, keyring, transport or HttpxTransport(), clock, True, timeout_s=timeout_s
    )


def dispatcher(service: WebhookService, clock: FakeClock, **kwargs: Any) -> OutboxDispatcher:
    return OutboxDispatcher(
        service.engine,
        {WEBHOOK_TOPIC: service.topic_handler()},
        clock=clock,
        rng=Random(5),
        **kwargs,
    )


def secret_of(new: NewSubscription) -> bytes:
    return base64.b64decode(new.secret)


# --- a real receiver ------------------------------------------------------------------------


@dataclass
class Received:
    """One webhook as the receiver got it."""

    headers: dict[str, str]
    body: bytes
    verified: bool
    reason: str | None
    path: str

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    @property
    def event_id(self) -> str:
        return self.headers[ID_HEADER]

    @property
    def delivery_id(self) -> str:
        return self.headers[DELIVERY_HEADER]

    @property
    def event_type(self) -> str:
        return self.headers[EVENT_HEADER]


@dataclass
class Receiver:
    """A recipient's endpoint: verifies, records, answers from ``script``."""

    now_s: Callable[[], int]
    secret: bytes | None = None
    script: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def answer_with(self, *statuses: int) -> None:
        with self._lock:
            self.script.extend(statuses)

    def _take(self, request: BaseHTTPRequestHandler, body: bytes) -> int:
        headers = dict(request.headers.items())
        reason = None
        if self.secret is not None:
            try:
                verify_webhook(self.secret, request.headers, body, self.now_s())
            except WebhookSignatureError as exc:
                reason = exc.reason
        with self._lock:
            self.received.append(
                Received(
                    headers, body, self.secret is not None and reason is None, reason, request.path
                )
            )
            status = self.script.pop(0) if self.script else 200
        if reason is not None:
            return 400  # what the recipe says: refuse, do not act on it
        return status

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"{len(self.received)} webhooks received, {count} expected")


@contextmanager
def running_receiver(receiver: Receiver) -> Iterator[Receiver]:
    """Serve ``receiver`` on a free port of 127.0.0.1 until the block ends."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if receiver.delay_s:
                time.sleep(receiver.delay_s)
            status = receiver._take(self, body)
            answer = json.dumps({"received": status < 300}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            if 300 <= status <= 399:
                self.send_header("Location", receiver.url + "/moved")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
