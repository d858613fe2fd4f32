"""FastAPI dependencies shared by routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from zhifu.runtime import Runtime


def runtime_of(request: Request) -> Runtime:
    """The process's :class:`Runtime`, stored on the app by ``create_app``."""
    runtime = request.app.state.runtime
    if not isinstance(runtime, Runtime):
        raise TypeError("app.state.runtime must hold the Runtime: build the app with create_app")
    return runtime


# Dependencies that do no blocking work are ``async``: FastAPI runs a plain
# ``def`` dependency on a worker thread, a thread switch per dependency per request.
async def get_runtime(request: Request) -> Runtime:
    return runtime_of(request)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
