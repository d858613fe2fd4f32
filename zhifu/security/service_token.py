"""The service token that internal callers present to internal APIs.

It comes from ``ZHIFU_API_TOKEN``; when that is unset, a random 256-bit token
is made once and kept in ``$ZHIFU_HOME/api-token`` (mode 0600), so an internal
API is never open by default.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from zhifu.config import Settings
from zhifu.security.secret_files import create_secret_file, read_secret_file

TOKEN_FILE_NAME = "api-token"  # noqa: S105 - a file name, not a secret
TOKEN_BYTES = 32
TOKEN_FILE_BYTES_MAX = 1024


def load_service_token(settings: Settings) -> str:
    """The configured token, or the one kept in the home directory (made on first use)."""
    if settings.api_token:
        return settings.api_token
    path = settings.home / TOKEN_FILE_NAME
    try:
        return _read(path)
    except FileNotFoundError:
        create_secret_file(path, (secrets.token_urlsafe(TOKEN_BYTES) + "\n").encode("ascii"))
        return _read(path)  # another process may have made it first: its token wins


def _read(path: Path) -> str:
    return read_secret_file(path, TOKEN_FILE_BYTES_MAX).decode("ascii").strip()
