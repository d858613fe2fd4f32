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


class InvalidUsernameError(IdentityError):
    """A staff username breaks the username rule."""

    code = "invalid_username"


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


class AuthenticationError(IdentityError):
    """A sign-in failed. One message for every reason (unknown account, wrong
    password, wrong code, disabled account), so the answer reveals nothing."""

    code = "invalid_credentials"

    def __init__(self, message: str = "the sign-in details are not correct") -> None:
        super().__init__(message)


class ThrottledError(IdentityError):
    """Too many failed attempts: try again after ``retry_after_s`` seconds."""

    code = "too_many_attempts"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            f"too many failed attempts; try again in {retry_after_s} seconds"
            " (your account is not locked)"
        )
        self.retry_after_s = retry_after_s
        self.headers = {"Retry-After": str(retry_after_s)}


class SessionError(IdentityError):
    """The session token is missing, unknown, expired or revoked."""

    code = "session_invalid"


class NotFoundError(IdentityError):
    """No such record, or not one the caller may see (the two look the same)."""

    code = "not_found"


class AlreadyExistsError(IdentityError):
    """A record with these unique details exists already."""

    code = "already_exists"


class PermissionDeniedError(IdentityError):
    """The caller is authenticated but lacks the permission the action needs."""

    code = "forbidden"


class StepUpRequiredError(IdentityError):
    """The operation needs a fresh factor first; ``extra`` says which ones and,
    for a QR confirmation, carries the challenge to show."""

    code = "step_up_required"

    def __init__(self, message: str, extra: dict[str, object]) -> None:
        super().__init__(message)
        self.extra = extra


class ChallengeError(IdentityError):
    """A one-time challenge is unknown, expired, already used, or bound to
    another operation."""

    code = "challenge_invalid"


class InvalidCodeError(IdentityError):
    """A one-time code (TOTP or recovery code) is wrong or was used already."""

    code = "code_invalid"


class StateError(IdentityError):
    """The record is not in a state that allows the action (e.g. an approval
    already decided, TOTP already enrolled)."""

    code = "invalid_state"


class FourEyesError(IdentityError):
    """The person who proposed a change tried to approve it too."""

    code = "four_eyes"


class InvalidInputError(IdentityError):
    """Input that no other error describes (an unknown role, a bad key)."""

    code = "invalid_input"
