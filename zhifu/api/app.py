"""The FastAPI application: wiring only, no business rules.

``create_app(runtime)`` builds the app around an existing :class:`Runtime`
(tests, embedding); ``create_app_from_env`` is the factory the server runs::

    uvicorn zhifu.api.app:create_app_from_env --factory

Order of the layers a request passes through, outermost first: Starlette's
server-error layer (last-resort 500 problem), :class:`SecurityHeadersMiddleware`
(nosniff, frame and referrer policies, CSP, no-store under /v1/, HSTS over
https), :class:`RequestContextMiddleware` (request id, access log, metrics,
error boundary), Starlette's ``CORSMiddleware`` only when ``ZHIFU_CORS_ORIGINS``
lists origins (so preflights get a request id and are logged too), the
exception handlers of :mod:`zhifu.api.problems`, then the routers added in
:func:`_include_routers`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.middleware.cors import CORSMiddleware

from zhifu import __version__
from zhifu.api.auth import AuditFallbackMiddleware
from zhifu.api.docs_page import CONTENT_SECURITY_POLICY, docs_html
from zhifu.api.middleware import RequestContextMiddleware
from zhifu.api.pagination import PAGINATION_HEADERS
from zhifu.api.problems import install_problem_handlers, problem_openapi
from zhifu.api.request_context import REQUEST_ID_HEADER
from zhifu.api.routers import (
    accounts,
    admin,
    health,
    history,
    identity,
    ledger,
    merchants,
    payees,
    payments,
    webhooks,
)
from zhifu.api.security_headers import SecurityHeadersMiddleware
from zhifu.config import load_settings
from zhifu.ops.logging import configure_logging, get_logger
from zhifu.ops.metrics import mark_process_dead
from zhifu.runtime import Runtime, build_runtime, tune_gc

API_TITLE: Final = "zhifu"
OPENAPI_URL: Final = "/openapi.json"
DOCS_URL: Final = "/docs"
WORKER_THREADS: Final = 16  # threads for blocking use cases; the SQLite pool holds 24
API_DESCRIPTION: Final = (
    "zhifu (智付), a bank's payment platform. Every error is an RFC 9457 problem "
    "(application/problem+json) with `instance` and `request_id`; every response "
    "carries the `X-Request-ID` header."
)
OPENAPI_TAGS: Final = [
    {
        "name": "operations",
        "description": "Liveness, readiness and Prometheus metrics for operators and probes.",
    },
    {
        "name": "ledger",
        "description": "The double-entry ledger: an internal API for the bank's own services,"
        " behind the service token.",
    },
    {
        "name": "identity",
        "description": "Registration, sign-in (password, TOTP, recovery codes, passkeys, QR"
        " confirmation on a bound phone), sessions, step-up and the caller's own credentials.",
    },
    {
        "name": "administration",
        "description": "Staff, roles through maker-checker approvals, customer administration"
        " and partner API keys. Each endpoint needs one named permission.",
    },
    {
        "name": "accounts",
        "description": "A customer's bank accounts (products, PBOC classes, balances, nicknames,"
        " defaults, freezing, closing) and debit cards (issue, freeze, report lost, reissue).",
    },
    {
        "name": "teller",
        "description": "Cash deposits and withdrawals at the counter, exactly once per"
        " Idempotency-Key. Each endpoint needs the permission cash.manage.",
    },
    {"name": "audit", "description": "The hash-chained audit trail, for auditors."},
    {"name": "partners", "description": "Endpoints for partners who sign their requests."},
    {
        "name": "webhooks",
        "description": "A partner's webhook subscriptions, their delivery log, replays and"
        " test events. Signed partner requests; how to check a webhook's signature is in"
        " docs/payments.md.",
    },
    {
        "name": "merchants",
        "description": "Merchants onboarded by their owners and approved by staff, their EMVCo"
        " QR codes (static and dynamic, as text, PNG or SVG), paying a scanned code, one-time"
        " payment codes charged by a point of sale, refunds, and the merchant's payments.",
    },
]
CORS_ALLOW_METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
CORS_ALLOW_HEADERS: Final = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "X-Request-ID",
    "X-Zhifu-Browser",
    "X-Zhifu-Confirmation",
)

_log = get_logger("zhifu.api")


def create_app(
    runtime: Runtime, *, owns_runtime: bool = False, background: bool | None = None
) -> FastAPI:
    """The HTTP application serving ``runtime``.

    With ``owns_runtime`` the app closes the runtime when the server shuts
    down; otherwise the caller keeps that duty (tests close their own).
    ``background`` (default: ``owns_runtime``) starts the ledger's upkeep
    worker (sealing, expiry) with the app.
    """
    app = FastAPI(
        title=API_TITLE,
        version=__version__,
        description=API_DESCRIPTION,
        openapi_url=OPENAPI_URL,
        openapi_tags=OPENAPI_TAGS,
        # FastAPI's own pages load Swagger UI / ReDoc from a CDN; ours is inline.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        lifespan=_lifespan,
    )
    app.state.runtime = runtime
    app.state.owns_runtime = owns_runtime
    app.state.background = owns_runtime if background is None else background
    install_problem_handlers(app)
    # add_middleware wraps what is there: the last one added runs outermost.
    app.add_middleware(AuditFallbackMiddleware)  # inside: it reads the request id
    if runtime.settings.cors_origins:  # closed unless origins are configured
        app.add_middleware(
            CORSMiddleware,
            allow_origins=runtime.settings.cors_origins,
            allow_credentials=False,
            allow_methods=CORS_ALLOW_METHODS,
            allow_headers=CORS_ALLOW_HEADERS,
            expose_headers=(REQUEST_ID_HEADER, *PAGINATION_HEADERS),
        )
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_api_route(DOCS_URL, _docs_page, include_in_schema=False, response_class=HTMLResponse)
    _include_routers(app)
    _document_problems(app)
    return app


def _include_routers(app: FastAPI) -> None:
    """Every context's router is included here, and only here.

    A request is matched against the routes in this order, one by one, so the
    busiest customer routes come first (no two routers' paths overlap).
    """
    app.include_router(payments.router)
    app.include_router(accounts.router)
    app.include_router(health.router)
    app.include_router(ledger.router)
    app.include_router(identity.router)
    app.include_router(admin.router)
    app.include_router(payees.router)
    app.include_router(history.router)
    app.include_router(merchants.router)
    app.include_router(webhooks.router)


def create_app_from_env() -> FastAPI:
    """The server's factory: settings from the environment, logging, runtime, app."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    tune_gc()
    runtime = build_runtime(settings)
    try:
        return create_app(runtime, owns_runtime=True)
    except BaseException:
        runtime.close()
        raise


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    _log.info("api_started", version=__version__)
    # Blocking use cases run on this many threads: beyond the database pool's
    # size they would only queue for a connection (or, past its overflow, open
    # and close connections on every request) and fight over the GIL.
    to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
    runtime = app.state.runtime
    runtime.service_token  # noqa: B018 - made now, so operators can read it before any call
    if app.state.background:
        runtime.ledger_worker.start()
        runtime.audit_checkpointer.start()
        runtime.identity_upkeep.start()
        runtime.webhook_dispatcher.start()
        runtime.schedule_runner.start()
    try:
        yield
    finally:
        if app.state.owns_runtime:
            app.state.runtime.close()
        mark_process_dead()
        _log.info("api_stopped")


async def _docs_page(request: Request) -> HTMLResponse:
    openapi_url = request.scope.get("root_path", "") + OPENAPI_URL
    return HTMLResponse(
        docs_html(API_TITLE, openapi_url),
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def _document_problems(app: FastAPI) -> None:
    """Serve the OpenAPI document with errors documented as problem+json."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problem_openapi(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
