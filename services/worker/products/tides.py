"""A tide table: heights over time from a CSV, interpolated to each acquisition time."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from shared.errors import Permanent

#: Tide gauge exports mark a missing reading with this height (the original dropped it too).
MISSING_HEIGHT = -9999.0


@dataclass(frozen=True)
class TideTable:
    """Heights at known instants (UTC, ascending, no repeats)."""

    times: npt.NDArray[np.datetime64]
    heights: npt.NDArray[np.float64]

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[datetime | np.datetime64 | str, float]]) -> TideTable:
        pairs = sorted(
            ((_utc_instant(when), float(height)) for when, height in rows),
            key=lambda pair: pair[0],
        )
        times: list[np.datetime64] = []
        heights: list[float] = []
        for when, height in pairs:
            if height == MISSING_HEIGHT or not np.isfinite(height):
                continue
            if times and when == times[-1]:
                continue  # the first reading of an instant wins, as the original kept it
            times.append(when)
            heights.append(height)
        if len(times) < 2:
            raise Permanent("a tide table needs at least two readings to interpolate between")
        return cls(
            times=np.array(times, dtype="datetime64[ns]"),
            heights=np.array(heights, dtype="float64"),
        )

    @classmethod
    def from_csv(cls, path: Path) -> TideTable:
        """Read `time,height` rows (ISO 8601 times, UTC unless an offset is given)."""
        try:
            with path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                headings = {name.strip().lower(): name for name in reader.fieldnames or ()}
                time_column, height_column = headings.get("time"), headings.get("height")
                if time_column is None or height_column is None:
                    raise Permanent(
                        f"tide table {path} needs a header with columns time and height "
                        f"(it has {', '.join(headings) or 'none'})"
                    )
                rows: list[tuple[np.datetime64, float]] = []
                for line, record in enumerate(reader, start=2):
                    when, height = record[time_column], record[height_column]
                    if height is None or not height.strip():
                        continue
                    try:
                        rows.append((_utc_instant(when.strip()), float(height)))
                    except (AttributeError, ValueError):
                        raise Permanent(
                            f"tide table {path} line {line}: expected an ISO 8601 time and a "
                            f"height, got {when!r}, {height!r}"
                        ) from None
        except OSError as error:
            raise Permanent(f"cannot read tide table {path}: {error.strerror or error}") from None
        try:
            return cls.from_rows(rows)
        except Permanent as error:
            raise Permanent(f"tide table {path}: {error}") from None

    @property
    def mean_height(self) -> float:
        """The mean of the readings: the table's estimate of mean sea level."""
        return float(self.heights.mean())

    def heights_at(self, times: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Heights linearly interpolated at `times`; NaN outside the table's span."""
        wanted = np.asarray(times, dtype="datetime64[ns]").astype("int64").astype("float64")
        known = self.times.astype("int64").astype("float64")
        return np.interp(wanted, known, self.heights, left=np.nan, right=np.nan)


def _utc_instant(when: datetime | np.datetime64 | str) -> np.datetime64:
    if isinstance(when, np.datetime64):
        return when.astype("datetime64[ns]")
    moment = datetime.fromisoformat(when) if isinstance(when, str) else when
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return np.datetime64(moment, "ns")
