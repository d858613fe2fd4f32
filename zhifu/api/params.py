"""Request parts that several routers share: the Idempotency-Key and
confirmation headers, and the rule that money travels as decimal strings."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Final

from fastapi import Header

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
CONFIRMATION_HEADER: Final = "X-Zhifu-Confirmation"

ConfirmationId = Annotated[
    uuid.UUID | None,
    Header(
        alias=CONFIRMATION_HEADER,
        description="The id of a QR confirmation the customer's bound phone approved for"
        " exactly this operation (see step-up-required problems).",
    ),
]
OptionalIdempotencyKey = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_HEADER,
        description="Optional: the same key again answers what the first call made.",
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_HEADER,
        description="Required: 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-', new for"
        " each operation and the same when retrying it (400 when missing or malformed).",
    ),
]


def money_text(value: Any) -> Any:
    """A pydantic ``before`` validator for amounts: decimal strings only."""
    if isinstance(value, int | float):  # bool is an int too
        raise ValueError(
            'amounts are decimal strings in major units, such as "12.34": numbers (floats'
            " above all) are not accepted for money"
        )
    return value
