"""structlog set-up: JSON lines in services, readable lines in a terminal; secrets scrubbed."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from shared.config import scrub_url

_SECRET_NAMES = re.compile(r"(password|secret|token|credential|api[_-]?key|auth)", re.IGNORECASE)
_URL_WITH_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/@:]*:[^\s/@]+@[^\s]+", re.IGNORECASE)


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return _URL_WITH_PASSWORD.sub(lambda match: scrub_url(match.group(0)), value)
    return value


def scrub_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Drop values of secret-looking keys and passwords inside URLs, whatever the caller passed."""
    for key in list(event_dict):
        if _SECRET_NAMES.search(key) and event_dict[key] is not None:
            event_dict[key] = "***"
        else:
            event_dict[key] = _scrub_value(event_dict[key])
    return event_dict


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    # Resolved at each use, so a redirected or replaced stderr (tests, CLI runners) is honoured.
    return structlog.PrintLogger(sys.stderr)


def configure_logging(log_format: str = "json", level: str = "INFO") -> None:
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        numeric_level = logging.INFO
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            scrub_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric_level, logging.WARNING), stream=sys.stderr)
    # Dask's own loggers announce every worker and connection at INFO.
    for noisy in ("distributed", "dask", "bokeh", "tornado"):
        logging.getLogger(noisy).setLevel(max(numeric_level, logging.WARNING))
