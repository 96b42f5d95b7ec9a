"""Per-product options as the legacy work items send them: strings, parsed here with reasons.

`time_step` splits a request into periods before any job exists (the dispatcher does that), so
every product accepts it; anything else a product does not know is refused rather than ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shared.errors import InvalidRequest

#: A period length: a count (1 to 9999) and a unit (years, months, weeks, days), e.g. `1Y`, `16D`.
#: `\Z`, not `$`, which would also match before a trailing newline.
TIME_STEP = re.compile(r"^(?P<count>[1-9]\d{0,3})(?P<unit>[YMWD])\Z")

#: Options every product accepts.
COMMON_OPTIONS: frozenset[str] = frozenset({"time_step"})

TIDE_OPTIONS: frozenset[str] = frozenset({"tide_range_from", "tide_range_to"})


def parse_number(name: str, text: str) -> float:
    """`"10"`, `"9.5"`, `"-0.25"`, `"1e1"` as a finite float; InvalidRequest otherwise."""
    try:
        value = float(text.strip())
    except (TypeError, ValueError, AttributeError):
        raise InvalidRequest(f"{name} {text!r} is not a number (expected e.g. 1.5)") from None
    if not math.isfinite(value):
        raise InvalidRequest(f"{name} {text!r} is not a finite number (expected e.g. 1.5)")
    return value


def parse_time_step(text: str) -> str:
    """`1Y`, `6m`, `16D`: a count and a unit (Y, M, W, D), returned upper-cased."""
    step = text.strip().upper()
    if not TIME_STEP.fullmatch(step):
        raise InvalidRequest(f"time_step {text!r} is not a time step (expected e.g. 1Y, 6M or 16D)")
    return step


@dataclass(frozen=True)
class TideRange:
    """Tide heights, in the tide table's units, that an observation may have: low <= h <= high."""

    low: float
    high: float

    def contains(self, heights: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """True for heights inside the range; an unknown (NaN) height is outside."""
        values = np.asarray(heights, dtype="float64")
        return (values >= self.low) & (values <= self.high)


def parse_tide_range(options: Mapping[str, str]) -> TideRange | None:
    """The range from `tide_range_from`/`tide_range_to`, compared as numbers, or None if absent."""
    low_text, high_text = options.get("tide_range_from"), options.get("tide_range_to")
    if low_text is None and high_text is None:
        return None
    if low_text is None or high_text is None:
        raise InvalidRequest("give both tide_range_from and tide_range_to, or neither")
    low = parse_number("tide_range_from", low_text)
    high = parse_number("tide_range_to", high_text)
    if not low < high:
        raise InvalidRequest(
            f"tide_range_from {low_text} must be less than tide_range_to {high_text}"
        )
    return TideRange(low=low, high=high)


def check_known_options(
    job_code: str, options: Mapping[str, str], accepted: Collection[str]
) -> None:
    """Refuse options `job_code` does not use, and a malformed `time_step`."""
    known = set(accepted) | COMMON_OPTIONS
    unknown = sorted(set(options) - known)
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        allowed = ", ".join(sorted(known))
        raise InvalidRequest(
            f"{job_code} does not take option{plural} {', '.join(unknown)} "
            f"(it takes {allowed}); remove {'them' if plural else 'it'} from the request"
        )
    if "time_step" in options:
        parse_time_step(options["time_step"])
