"""Errors of the identity context.

Every error carries a short machine-readable ``code`` (the API adds it to the
problem response) and a message written for the person who typed the input:
what was wrong and what is allowed. No message repeats a password, and none
repeats more of a resident ID than :func:`zhifu.identity.model.mask_resident_id`
shows.
"""

from __future__ import annotations

from enum import StrEnum


class IdentityError(Exception):
    """Root of the identity context's expected failures."""

    code: str = "identity_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class ResidentIdRule(StrEnum):
    """The rule of GB 11643-1999 that a resident ID number broke, in checking order."""

    LENGTH = "length"
    CHARACTERS = "characters"
    REGION = "region"
    BIRTH_DATE = "birth_date"
    CHECK_CHARACTER = "check_character"


class InvalidResidentIdError(IdentityError):
    """A resident identity card number breaks a rule; ``rule`` says which one."""

    def __init__(self, message: str, rule: ResidentIdRule) -> None:
        super().__init__(message, f"resident_id_{rule.value}")
        self.rule = rule


class InvalidMobileError(IdentityError):
    """A mobile number is neither a mainland China mobile nor an E.164 number."""

    code = "invalid_mobile"


class InvalidEmailError(IdentityError):
    """An e-mail address is malformed or over a length limit."""

    code = "invalid_email"


class InvalidNameError(IdentityError):
    """A person's name is empty, too long, or holds characters a name cannot have."""

    code = "invalid_name"


class PasswordRejection(StrEnum):
    """Why the password policy rejected a new password."""

    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    BLOCKLISTED = "blocklisted"
    CONTAINS_PERSONAL_DATA = "contains_personal_data"
    REPETITIVE = "repetitive"


class WeakPasswordError(IdentityError):
    """A new password breaks the password policy; ``reason`` says which rule."""

    def __init__(self, message: str, reason: PasswordRejection) -> None:
        super().__init__(message, f"password_{reason.value}")
        self.reason = reason
