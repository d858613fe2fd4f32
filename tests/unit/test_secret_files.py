"""Secret files: private, complete when they appear, never replaced."""

from __future__ import annotations

import os
import stat

import pytest

from zhifu.security.secret_files import (
    SecretFileTooLargeError,
    create_secret_file,
    read_secret_file,
)


def test_a_new_file_is_private_and_complete(tmp_path):
    path = tmp_path / "keys" / "secret"
    assert create_secret_file(path, b"first\n")
    assert read_secret_file(path, 64) == b"first\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["secret"]  # no temporary left


def test_an_existing_file_is_never_replaced(tmp_path):
    path = tmp_path / "secret"
    assert create_secret_file(path, b"first\n")
    assert not create_secret_file(path, b"second\n")
    assert read_secret_file(path, 64) == b"first\n"


def test_reading_at_the_limit_and_one_past(tmp_path):
    path = tmp_path / "secret"
    create_secret_file(path, b"x" * 16)
    assert read_secret_file(path, 16) == b"x" * 16
    with pytest.raises(SecretFileTooLargeError):
        read_secret_file(path, 15)


def test_the_umask_does_not_loosen_the_mode(tmp_path):
    previous = os.umask(0)
    try:
        path = tmp_path / "secret"
        create_secret_file(path, b"s")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
