"""Errors of the ledger context. Per-transfer outcomes are result codes, not errors."""

from __future__ import annotations


class LedgerError(Exception):
    """Root of the ledger's expected failures."""


class AccountNotFoundError(LedgerError):
    """The account id names no account."""


class TransferNotFoundError(LedgerError):
    """The transfer id names no committed transfer."""


class AccountNotClosableError(LedgerError):
    """The account still has a balance or pending holds, or is already closed."""


class BatchTooLargeError(LedgerError):
    """A batch holds more events than ``BATCH_EVENTS_MAX``."""


class BatchEmptyError(LedgerError):
    """A batch holds no events."""


class InvalidCursorError(LedgerError):
    """A pagination cursor is malformed or belongs to another query."""


class JournalNotSealedError(LedgerError):
    """The transfer's batch has not been chained into a signed block yet."""
