"""Structured logging for the whole process.

:func:`configure_logging` sets up structlog and the standard library's
``logging`` (which uvicorn, SQLAlchemy and alembic use) so that both go through
one handler and one renderer: JSON lines on stderr in production, readable
console lines in development. Every line carries an ISO 8601 UTC timestamp, the
level, the logger name and any context bound with
``structlog.contextvars.bind_contextvars`` (the HTTP middleware binds
``request_id``).

Secrets: :func:`redact_secrets` runs on every event, structlog's and the
standard library's alike, and replaces the value of any key that looks secret
(see :data:`SECRET_KEY_PARTS`), at any depth of nested dicts and lists. It
cannot see a secret formatted into the message text, so log data as key-value
pairs, never as part of the message.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, Final, TextIO

import structlog
from structlog.typing import EventDict, Processor

REDACTED: Final = "[REDACTED]"
TOO_DEEP: Final = "[TOO DEEP]"
# Containers nested deeper than this are replaced instead of walked: a limit on
# the work one log call can cause, and no chance of an unredacted deep secret.
REDACT_DEPTH_MAX: Final = 8
LOG_FORMATS: Final = ("json", "console")
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")

# A key is secret when, lower-cased and with '_', '-' and spaces removed, it
# contains one of these (also with the separators removed, so "apiKey",
# "api-key" and "API_KEY" all match "api_key"). Substring matching over-redacts
# some harmless keys ("company" contains "pan"); that is the safe direction.
SECRET_KEY_PARTS: Final = (
    "password",
    "passcode",
    "secret",
    "token",
    "authorization",
    "cookie",
    "api_key",
    "private_key",
    "seed",
    "otp",
    "pin",
    "pan",
    "card_number",
)
# Keys that every line carries and that must stay readable.
_NEVER_REDACTED: Final = frozenset({"event", "timestamp", "level", "logger"})
_SEPARATORS: Final = str.maketrans("", "", "_- ")
_SECRET_PARTS_NORMALISED: Final = tuple(part.translate(_SEPARATORS) for part in SECRET_KEY_PARTS)

# Record attributes that ExtraAdder would copy but that repeat the message.
_STDLIB_DUPLICATE_KEYS: Final = ("message", "color_message")
# Libraries that log URLs with their query strings at INFO, where secrets may
# ride (uvicorn's access log; httpx for outgoing calls): WARNING and above only.
_URL_LOGGING_LOGGERS: Final = ("uvicorn.access", "httpx", "httpcore")

# Marks the handler this module installs, so that reconfiguring replaces only it
# and leaves handlers that others added to the root logger (pytest's) alone.
_HANDLER_MARK: Final = "_zhifu_log_handler"


def is_secret_key(key: object) -> bool:
    """Whether a value stored under ``key`` must never be written to a log."""
    if not isinstance(key, str):
        return False
    normalised = key.lower().translate(_SEPARATORS)
    return any(part in normalised for part in _SECRET_PARTS_NORMALISED)


def _redact_value(value: Any, depth: int) -> Any:
    if isinstance(value, Mapping):
        if depth >= REDACT_DEPTH_MAX:
            return TOO_DEEP
        return {
            key: REDACTED if is_secret_key(key) else _redact_value(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        if depth >= REDACT_DEPTH_MAX:
            return TOO_DEEP
        return [_redact_value(item, depth + 1) for item in value]
    return value


def redact_secrets(_logger: Any, _method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: replace the values of secret-looking keys with ``[REDACTED]``."""
    for key in list(event_dict):
        if key in _NEVER_REDACTED or key.startswith("_"):
            continue
        if is_secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact_value(event_dict[key], 1)
    return event_dict


def _drop_stdlib_duplicates(_logger: Any, _method_name: str, event_dict: EventDict) -> EventDict:
    """Drop record attributes that only repeat the message (uvicorn adds ``color_message``)."""
    for key in _STDLIB_DUPLICATE_KEYS:
        event_dict.pop(key, None)
    return event_dict


def _shared_processors() -> list[Processor]:
    """Run on every event before rendering, whether from structlog or stdlib."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]


def _renderer(fmt: str, stream: TextIO) -> list[Processor]:
    if fmt == "json":
        # Plain-text tracebacks: structlog's dict tracebacks can include local
        # variables, which may hold secrets that redaction cannot see.
        return [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    return [structlog.dev.ConsoleRenderer(colors=stream.isatty())]


def configure_logging(
    level: str = "INFO", fmt: str = "json", *, stream: TextIO | None = None
) -> None:
    """Send structlog and stdlib logging through one redacting renderer.

    ``level`` is one of :data:`LOG_LEVELS`; ``fmt`` is ``"json"`` (one JSON
    object per line) or ``"console"``. ``stream`` defaults to stderr. Calling
    it again replaces the previous configuration.

    Raises:
        ValueError: ``level`` or ``fmt`` is not one of the allowed values.
    """
    level = level.upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    stream = sys.stderr if stream is None else stream

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.ExtraAdder(),
            _drop_stdlib_duplicates,
            *_shared_processors(),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_renderer(fmt, stream),
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    _route_library_loggers()

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a logger first used before configure_logging ran (in a
        # test, say) would otherwise keep the defaults for ever.
        cache_logger_on_first_use=False,
    )


def _route_library_loggers() -> None:
    """Make uvicorn log through the root handler; quieten loggers that log URLs.

    uvicorn's access lines carry the query string, which may hold secrets; the
    HTTP middleware writes its own access line instead (``zhifu.access``).
    """
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    for name in _URL_LOGGING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger that writes through the standard library logger ``name``."""
    return structlog.stdlib.get_logger(name)
