"""Text as it comes off the wire: decoded tolerantly, the original bytes always recoverable.

Every client decodes replies with `surrogateescape` (see `shared.redis_connection.connect`): a
byte that is not UTF-8 arrives as a lone surrogate (`b"\\xff"` -> `"\\udcff"`) instead of raising
inside the client's reply parser, and `raw_bytes` gives the exact bytes back. Writing such a
string with the same client sends the original bytes.

A dead letter keeps both forms: `payload` (JSON a person can read, undecodable bytes shown as
U+FFFD) and, only when some field was not UTF-8, `payload_base64` (every field's exact bytes).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

ENCODING_ERRORS = "surrogateescape"


def raw_bytes(text: str) -> bytes:
    """The bytes `text` was decoded from (lone surrogates back to the bytes they stand for)."""
    return text.encode("utf-8", ENCODING_ERRORS)


def from_raw(data: bytes) -> str:
    """Bytes as the clients decode them: UTF-8, other bytes kept as lone surrogates."""
    return data.decode("utf-8", ENCODING_ERRORS)


def is_utf8(text: str) -> bool:
    """False when `text` holds bytes that were not UTF-8 (lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def readable(text: str) -> str:
    """`text` fit for a person and a JSON document: undecodable bytes become U+FFFD."""
    if is_utf8(text):
        return text
    return raw_bytes(text).decode("utf-8", "replace")


def first_bad_byte(text: str) -> tuple[int, int] | None:
    """(offset, byte) of the first byte that is not UTF-8, or None."""
    data = raw_bytes(text)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.start, data[error.start]
    return None


def dead_letter_payload(fields: Mapping[str, str]) -> dict[str, str]:
    """`payload` (readable JSON of the fields) and, if any was not UTF-8, `payload_base64`."""
    record = {
        "payload": json.dumps(
            {readable(name): readable(value) for name, value in fields.items()}, sort_keys=True
        )
    }
    if not all(is_utf8(name) and is_utf8(value) for name, value in fields.items()):
        record["payload_base64"] = json.dumps(
            [
                [_b64(name), _b64(value)]
                for name, value in sorted(fields.items(), key=lambda item: raw_bytes(item[0]))
            ]
        )
    return record


def original_fields(record: Mapping[str, str]) -> dict[str, str]:
    """A dead letter's original fields, exact: from `payload_base64` when it has one."""
    encoded = record.get("payload_base64")
    if encoded:
        return {
            from_raw(base64.b64decode(name)): from_raw(base64.b64decode(value))
            for name, value in json.loads(encoded)
        }
    payload = json.loads(record.get("payload", "{}"))
    return {str(name): str(value) for name, value in payload.items()}


def _b64(text: str) -> str:
    return base64.b64encode(raw_bytes(text)).decode("ascii")
