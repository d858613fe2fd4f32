"""Service-to-service authentication for internal APIs (the ledger's).

Internal callers present ``Authorization: Bearer <token>`` with the token of
:mod:`zhifu.security.service_token`. Comparison is constant-time.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header

from zhifu.api.deps import get_runtime
from zhifu.api.problems import ProblemError
from zhifu.runtime import Runtime


def _unauthorised(detail: str) -> ProblemError:
    return ProblemError(
        401, "unauthorised", "Unauthorised", detail, headers={"WWW-Authenticate": "Bearer"}
    )


async def require_service_token(
    runtime: Annotated[Runtime, Depends(get_runtime)],
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    """Dependency: the request carries the service token."""
    if not authorization:
        raise _unauthorised("this API needs 'Authorization: Bearer <service token>'")
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        raise _unauthorised("use the Bearer scheme: 'Authorization: Bearer <service token>'")
    expected = runtime.service_token
    if not hmac.compare_digest(presented.strip().encode(), expected.encode()):
        raise _unauthorised("the service token is not valid")
