"""USGS Landsat metadata (`{product id}_MTL.txt`): the text parsed, and the facts a scene needs.

The MTL is USGS's Object Description Language text: `GROUP = NAME` ... `END_GROUP = NAME`
around `KEY = value` lines (strings quoted, numbers, dates and times bare), ending with `END`.

* Collection 1 (LSDS-1574, the Level-1 MTL that ESPA surface-reflectance orders carry) puts
  everything under `L1_METADATA_FILE`: `METADATA_FILE_INFO` (`LANDSAT_SCENE_ID`,
  `LANDSAT_PRODUCT_ID`, `COLLECTION_NUMBER`, `FILE_DATE`), `PRODUCT_METADATA` (`DATA_TYPE`, the
  processing level; `COLLECTION_CATEGORY`, `SPACECRAFT_ID`, `SENSOR_ID`, `WRS_PATH`, `WRS_ROW`,
  `DATE_ACQUIRED`, `SCENE_CENTER_TIME`, the corners, `REFLECTIVE_LINES/SAMPLES`),
  `IMAGE_ATTRIBUTES` (`CLOUD_COVER`, `SUN_AZIMUTH`, `SUN_ELEVATION`) and
  `PROJECTION_PARAMETERS` (`MAP_PROJECTION`, `UTM_ZONE`, `GRID_CELL_SIZE_REFLECTIVE`).
* Collection 2 (LSDS-1619, Level-2 science products) puts it under `LANDSAT_METADATA_FILE`:
  `PRODUCT_CONTENTS` (`LANDSAT_PRODUCT_ID`, `PROCESSING_LEVEL`, `COLLECTION_NUMBER`,
  `COLLECTION_CATEGORY`, `FILE_NAME_*`), `IMAGE_ATTRIBUTES`, `PROJECTION_ATTRIBUTES`,
  `LEVEL2_PROCESSING_RECORD`, `LEVEL2_SURFACE_REFLECTANCE_PARAMETERS`
  (`REFLECTANCE_MULT_BAND_n` 2.75E-05, `REFLECTANCE_ADD_BAND_n` -0.2) and
  `LEVEL1_PROCESSING_RECORD` (`LANDSAT_SCENE_ID`, the Level-1 product it was made from).

The corner coordinates (`CORNER_UL_PROJECTION_X_PRODUCT`, ...) are the centres of the corner
pixels, so the grid's outer edge lies half a cell beyond them. USGS grids scenes in the
*northern* UTM zone of their path even south of the equator (negative northings: EPSG:326NN),
and Antarctic scenes in polar stereographic (`PS`, true scale at -71: EPSG:3031).

`parse_mtl` is pure; `landsat_metadata` checks what it reads and raises `CorruptScene` naming the
file and the key, since a retry cannot mend a broken MTL.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Union

from odc.geo import CRS
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from rasterio.transform import Affine

from services.worker.ard.errors import CorruptScene

MtlValue = str | int | float
MtlGroup = dict[str, Union[MtlValue, "MtlGroup"]]

C1_ROOT = "L1_METADATA_FILE"
C2_ROOT = "LANDSAT_METADATA_FILE"
# Where each collection keeps its keys, searched in this order (a key found in an earlier group
# wins: C2's LEVEL1_PROCESSING_RECORD repeats LANDSAT_PRODUCT_ID and PROCESSING_LEVEL for the
# Level-1 product, which PRODUCT_CONTENTS' own must shadow).
C1_GROUPS = ("METADATA_FILE_INFO", "PRODUCT_METADATA", "IMAGE_ATTRIBUTES", "PROJECTION_PARAMETERS")
C2_GROUPS = (
    "PRODUCT_CONTENTS",
    "IMAGE_ATTRIBUTES",
    "PROJECTION_ATTRIBUTES",
    "LEVEL2_PROCESSING_RECORD",
    "LEVEL2_SURFACE_REFLECTANCE_PARAMETERS",
    "LEVEL1_PROCESSING_RECORD",
)
CORNERS = ("UL", "UR", "LR", "LL")
GENERATED_KEYS = {1: "FILE_DATE", 2: "DATE_PRODUCT_GENERATED"}
# How far the MTL's lat/lon corners may lie from its projected ones (degrees of latitude).
CORNER_TOLERANCE_DEGREES = 0.01
_LINE = re.compile(r"^\s*(?P<key>[A-Za-z0-9_]+)\s*=\s*(?P<value>.*?)\s*$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")


class MtlError(ValueError):
    """The text is not an MTL: says which line and why."""


def _value(text: str) -> MtlValue:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    if _INTEGER.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return text


def parse_mtl(text: str) -> MtlGroup:
    """The MTL's groups as nested dicts: strings unquoted, integers and reals as numbers, other
    bare values (dates, times) as strings. Raises `MtlError` naming the line at fault."""
    root: MtlGroup = {}
    stack: list[tuple[str, MtlGroup]] = [("", root)]
    ended = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if ended:
            raise MtlError(f"line {number}: {line!r} follows END")
        if line == "END":
            ended = True
            continue
        match = _LINE.match(line)
        if match is None:
            raise MtlError(f"line {number}: {line!r} is not KEY = value")
        key, value = match.group("key"), match.group("value")
        if key == "GROUP":
            group: MtlGroup = {}
            stack[-1][1][value] = group
            stack.append((value, group))
        elif key == "END_GROUP":
            if len(stack) == 1 or stack[-1][0] != value:
                open_group = stack[-1][0] or "no group"
                raise MtlError(f"line {number}: END_GROUP = {value} closes {open_group}")
            stack.pop()
        else:
            stack[-1][1][key] = _value(value)
    if len(stack) > 1:
        raise MtlError(f"group {stack[-1][0]} is never closed")
    if not ended:
        raise MtlError("there is no END line: the file is cut short")
    return root


@dataclass(frozen=True)
class LandsatMetadata:
    """What an ARD scene says about the Landsat product it was made from."""

    product_id: str
    collection: int
    collection_category: str
    processing_level: str
    spacecraft: str  # LANDSAT_8
    sensor: str  # OLI_TIRS, ETM, TM
    wrs_path: int
    wrs_row: int
    acquired: datetime
    sun_azimuth: float
    sun_elevation: float
    geobox: GeoBox  # the reflective bands' grid
    corners_lonlat: tuple[tuple[float, float], ...]  # UL, UR, LR, LL pixel centres
    cloud_cover: float | None = None
    cloud_cover_land: float | None = None
    scene_id: str | None = None
    generated: datetime | None = None
    software_version: str | None = None
    #: Collection 2: `ALGORITHM_SOURCE_SURFACE_REFLECTANCE`, e.g. `LaSRC_1.5.0`.
    reflectance_algorithm: str | None = None
    #: `FILE_NAME_*` keys (without the prefix) -> file names, as the MTL lists them.
    file_names: Mapping[str, str] = field(default_factory=dict)
    #: Band number -> (REFLECTANCE_MULT_BAND_n, REFLECTANCE_ADD_BAND_n), Collection 2 Level-2.
    reflectance_rescaling: Mapping[int, tuple[float, float]] = field(default_factory=dict)

    @property
    def platform(self) -> str:
        """eo3's platform name: `LANDSAT_8` -> `landsat-8`."""
        return self.spacecraft.lower().replace("_", "-")

    @property
    def region_code(self) -> str:
        """WRS-2 path and row, `PPPRRR`, as USGS and odc-stats name Landsat regions."""
        return f"{self.wrs_path:03d}{self.wrs_row:03d}"


class _Keys:
    """Looks keys up in the collection's groups, raising `CorruptScene` for a bad or missing one."""

    def __init__(self, root: MtlGroup, groups: tuple[str, ...], source: str) -> None:
        self.source = source
        self.groups = [group for name in groups if isinstance(group := root.get(name), dict)]

    def get(self, key: str) -> MtlValue | None:
        for group in self.groups:
            value = group.get(key)
            if value is not None and not isinstance(value, dict):
                return value
        return None

    def text(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise CorruptScene(f"{self.source} has no {key}")
        return str(value)

    def number(self, key: str) -> float:
        value = self.get(key)
        if value is None:
            raise CorruptScene(f"{self.source} has no {key}")
        if isinstance(value, str):
            raise CorruptScene(f"{self.source}: {key} = {value!r} is not a number")
        return float(value)

    def integer(self, key: str) -> int:
        value = self.number(key)
        if not value.is_integer():
            raise CorruptScene(f"{self.source}: {key} = {value} is not a whole number")
        return int(value)

    def optional_number(self, key: str) -> float | None:
        return None if self.get(key) is None else self.number(key)

    def prefixed(self, prefix: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for group in reversed(self.groups):
            found.update(
                {
                    key.removeprefix(prefix): str(value)
                    for key, value in group.items()
                    if key.startswith(prefix) and not isinstance(value, dict)
                }
            )
        return found


def _acquired(keys: _Keys) -> datetime:
    day_text, time_text = keys.text("DATE_ACQUIRED"), keys.text("SCENE_CENTER_TIME")
    try:
        day = date.fromisoformat(day_text)
        clock, _, fraction = time_text.removesuffix("Z").partition(".")
        hours, minutes, seconds = (int(part) for part in clock.split(":"))
        micro = int((fraction + "000000")[:6]) if fraction else 0
        moment = time(hours, minutes, seconds, micro, tzinfo=UTC)
    except ValueError:
        raise CorruptScene(
            f"{keys.source}: DATE_ACQUIRED {day_text!r} with SCENE_CENTER_TIME {time_text!r} is "
            "not a time (expected YYYY-MM-DD and HH:MM:SS.fffffffZ)"
        ) from None
    return datetime.combine(day, moment)


def _generated(keys: _Keys, key: str) -> datetime | None:
    text = keys.get(key)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise CorruptScene(f"{keys.source}: {key} = {text!r} is not a time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _crs(keys: _Keys) -> CRS:
    projection = keys.text("MAP_PROJECTION")
    if projection == "UTM":
        datum = keys.get("DATUM")
        if datum not in (None, "WGS84"):
            raise CorruptScene(f"{keys.source}: DATUM {datum!r} is not WGS84")
        zone = keys.integer("UTM_ZONE")
        if not 1 <= abs(zone) <= 60:
            raise CorruptScene(f"{keys.source}: UTM_ZONE {zone} is not a UTM zone (1-60)")
        # USGS uses the northern zone for every scene; a negative zone is a southern one.
        return CRS(f"EPSG:{32600 + zone if zone > 0 else 32700 - zone}")
    if projection == "PS":
        true_scale = keys.optional_number("TRUE_SCALE_LAT")
        central = keys.optional_number("VERTICAL_LON_FROM_POLE")
        if true_scale == -71 and central in (None, 0):
            return CRS("EPSG:3031")
    raise CorruptScene(
        f"{keys.source}: MAP_PROJECTION {projection!r} is not one USGS grids Landsat in "
        "(UTM, or polar stereographic with true scale at -71)"
    )


def _corner_xy(keys: _Keys, corner: str) -> tuple[float, float]:
    return (
        keys.number(f"CORNER_{corner}_PROJECTION_X_PRODUCT"),
        keys.number(f"CORNER_{corner}_PROJECTION_Y_PRODUCT"),
    )


def _grid(keys: _Keys, crs: CRS) -> GeoBox:
    cell = keys.number("GRID_CELL_SIZE_REFLECTIVE")
    lines, samples = keys.integer("REFLECTIVE_LINES"), keys.integer("REFLECTIVE_SAMPLES")
    if cell <= 0 or lines <= 0 or samples <= 0:
        raise CorruptScene(
            f"{keys.source}: a {samples} x {lines} grid of {cell} m cells holds no pixel"
        )
    ulx, uly = _corner_xy(keys, "UL")
    lrx, lry = _corner_xy(keys, "LR")
    expected = (ulx + (samples - 1) * cell, uly - (lines - 1) * cell)
    if abs(lrx - expected[0]) > cell / 2 or abs(lry - expected[1]) > cell / 2:
        raise CorruptScene(
            f"{keys.source}: the LR corner ({lrx}, {lry}) is not {samples} x {lines} cells of "
            f"{cell} m from the UL corner ({ulx}, {uly})"
        )
    # The corners are pixel centres: the grid's edge is half a cell further out.
    transform = Affine(cell, 0.0, ulx - cell / 2, 0.0, -cell, uly + cell / 2)
    return GeoBox((lines, samples), transform, crs)


def _wrapped(difference: float) -> float:
    return (difference + 180.0) % 360.0 - 180.0


def _corners_lonlat(keys: _Keys, crs: CRS) -> tuple[tuple[float, float], ...]:
    """The lat/lon corners, checked against the projected ones (a mismatch is a corrupt MTL)."""
    to_lonlat = Transformer.from_crs(crs.to_wkt(), "EPSG:4326", always_xy=True)
    corners: list[tuple[float, float]] = []
    for corner in CORNERS:
        lon = keys.number(f"CORNER_{corner}_LON_PRODUCT")
        lat = keys.number(f"CORNER_{corner}_LAT_PRODUCT")
        x, y = _corner_xy(keys, corner)
        projected_lon, projected_lat = to_lonlat.transform(x, y)
        lon_tolerance = CORNER_TOLERANCE_DEGREES / max(math.cos(math.radians(lat)), 0.01)
        if (
            abs(projected_lat - lat) > CORNER_TOLERANCE_DEGREES
            or abs(_wrapped(projected_lon - lon)) > lon_tolerance
        ):
            raise CorruptScene(
                f"{keys.source}: corner {corner} is at lon {lon}, lat {lat} but its projected "
                f"coordinates ({x}, {y}) in {crs} are at lon {projected_lon:.5f}, lat "
                f"{projected_lat:.5f}"
            )
        corners.append((lon, lat))
    return tuple(corners)


def _rescaling(keys: _Keys) -> dict[int, tuple[float, float]]:
    rescaling: dict[int, tuple[float, float]] = {}
    for band in range(1, 12):
        multiply = keys.get(f"REFLECTANCE_MULT_BAND_{band}")
        add = keys.get(f"REFLECTANCE_ADD_BAND_{band}")
        if multiply is None and add is None:
            continue
        rescaling[band] = (
            keys.number(f"REFLECTANCE_MULT_BAND_{band}"),
            keys.number(f"REFLECTANCE_ADD_BAND_{band}"),
        )
    return rescaling


def landsat_metadata(mtl: MtlGroup, source: str) -> LandsatMetadata:
    """The facts of a parsed MTL (`source` names the file in errors)."""
    groups: tuple[str, ...]
    if isinstance(mtl.get(C2_ROOT), dict):
        root, groups, collection_default = mtl[C2_ROOT], C2_GROUPS, 2
    elif isinstance(mtl.get(C1_ROOT), dict):
        root, groups, collection_default = mtl[C1_ROOT], C1_GROUPS, 1
    else:
        raise CorruptScene(
            f"{source} is not a Landsat MTL: it has neither {C2_ROOT} (Collection 2) nor "
            f"{C1_ROOT} (Collection 1)"
        )
    assert isinstance(root, dict)
    keys = _Keys(root, groups, source)
    crs = _crs(keys)
    collection = keys.get("COLLECTION_NUMBER")
    level_key = "PROCESSING_LEVEL" if collection_default == 2 else "DATA_TYPE"
    scene_id = keys.get("LANDSAT_SCENE_ID")
    software = keys.get("PROCESSING_SOFTWARE_VERSION")
    algorithm = keys.get("ALGORITHM_SOURCE_SURFACE_REFLECTANCE")
    cloud_cover = keys.optional_number("CLOUD_COVER")
    cloud_cover_land = keys.optional_number("CLOUD_COVER_LAND")
    return LandsatMetadata(
        product_id=keys.text("LANDSAT_PRODUCT_ID"),
        collection=int(collection) if isinstance(collection, int) else collection_default,
        collection_category=keys.text("COLLECTION_CATEGORY"),
        processing_level=keys.text(level_key),
        spacecraft=keys.text("SPACECRAFT_ID"),
        sensor=keys.text("SENSOR_ID"),
        wrs_path=keys.integer("WRS_PATH"),
        wrs_row=keys.integer("WRS_ROW"),
        acquired=_acquired(keys),
        sun_azimuth=keys.number("SUN_AZIMUTH"),
        sun_elevation=keys.number("SUN_ELEVATION"),
        geobox=_grid(keys, crs),
        corners_lonlat=_corners_lonlat(keys, crs),
        # USGS writes -1 where it could not assess the cloud cover.
        cloud_cover=cloud_cover if cloud_cover is not None and cloud_cover >= 0 else None,
        cloud_cover_land=(
            cloud_cover_land if cloud_cover_land is not None and cloud_cover_land >= 0 else None
        ),
        scene_id=None if scene_id is None else str(scene_id),
        generated=_generated(keys, GENERATED_KEYS[collection_default]),
        software_version=None if software is None else str(software),
        reflectance_algorithm=None if algorithm is None else str(algorithm),
        file_names=keys.prefixed("FILE_NAME_"),
        reflectance_rescaling=_rescaling(keys),
    )


def read_mtl(path: Path) -> LandsatMetadata:
    """The MTL at `path` read and checked; a missing or broken one is a `CorruptScene`."""
    try:
        text = path.read_text("utf-8", errors="strict")
    except FileNotFoundError:
        raise CorruptScene(f"the product has no {path.name} ({path})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CorruptScene(f"{path.name} is unreadable: {error}") from None
    try:
        parsed = parse_mtl(text)
    except MtlError as error:
        raise CorruptScene(f"{path.name} is not a valid MTL: {error}") from None
    return landsat_metadata(parsed, path.name)
