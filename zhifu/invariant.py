"""Invariant checks that survive ``python -O``.

A broken invariant is a bug in this code, not bad input: callers get a typed
error for bad input and never see ``InvariantError``. Plain ``assert`` is not
used for these checks because the interpreter removes it under ``-O``.
"""

from __future__ import annotations


class InvariantError(AssertionError):
    """Raised when a condition that the code guarantees turns out false."""


def invariant(condition: bool, message: str) -> None:
    """Raise ``InvariantError(message)`` when ``condition`` is false."""
    if not condition:
        raise InvariantError(message)
