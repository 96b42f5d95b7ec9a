"""The solar day of an acquisition at a place: the local mean solar date at a longitude.

datacube's `group_by="solar_day"` takes the longitude from each dataset's stored extent. For a
dataset that crosses the antimeridian datacube 1.9 stores a longitude range that runs the wrong
way round the globe (its middle is near 0), and even a right longitude puts two scenes of one pass
on different dates when they lie on either side of longitude 180. A product tile therefore
reckons every dataset's solar day at one longitude, its own centre's (as odc-algo does with the
output geobox): scenes of one pass, minutes apart, always share a day.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

#: Seconds of the day per degree of longitude (86400 / 360), as datacube counts them.
SECONDS_PER_DEGREE = 240


def solar_day_at(moment: datetime, longitude: float) -> date:
    """The local mean solar date at `longitude` of a UTC `moment` (datacube's arithmetic)."""
    utc = moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return (utc + timedelta(seconds=int(longitude * SECONDS_PER_DEGREE))).date()
