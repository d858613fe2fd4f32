"""Operations endpoints: liveness, readiness and Prometheus metrics.

``/healthz`` answers as long as the process can serve HTTP; it checks nothing
else, so that an orchestrator restarts the process only when the process
itself is broken. ``/readyz`` checks the dependencies a request needs (the
database) and answers 503 while one fails, so that a load balancer stops
sending traffic without restarting anything.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final, Literal

import anyio
import anyio.to_thread
from fastapi import APIRouter, Response
from pydantic import BaseModel

from zhifu.api.deps import RuntimeDep
from zhifu.api.problems import ProblemError, problem_responses
from zhifu.ops.logging import get_logger
from zhifu.ops.metrics import render_metrics
from zhifu.store.engine import ping

READY_CHECK_TIMEOUT_S: Final = 2.0
# Blocking checks that may run at once. A hung database would otherwise leave
# one more stuck thread behind with every probe, until the thread pool that
# serves requests is exhausted.
READY_CHECKS_IN_FLIGHT_MAX: Final = 2
READY_RETRY_AFTER_S: Final = 5

router = APIRouter(tags=["operations"])
_log = get_logger("zhifu.api.health")
_check_slots = threading.BoundedSemaphore(READY_CHECKS_IN_FLIGHT_MAX)


class ChecksBusyError(RuntimeError):
    """Earlier checks are still running, all slots are taken."""


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    checks: dict[str, Literal["ok"]]


@router.get("/healthz", summary="Liveness: the process is serving HTTP")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    summary="Readiness: the process and the database can serve requests",
    responses=problem_responses(503),
)
async def readyz(runtime: RuntimeDep) -> Readiness:
    """503 names the failing check in `checks` and in `detail`."""
    try:
        await run_blocking_check(lambda: ping(runtime.engine))
    except Exception as exc:
        reason = _failure_reason(exc)
        _log.warning("readiness_check_failed", check="database", reason=reason, error=repr(exc))
        raise ProblemError(
            503,
            "not-ready",
            "Service not ready",
            f"readiness check failed: database ({reason})",
            extra={"checks": {"database": "failed"}},
            headers={"Retry-After": str(READY_RETRY_AFTER_S)},
        ) from exc
    return Readiness(status="ready", checks={"database": "ok"})


def _failure_reason(exc: Exception) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {READY_CHECK_TIMEOUT_S:g} s"
    if isinstance(exc, ChecksBusyError):
        return "earlier checks are still waiting for an answer"
    # Not the driver's message: it can name hosts and users.
    return "unavailable"


async def run_blocking_check(check: Callable[[], None]) -> None:
    """Run ``check`` in a worker thread, bounded in time and in threads held.

    Raises:
        TimeoutError: no answer within ``READY_CHECK_TIMEOUT_S``; the thread is
            abandoned and keeps its slot until the check returns.
        ChecksBusyError: ``READY_CHECKS_IN_FLIGHT_MAX`` checks are still running.
        Whatever ``check`` raises.
    """
    slots = _check_slots  # release the very semaphore acquired, even if it is replaced
    if not slots.acquire(blocking=False):
        raise ChecksBusyError
    lock = threading.Lock()
    state = "pending"  # -> "running" (by the thread) or "abandoned" (by us)

    def run() -> None:
        nonlocal state
        with lock:
            if state == "abandoned":
                return
            state = "running"
        try:
            check()
        finally:
            slots.release()

    try:
        with anyio.fail_after(READY_CHECK_TIMEOUT_S):
            await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
    finally:
        with lock:
            if state == "pending":  # the thread never started: free its slot here
                state = "abandoned"
                slots.release()


@router.get(
    "/metrics",
    summary="Prometheus metrics in the text exposition format",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def metrics() -> Response:
    body, content_type = render_metrics()
    return Response(content=body, headers={"Content-Type": content_type})
