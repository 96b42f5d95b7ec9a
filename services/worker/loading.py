"""How a product job reads its inputs: which datasets, resampled how, grouped into which days.

Scenes come on their own grids (Landsat in its scene's UTM zone, Sentinel-2 on MGRS tiles) and
are reprojected onto the job's cell:

- reflectance with bilinear interpolation (a product plugin may ask for another with a class
  attribute, e.g. `reflectance_resampling = "cubic"`), the mask band with nearest: a mask's
  bits must never be averaged;
- grouped by the solar day *at the cell's centre*: every dataset's UTC time is moved by the
  cell's longitude, so two overlapping scenes of one pass (minutes apart) are one observation,
  fused as datacube fuses them (first valid pixel wins). datacube's own `solar_day` takes each
  dataset's longitude from its stored extent, which datacube 1.9 gets wrong for a dataset that
  crosses the antimeridian; and even right, it puts the two scenes of one pass on different
  dates on either side of longitude 180.

A period is a span of those solar days, so the index is searched a day wider on each side.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from typing import Any

from odc.geo.geobox import GeoBox

from shared.solar_day import solar_day_at

#: Reflectance resampling when the product does not ask for another.


def cell_longitude(geobox: GeoBox) -> float:
    """Longitude of a cell's centre, computed from its own CRS (right beside longitude 180)."""
    lon, _lat = geobox.extent.centroid.to_crs("EPSG:4326").coords[0]
    return float(lon)


def search_times(start: date, end: date) -> tuple[datetime, datetime]:
    """UTC times to search the index for a period of solar days: a day wider on each side, as a
    solar day is up to twelve hours either side of the UTC date."""
    return (
        datetime.combine(start - timedelta(days=1), day_time.min, tzinfo=UTC),
        datetime.combine(end + timedelta(days=1), day_time.max, tzinfo=UTC),
    )


def in_period(dataset: Any, start: date, end: date, longitude: float) -> bool:
    """True when the dataset's solar day at `longitude` lies in [start, end]."""
    center_time = dataset.center_time
    if center_time is None:
        return False
    return start <= solar_day_at(center_time, longitude) <= end


def solar_day_grouping(longitude: float) -> Any:
    """datacube's `group_by` for solar days reckoned at `longitude` (a datacube `GroupBy`)."""
    from datacube.api.query import GroupBy, solar_day

    def day_of(dataset: Any) -> Any:
        return solar_day(dataset, longitude=longitude)

    def time_of(dataset: Any) -> Any:
        return dataset.center_time

    def first_time(datasets: Sequence[Any]) -> Any:
        return datasets[0].center_time

    return GroupBy(
        group_by_func=day_of,
        dimension="time",
        units="seconds since 1970-01-01 00:00:00",
        sort_key=time_of,
        group_key=first_time,
    )
