"""Security headers on every HTTP response.

Design note. The API serves personal and financial data to browsers (the web
bank, the staff console) as well as to services, so every response carries a
baseline of headers that tell a browser to be strict with it:

- ``X-Content-Type-Options: nosniff``: a JSON body is never sniffed into HTML
  or script.
- ``X-Frame-Options: DENY`` and CSP ``frame-ancestors 'none'``: no page of
  ours can be framed (clickjacking).
- ``Referrer-Policy: no-referrer``: URLs, which may carry ids, never leak to
  another site.
- ``Cross-Origin-Opener-Policy`` and ``Cross-Origin-Resource-Policy``
  ``same-origin``: other sites can neither script our windows nor embed our
  responses.
- ``Permissions-Policy`` (:data:`PERMISSIONS_POLICY`): no camera, microphone,
  geolocation or payment API. The web bank may need the camera to scan QR
  codes: then change that one constant to ``camera=(self)``.
- ``Content-Security-Policy`` (:data:`DEFAULT_CONTENT_SECURITY_POLICY`):
  nothing may load at all, which suits JSON, problems and metrics. A page
  that renders HTML sets its own policy (``/docs`` does), which is kept:
  a page without one cannot run anything, so a forgotten policy fails closed.
- ``Cache-Control: no-store`` under ``/v1/`` (:data:`NO_STORE_PATH_PREFIX`):
  no browser or proxy keeps personal or financial data.
- ``Strict-Transport-Security`` only on a request that arrived over https:
  sent over plain http it would be meaningless (browsers ignore it there).
  Behind a TLS-terminating proxy the scheme is https only when uvicorn trusts
  the proxy's ``X-Forwarded-Proto`` (``--forwarded-allow-ips``).

Every header is a default: a response that already set one keeps its own
value. A pure ASGI middleware (like :class:`RequestContextMiddleware`), so it
adds no task per request and never touches the body. It runs outside the
request-context middleware, so problem responses made there get the headers
too.
"""

from __future__ import annotations

from typing import Final

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Change here when a feature needs a browser capability, e.g. "camera=(self)"
# for QR scanning in the web bank.
PERMISSIONS_POLICY: Final = "camera=(), microphone=(), geolocation=(), payment=()"
DEFAULT_CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
)
HSTS_MAX_AGE_S: Final = 31_536_000  # one year
STRICT_TRANSPORT_SECURITY: Final = f"max-age={HSTS_MAX_AGE_S}; includeSubDomains"
NO_STORE_PATH_PREFIX: Final = "/v1/"

BASELINE_HEADERS: Final[tuple[tuple[str, str], ...]] = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Permissions-Policy", PERMISSIONS_POLICY),
    ("Content-Security-Policy", DEFAULT_CONTENT_SECURITY_POLICY),
)


def default_headers(scope: Scope) -> tuple[tuple[str, str], ...]:
    """The headers a response to the request in ``scope`` gets unless it set them."""
    headers = BASELINE_HEADERS
    if str(scope.get("path", "")).startswith(NO_STORE_PATH_PREFIX):
        headers += (("Cache-Control", "no-store"),)
    if scope.get("scheme") == "https":
        headers += (("Strict-Transport-Security", STRICT_TRANSPORT_SECURITY),)
    return headers


def add_missing_headers(message: Message, defaults: tuple[tuple[str, str], ...]) -> None:
    """Add each of ``defaults`` to a response-start ``message`` that lacks it."""
    message.setdefault("headers", [])
    headers = MutableHeaders(scope=message)
    for name, value in defaults:
        if name not in headers:  # case-insensitive
            headers.append(name, value)


class SecurityHeadersMiddleware:
    """Give every HTTP response the baseline security headers it did not set itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        defaults = default_headers(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                add_missing_headers(message, defaults)
            await send(message)

        await self.app(scope, receive, send_with_headers)
