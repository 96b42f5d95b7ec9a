"""One validator for every path a work item names: clean paths pass, nothing else does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.paths import (
    MAX_PART_LENGTH,
    MAX_PATH_LENGTH,
    UnsafePath,
    directory_path,
    relative_path,
)

SAFE_PART = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.=-]{0,30}", fullmatch=True).filter(
    lambda part: part not in (".", "..")
)
SAFE_PATH = st.lists(SAFE_PART, min_size=1, max_size=8).map("/".join)
UNSAFE_CHARACTER = st.sampled_from(
    ["\x00", "\n", "\r", "\t", "\x1b", "\x7f", "\x85", "\u202e", "\u200b", "\udcff", "\ue000"]
)


@given(path=SAFE_PATH, leading=st.booleans(), trailing=st.booleans())
def test_a_clean_relative_path_is_kept_without_its_outer_slashes(
    path: str, leading: bool, trailing: bool
) -> None:
    spelled = ("/" if leading else "") + path + ("/" if trailing else "")
    assert relative_path(spelled) == path
    assert relative_path(relative_path(spelled)) == path


@given(
    parts=st.lists(SAFE_PART, min_size=2, max_size=5),
    bad=st.sampled_from(["", ".", ".."]),
    position=st.integers(0, 5),
)
def test_an_empty_dot_or_dot_dot_part_is_refused(parts: list[str], bad: str, position: int) -> None:
    # An empty part at either end is only a leading or trailing slash, so it goes inside.
    low = 1 if bad == "" else 0
    high = len(parts) - 1 if bad == "" else len(parts)
    parts.insert(min(max(position, low), high), bad)
    path = "/".join(parts)
    with pytest.raises(UnsafePath) as raised:
        relative_path(path, what="a relative output path")
    assert "is not a relative output path" in str(raised.value)
    with pytest.raises(UnsafePath):
        directory_path("/" + path)


@given(path=SAFE_PATH, character=UNSAFE_CHARACTER, position=st.integers(0, 200))
def test_control_format_and_undecodable_characters_are_refused_and_named(
    path: str, character: str, position: int
) -> None:
    at = min(position, len(path))
    with pytest.raises(UnsafePath) as raised:
        relative_path(path[:at] + character + path[at:])
    message = str(raised.value)
    assert "U+" in message or "not UTF-8" in message


@given(path=SAFE_PATH, position=st.integers(0, 200))
def test_a_backslash_is_refused(path: str, position: int) -> None:
    at = min(position, len(path))
    with pytest.raises(UnsafePath, match="backslash"):
        relative_path(path[:at] + "\\" + path[at:])


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("fiji//x", "'fiji//x' is not a relative output path: it has an empty part ('//')"),
        ("../etc", "'../etc' is not a relative output path: it has a '..' part"),
        ("a/./b", "it has a '.' part"),
        ("", "it is empty"),
        ("a\\b", "it contains a backslash"),
        ("x/\u202egnp.exe", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ("x\n", "U+000A"),
        ("x/\udcff", "the byte 0xff, which is not UTF-8"),
        ("x" * (MAX_PATH_LENGTH + 1), f"the limit is {MAX_PATH_LENGTH:,}"),
        ("a/" + "x" * (MAX_PART_LENGTH + 1), f"the limit is {MAX_PART_LENGTH}"),
    ],
)
def test_refusals_say_what_is_wrong(path: str, expected: str) -> None:
    with pytest.raises(UnsafePath) as raised:
        relative_path(path, what="a relative output path")
    assert expected in str(raised.value)


def test_a_root_folder_is_allowed_only_where_it_means_the_destination_itself() -> None:
    assert relative_path("/", allow_empty=True) == ""
    assert relative_path("", allow_empty=True) == ""
    with pytest.raises(UnsafePath):
        relative_path("/")


def test_a_directory_may_be_absolute_or_relative_but_never_home_relative() -> None:
    assert directory_path("/data/intermediate/") == "/data/intermediate/"
    assert directory_path("scratch/one") == "scratch/one"
    with pytest.raises(UnsafePath, match="starts with '~'"):
        directory_path("~/x")
    with pytest.raises(UnsafePath, match=r"'\.\.' part"):
        directory_path("/data/../etc")
