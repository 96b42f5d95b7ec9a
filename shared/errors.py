"""The errors the stream layer maps to an outcome: retry, dead letter, or a recorded result."""

from __future__ import annotations


class ConveyorError(Exception):
    """Base of every error the project raises on purpose; the message is for a person."""

    reason: str = "error"


class InvalidRequest(ConveyorError):
    """The message can never succeed as written: dead-lettered at once, never retried."""

    reason = "invalid_request"


class NoData(ConveyorError):
    """The request is valid but no input data matches it: a recorded outcome, not a failure."""

    reason = "no_data"


class Retryable(ConveyorError):
    """A passing fault (network, storage, a busy server): retried with backoff."""

    reason = "retryable"


class Permanent(ConveyorError):
    """The job failed in a way a retry will not fix (corrupt input, unsupported data)."""

    reason = "permanent"
