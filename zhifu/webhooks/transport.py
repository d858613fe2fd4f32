"""The port to the outside: one HTTP POST of one webhook, and its two implementations.

:class:`WebhookTransport` is what the service needs: ``post`` sends the body
with the headers and returns the recipient's status code and the first bytes
of its answer, or raises :class:`TransportError` naming the class of the
network failure. It never follows a redirect (the target was checked when the
subscription was made; a redirect could point anywhere) and never takes longer
than ``timeout_s`` in all: connecting, sending, and reading the status line,
headers and up to ``RESPONSE_BYTES_READ_MAX`` bytes of the body.

- :class:`HttpxTransport`: the real one, over httpx. The deadline covers the
  whole attempt (``asyncio.wait_for`` around httpx's async client), so a
  recipient that trickles its answer a byte at a time cannot hold a
  dispatcher for longer. Honours ``HTTPS_PROXY``/``NO_PROXY`` (an egress
  proxy is how operators keep webhooks off the bank's own network).
- :class:`RecordingTransport`: a fake for tests and development: records
  every request and answers from a script.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol, runtime_checkable

import httpx

from zhifu.webhooks.model import RESPONSE_BYTES_READ_MAX

TIMEOUT_ERROR_CLASS: Final = "DeliveryTimeout"
USER_AGENT: Final = "zhifu-webhooks/1"


@dataclass(frozen=True, slots=True)
class TransportResponse:
    """The recipient's answer: its status code and at most ``RESPONSE_BYTES_READ_MAX``
    bytes of its body."""

    status_code: int
    body_start: bytes = b""


class TransportError(Exception):
    """The request got no HTTP answer. ``error_class`` names why, in a word
    (``ConnectError``, ``ReadTimeout``, ``DeliveryTimeout``, ...); the message
    holds no URL, header or body."""

    def __init__(self, error_class: str) -> None:
        super().__init__(f"no answer: {error_class}")
        self.error_class = error_class


@runtime_checkable
class WebhookTransport(Protocol):
    def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, timeout_s: float
    ) -> TransportResponse:
        """POST ``body``; the answer, or TransportError when there is none in time."""
        ...


class HttpxTransport:
    """The real transport (see the module's design note)."""

    def __init__(self) -> None:
        # One TLS context for every attempt: loading the CA bundle takes tens of
        # milliseconds, and each attempt has its own event loop and client.
        self._ssl_context: ssl.SSLContext = httpx.create_ssl_context()

    def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, timeout_s: float
    ) -> TransportResponse:
        try:
            return asyncio.run(
                asyncio.wait_for(self._post(url, headers, body, timeout_s), timeout_s)
            )
        except TimeoutError:
            raise TransportError(TIMEOUT_ERROR_CLASS) from None
        except httpx.HTTPError as exc:
            raise TransportError(type(exc).__name__) from None
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(type(exc).__name__) from None

    async def _post(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout_s: float
    ) -> TransportResponse:
        async with httpx.AsyncClient(
            timeout=timeout_s,
            follow_redirects=False,
            verify=self._ssl_context,
            headers={"User-Agent": USER_AGENT},
        ) as client:
            request = client.build_request("POST", url, content=body, headers=dict(headers))
            response = await client.send(request, stream=True)
            try:
                start = bytearray()
                async for chunk in response.aiter_bytes():
                    start += chunk
                    if len(start) >= RESPONSE_BYTES_READ_MAX:
                        break
            finally:
                await response.aclose()
            return TransportResponse(response.status_code, bytes(start[:RESPONSE_BYTES_READ_MAX]))


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    url: str
    headers: dict[str, str]
    body: bytes
    timeout_s: float


@dataclass
class RecordingTransport:
    """A fake: records requests; answers each with the next scripted item (a status
    code, a :class:`TransportResponse` or a :class:`TransportError` to raise), then
    with ``default_status`` once the script is used up."""

    script: list[int | TransportResponse | TransportError] = field(default_factory=list)
    default_status: int = 200
    requests: list[RecordedRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def answer_with(self, items: Iterable[int | TransportResponse | TransportError]) -> None:
        with self._lock:
            self.script.extend(items)

    def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, timeout_s: float
    ) -> TransportResponse:
        with self._lock:
            self.requests.append(RecordedRequest(url, dict(headers), body, timeout_s))
            item = self.script.pop(0) if self.script else self.default_status
        if isinstance(item, TransportError):
            raise item
        if isinstance(item, TransportResponse):
            return item
        return TransportResponse(item, b"")
