"""structlog set-up: JSON lines in services, readable lines in a terminal; secrets scrubbed.

Every line goes through `scrub_secrets`, ours and the libraries' alike: the standard library's
loggers (botocore, aiobotocore, redis, datacube, ...) are routed through structlog's
`ProcessorFormatter` with the same processors. Scrubbing removes

- the value of any field whose name looks secret (`password`, `token`, `secret`, `auth`, ...),
  however deep in dicts, lists and tuples it sits;
- passwords in URLs (`redis://user:***@host`) and secret-looking query parameters
  (`?password=***`, `X-Amz-Signature=***`, `X-Amz-Security-Token=***`);
- `Authorization` headers and `name: value` / `name=value` pairs with secret-looking names in
  free text (a library's repr of its request headers, an exception message);
- the exact values of the secrets this process was given (environment variables with secret
  names, the Redis password file, and any passed to `configure_logging`), wherever they appear.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog

REDACTED = "***"
_SECRET_WORDS = (
    r"password|passwd|pwd|secret|token|credential|signature|api[_-]?key|access[_-]?key|"
    r"private[_-]?key|session[_-]?key|auth"
)
_SECRET_NAME = re.compile(rf"({_SECRET_WORDS})", re.IGNORECASE)
# scheme://user:password@host: whatever stands between the user's colon and the `@` (also
# characters a URL parser would take for a path, query or fragment, in a badly encoded password).
_URL_WITH_PASSWORD = re.compile(
    r"(?P<prefix>\b[a-z][a-z0-9+.-]*://[^\s/@:]*:)(?P<password>[^\s@]+)@", re.IGNORECASE
)
# name=value in query strings and forms, e.g. ?password=x&X-Amz-Signature=y
_SECRET_PARAMETER = re.compile(
    rf"(?P<name>[\w.-]*(?:{_SECRET_WORDS})[\w.-]*)=(?P<value>[^&\s'\",;)}}\]]+)", re.IGNORECASE
)
# 'Authorization': 'AWS4-HMAC-SHA256 Credential=..., Signature=...' and Authorization: Basic ...
_AUTHORIZATION = re.compile(
    r"(?P<name>\b(?:proxy-)?authorization['\"]?\s*[:=]\s*b?)(?P<quote>['\"]?)(?P<value>[^'\"\r\n]+)",
    re.IGNORECASE,
)
# 'password': 'x', "token": "y", secret: z
_SECRET_PAIR = re.compile(
    rf"(?P<name>['\"]?[\w-]*(?:{_SECRET_WORDS})[\w-]*['\"]?\s*:\s*b?)"
    r"(?P<quote>['\"]?)(?P<value>(?(quote)[^'\"]*|[^\s,;'\"}\]]+))",
    re.IGNORECASE,
)
# Shorter strings are too likely to occur by chance to be replaced wherever they appear.
_MIN_KNOWN_SECRET = 6
_MAX_DEPTH = 32
_SECRET_ENVIRONMENT = re.compile(
    r"(PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|API_?KEY|PRIVATE_?KEY|SESSION_?KEY)", re.IGNORECASE
)


class Scrubber:
    """Removes secrets from log event values (see the module docstring for what it finds)."""

    def __init__(self, known_secrets: Iterable[str] = ()) -> None:
        secrets = sorted(
            {secret for secret in known_secrets if secret and len(secret) >= _MIN_KNOWN_SECRET},
            key=len,
            reverse=True,
        )
        self._known = (
            re.compile("|".join(re.escape(secret) for secret in secrets)) if secrets else None
        )

    def text(self, value: str) -> str:
        if self._known is not None:
            value = self._known.sub(REDACTED, value)
        value = _URL_WITH_PASSWORD.sub(lambda m: f"{m.group('prefix')}{REDACTED}@", value)
        value = _AUTHORIZATION.sub(
            lambda m: f"{m.group('name')}{m.group('quote')}{REDACTED}", value
        )
        value = _SECRET_PARAMETER.sub(lambda m: f"{m.group('name')}={REDACTED}", value)
        return _SECRET_PAIR.sub(
            lambda m: (
                f"{m.group('name')}{m.group('quote')}{REDACTED}" if m.group("value") else m.group(0)
            ),
            value,
        )

    def value(self, value: Any, depth: int = 0) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value
        if depth > _MAX_DEPTH:
            return "<nested too deep to log>"
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes):
            return self.text(value.decode("utf-8", "replace"))
        if isinstance(value, Mapping):
            return {key: self.field(str(key), item, depth + 1) for key, item in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(item, depth + 1) for item in value]
        # Anything else is rendered with str() in the end: scrub what it would show.
        shown = str(value)
        scrubbed = self.text(shown)
        return value if scrubbed == shown else scrubbed

    def field(self, name: str, value: Any, depth: int = 0) -> Any:
        if _SECRET_NAME.search(name) and value is not None and value != "":
            return REDACTED
        return self.value(value, depth)

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            if key.startswith("_"):  # structlog's and ProcessorFormatter's own (e.g. _record)
                continue
            event_dict[key] = self.field(key, event_dict[key])
        return event_dict


def secrets_from_environment(environment: Mapping[str, str]) -> list[str]:
    """The secret values a process was given: variables with secret names, passwords in URLs,
    and the Redis password file's content."""
    found: list[str] = []
    for name, value in environment.items():
        if _SECRET_ENVIRONMENT.search(name) and not name.endswith("_FILE"):
            found.append(value)
        elif "://" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                found.append(password)
    password_file = environment.get("CONVEYOR_REDIS_PASSWORD_FILE")
    if password_file:
        try:
            found.append(Path(password_file).read_text(encoding="utf-8").rstrip("\r\n"))
        except OSError:
            pass
    return found


# What configure_logging installed, so that configuring again replaces rather than stacks.
_DEFAULT_SCRUBBER = Scrubber()


def scrub_secrets(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The processor with no known secret values (patterns only)."""
    return _DEFAULT_SCRUBBER(logger, method, event_dict)


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    # Resolved at each use, so a redirected or replaced stderr (tests, CLI runners) is honoured.
    return structlog.PrintLogger(sys.stderr)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes to whatever `sys.stderr` is at the time of each record."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        # Assigned, not setStream(): that flushes the previous stream, which a test runner may
        # have closed since, and would raise in whichever thread happened to log.
        stream = sys.stderr
        if stream is None or getattr(stream, "closed", False):
            stream = sys.__stderr__
        self.stream = stream
        super().emit(record)


class _ConveyorHandler(_StderrHandler):
    """Marks the handler configure_logging installs on the root logger."""


def configure_logging(
    log_format: str = "json",
    level: str = "INFO",
    *,
    secrets: Iterable[str] = (),
    environment: Mapping[str, str] | None = None,
) -> None:
    """Configure structlog and the standard library's logging, both through the scrubber.

    `secrets` are values never to be written (beyond those found in `environment`, which
    defaults to this process's).
    """
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        numeric_level = logging.INFO
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    known = [
        *secrets,
        *secrets_from_environment(os.environ if environment is None else environment),
    ]
    scrubber = Scrubber(known)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            scrubber,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    # The libraries' records: same fields, same scrubbing, same renderer.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            scrubber,
            renderer,
        ],
    )
    handler = _ConveyorHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        if isinstance(existing, _ConveyorHandler) or (
            isinstance(existing, logging.StreamHandler)
            and getattr(existing, "stream", None) in (sys.stderr, sys.__stderr__)
        ):
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(max(numeric_level, logging.WARNING))
    # Dask's own loggers announce every worker and connection at INFO.
    for noisy in ("distributed", "dask", "bokeh", "tornado"):
        logging.getLogger(noisy).setLevel(max(numeric_level, logging.WARNING))
