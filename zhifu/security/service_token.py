"""The service token that internal callers present to internal APIs.

It comes from ``ZHIFU_API_TOKEN``; when that is unset, a random 256-bit token
is made once and kept in ``$ZHIFU_HOME/api-token`` (mode 0600), so an internal
API is never open by default.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from zhifu.config import Settings

TOKEN_FILE_NAME = "api-token"  # noqa: S105 - a file name, not a secret
TOKEN_BYTES = 32


def load_service_token(settings: Settings) -> str:
    """The configured token, or the one kept in the home directory (made on first use)."""
    if settings.api_token:
        return settings.api_token
    path = settings.home / TOKEN_FILE_NAME
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(token + "\n")
    try:
        os.link(temporary, path)  # fails if another process made one first
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)
    return Path(path).read_text(encoding="ascii").strip()
