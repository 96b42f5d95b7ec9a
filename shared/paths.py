"""Paths that work items name: one validator for every path-like field.

A work item chooses *where under* the operator's destination its outputs go (`prefix`, `s3_dir`)
and its scratch folder (`inter_dir`), never where the destination is. So every such path is
checked the same way, once, before it is used anywhere:

- no empty part (`a//b`), no `.` or `..` part;
- no backslash (a Windows separator on one side is a file name on the other);
- no control, format or surrogate character (newlines, NUL, right-to-left overrides, bytes that
  were not UTF-8);
- bounded: at most `MAX_PATH_LENGTH` characters, each part at most `MAX_PART_LENGTH`.

`relative_path` returns the path without leading or trailing `/`, so `"/fiji/x/"` and `"fiji/x"`
name the same place. The message of an `UnsafePath` (a `ValueError`, so pydantic reports it
against the field) says what is wrong and what is expected.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator

MAX_PATH_LENGTH = 1024
MAX_PART_LENGTH = 255

#: Unicode categories no name or path may hold: control (Cc), format (Cf, e.g. U+202E, which
#: shows a name reversed), surrogates (Cs: bytes that were not UTF-8, decoded losslessly) and
#: private use (Co).
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co"})


class UnsafePath(ValueError):
    """A path an item may not name; the message says why."""


def unsafe_character(text: str) -> str | None:
    """The first control, format, surrogate or private-use character in `text`, or None."""
    for character in text:
        if unicodedata.category(character) in UNSAFE_CATEGORIES:
            return character
    return None


def describe_character(character: str) -> str:
    """`U+000A`, plus a hint when it comes from bytes that were not UTF-8."""
    code = ord(character)
    if 0xDC80 <= code <= 0xDCFF:
        return f"the byte 0x{code - 0xDC00:02x}, which is not UTF-8"
    return f"U+{code:04X} ({unicodedata.name(character, 'a control character')})"


def _refuse(value: str, what: str, why: str) -> UnsafePath:
    return UnsafePath(f"{_shown(value)} is not {what}: {why}")


def _check_parts(value: str, cleaned: str, what: str) -> None:
    if len(value) > MAX_PATH_LENGTH:
        raise _refuse(
            value, what, f"it is {len(value):,} characters long; the limit is {MAX_PATH_LENGTH:,}"
        )
    character = unsafe_character(value)
    if character is not None:
        raise _refuse(value, what, f"it contains {describe_character(character)}")
    if "\\" in value:
        raise _refuse(value, what, "it contains a backslash; separate parts with '/'")
    for part in cleaned.split("/"):
        if part == "":
            raise _refuse(value, what, "it has an empty part ('//'); remove it")
        if part in (".", ".."):
            raise _refuse(value, what, f"it has a {part!r} part; name the folder itself")
        if len(part) > MAX_PART_LENGTH:
            raise _refuse(
                value,
                what,
                f"it has a part of {len(part):,} characters; the limit is {MAX_PART_LENGTH}",
            )


def relative_path(value: str, *, what: str = "a relative path", allow_empty: bool = False) -> str:
    """`value` as a relative path (no leading or trailing `/`), or `UnsafePath` saying why.

    `what` names the path in the message (`'a//b' is not a relative output path: ...`);
    `allow_empty`: `""` (or `"/"`) names the destination's root itself.
    """
    if not isinstance(value, str):
        raise UnsafePath(f"{value!r} is not {what}: it is not text")
    cleaned = value.strip("/")
    if not cleaned:
        if allow_empty and not value.strip(" /"):
            return ""
        raise _refuse(value, what, "it is empty; expected e.g. fiji/landsat_8/2019")
    _check_parts(value, cleaned, what)
    return cleaned


def directory_path(value: str, *, what: str = "a directory") -> str:
    """A directory, absolute or relative, with the same rules for its parts; returned as given.

    A leading `~` is refused too: it would be expanded to a home directory.
    """
    if not isinstance(value, str):
        raise UnsafePath(f"{value!r} is not {what}: it is not text")
    cleaned = value.strip("/")
    if not cleaned:
        if value.startswith("/"):
            return value
        raise _refuse(value, what, "it is empty; expected e.g. /data/intermediate/")
    _check_parts(value, cleaned, what)
    if cleaned.startswith("~"):
        raise _refuse(value, what, "it starts with '~'; give the directory itself")
    return value


def _shown(value: str, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...'"


def _relative(value: str) -> str:
    return relative_path(value)


#: A pydantic field type: a relative path, cleaned.
RelativePath = Annotated[str, AfterValidator(_relative)]
