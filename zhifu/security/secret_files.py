"""Files that hold secrets (keys, tokens): created once, complete, private.

A new file is written to a temporary name with mode 0o600 (whatever the
umask), flushed to disk, then given its name with ``os.link``, which fails
rather than replace a file another process created meanwhile: every process
then reads the one file that won, so two processes never hold different keys.
Parent directories are created with mode 0o700.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

SECRET_FILE_MODE = 0o600
SECRET_DIR_MODE = 0o700


class SecretFileTooLargeError(ValueError):
    """The file is larger than the caller allows (it cannot be what it should hold)."""


def read_secret_file(path: Path, bytes_max: int) -> bytes:
    """The file's bytes. Raises FileNotFoundError, SecretFileTooLargeError."""
    with path.open("rb") as handle:
        raw = handle.read(bytes_max + 1)
    if len(raw) > bytes_max:
        raise SecretFileTooLargeError(f"{path} is larger than {bytes_max} bytes")
    return raw


def create_secret_file(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists; True if this call made it."""
    path.parent.mkdir(mode=SECRET_DIR_MODE, parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    created = False
    try:
        with os.fdopen(fd, "wb") as tmp_file:
            os.fchmod(tmp_file.fileno(), SECRET_FILE_MODE)
            tmp_file.write(data)
            tmp_file.flush()
            os.fsync(tmp_file.fileno())
        try:
            os.link(tmp_name, path)
            created = True
        except FileExistsError:
            pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
    _fsync_directory(path.parent)
    return created


def _fsync_directory(directory: Path) -> None:
    """Make the new name durable; some platforms cannot open a directory, which is fine."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
