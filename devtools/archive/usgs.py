"""USGS-style Landsat downloads made from the synthetic archive's scenes, as USGS ships them.

    records = generate_archive("ls8_usgs_sr_scene", (178.2, -17.6, 178.4, -17.4),
                               date(2019, 1, 1), date(2019, 1, 31), work)   # lon/lat: UTM grid
    c2 = write_usgs_scene(records[0], archive, collection=2)            # LC08_L2SP_..._02_T1.tar
    c1 = write_usgs_scene(records[0], archive, collection=1, packaging="tar.gz")  # ESPA order
    l1 = write_usgs_scene(records[0], archive, collection=2, level1=True)  # Level-1 only

A scene of the synthetic archive (written by `generate_archive`, whose geometry this module
leaves alone) is re-packaged with USGS's layout, names, encodings and metadata keys:

* Collection 2 Level-2 (LSDS-1619): `{id}_SR_B1..7.TIF` uint16 with reflectance = DN x
  0.0000275 - 0.2 and fill 0, `QA_PIXEL` (the archive's Collection 1 `pixel_qa` re-coded into
  Collection 2's bits and confidences), `QA_RADSAT`, `SR_QA_AEROSOL` (OLI) or
  `SR_ATMOS_OPACITY`/`SR_CLOUD_QA` (TM/ETM+), and `{id}_MTL.txt` under `LANDSAT_METADATA_FILE`;
* Collection 1 surface reflectance as ESPA delivered it: `{id}_sr_band1..7.tif` int16 x 10,000
  with fill -9999, `pixel_qa`, `radsat_qa`, `sr_aerosol` (OLI) or `sr_atmos_opacity`/
  `sr_cloud_qa`, the Level-1 `{id}_MTL.txt` under `L1_METADATA_FILE`, and ESPA's `{id}.xml`;
* `level1=True`: a Level-1 download (`{id}_B1..7.TIF` digital numbers, `BQA`/`QA_PIXEL`, MTL),
  which the ARD pool refuses (`unsupported_collection`).

USGS grids every scene on the northern UTM zone of its path, south of the equator too (negative
northings), with pixel edges on whole 30 m cells; so the scene is synthesised over a lon/lat area
(the generator then grids it in UTM) and its grid re-expressed in the northern zone (see
`usgs_geobox`). The tarball holds the files at its top level, as USGS's do.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal
from xml.etree import ElementTree as ET

import numpy as np
import rasterio
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from rasterio.transform import Affine

from devtools.archive.scene_files import SceneRecord

Packaging = Literal["tar", "tar.gz", "folder"]
FALSE_NORTHING_SOUTH = 10_000_000.0
C2_SCALE, C2_OFFSET = 2.75e-05, -0.2
CANONICAL = ("blue", "green", "red", "nir", "swir1", "swir2")
ESPA_NAMESPACE = "http://espa.cr.usgs.gov/v2"

# platform -> (product id prefix, spacecraft, sensor, band numbers of the canonical six)
MISSIONS: Mapping[str, tuple[str, str, str, tuple[int, ...]]] = {
    "landsat-5": ("LT05", "LANDSAT_5", "TM", (1, 2, 3, 4, 5, 7)),
    "landsat-7": ("LE07", "LANDSAT_7", "ETM", (1, 2, 3, 4, 5, 7)),
    "landsat-8": ("LC08", "LANDSAT_8", "OLI_TIRS", (2, 3, 4, 5, 6, 7)),
    "landsat-9": ("LC09", "LANDSAT_9", "OLI_TIRS", (2, 3, 4, 5, 6, 7)),
}


class Bare(str):
    """An MTL value written without quotes (dates, times of day as USGS writes them bare)."""


MtlDocument = Mapping[str, "str | int | float | MtlDocument"]


def render_mtl(document: MtlDocument, indent: int = 0) -> str:
    """An MTL's text: groups as GROUP/END_GROUP, strings quoted (`Bare` ones not), then END."""
    lines: list[str] = []
    pad = "  " * indent
    for key, value in document.items():
        if isinstance(value, Mapping):
            lines.append(f"{pad}GROUP = {key}")
            lines.append(render_mtl(value, indent + 1).rstrip("\n"))
            lines.append(f"{pad}END_GROUP = {key}")
        elif isinstance(value, Bare):
            lines.append(f"{pad}{key} = {value}")
        elif isinstance(value, str):
            lines.append(f'{pad}{key} = "{value}"')
        elif isinstance(value, bool):
            raise TypeError(f"{key}: an MTL has no booleans")
        else:
            lines.append(f"{pad}{key} = {value!r}")
    text = "\n".join(line for line in lines if line)
    return f"{text}\nEND\n" if indent == 0 else f"{text}\n"


@dataclass(frozen=True)
class UsgsScene:
    """A USGS-style download written from a synthetic scene."""

    name: str
    collection: int
    level1: bool
    path: Path  # the tarball, or the folder
    geobox: GeoBox  # as USGS grids it
    platform: str
    acquired: datetime
    #: What each band file holds, by USGS's band name (`SR_B4`, `sr_band4`, `QA_PIXEL`, ...).
    values: dict[str, np.ndarray] = field(default_factory=dict)
    #: The archive scene's own Collection 1 values, by canonical name and `pixel_qa`.
    source_values: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def region_code(self) -> str:
        return self.name.split("_")[2]


def usgs_geobox(geobox: GeoBox) -> GeoBox:
    """The scene's grid as USGS gives it: in the northern UTM zone, its pixel edges on whole
    cells of that zone's coordinates.

    A southern zone's grid is re-expressed in the northern one (false northing 10,000 km less),
    which leaves its edges 10 m off whole 30 m cells (10,000 km is not a multiple of 30 m), so
    the grid is moved to the nearest whole cell: the synthetic scene lies up to half a cell from
    where the archive has it. The pixels are the same.
    """
    epsg = geobox.crs.epsg if geobox.crs is not None else None
    if epsg is None or not (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760):
        raise ValueError(
            f"USGS grids Landsat scenes in UTM, but this scene is in {geobox.crs}: synthesise it "
            "over a lon/lat area (the generator then grids it in UTM)"
        )
    affine = geobox.transform
    cell = abs(affine.a)
    north = affine.f - (FALSE_NORTHING_SOUTH if epsg > 32700 else 0.0)
    snapped = Affine(
        affine.a, affine.b, round(affine.c / cell) * cell, affine.d, affine.e,
        round(north / cell) * cell,
    )  # fmt: skip
    return GeoBox(geobox.shape, snapped, CRS(f"EPSG:{epsg - 100 if epsg > 32700 else epsg}"))


def scene_name(
    record: SceneRecord,
    collection: int,
    *,
    level: str | None = None,
    platform: str | None = None,
    processed: date | None = None,
    category: str = "T1",
) -> str:
    """The USGS product id of the scene: `LC08_L2SP_PPPRRR_YYYYMMDD_yyyymmdd_02_T1`."""
    prefix = MISSIONS[platform or record.platform][0]
    region = record.region_code
    if len(region) != 6 or not region.isdigit():
        raise ValueError(f"{record.label} has region {region!r}, not a WRS-2 path and row")
    chosen_level = level or ("L1TP" if collection == 1 else "L2SP")
    day = record.acquired.date()
    made = processed or day + timedelta(days=16 if collection == 1 else 560)
    return (
        f"{prefix}_{chosen_level}_{region}_{day:%Y%m%d}_{made:%Y%m%d}_{collection:02d}_{category}"
    )


# -- pixels --------------------------------------------------------------------------------


def _read_record(record: SceneRecord) -> dict[str, np.ndarray]:
    values: dict[str, np.ndarray] = {}
    for band in (*CANONICAL, "pixel_qa"):
        with rasterio.open(record.measurement_paths[band]) as source:
            values[band] = source.read(1)
    return values


def collection2_reflectance(values: np.ndarray, nodata: int = -9999) -> np.ndarray:
    """Collection 1 reflectance x 10,000 as Collection 2 DN (x 0.0000275 - 0.2), fill 0."""
    numbers = np.rint((values.astype(np.float64) / 10_000 - C2_OFFSET) / C2_SCALE)
    encoded = np.clip(numbers, 1, 65535).astype(np.uint16)
    encoded[values == nodata] = 0
    return encoded


def collection2_qa_pixel(pixel_qa: np.ndarray, *, oli: bool) -> np.ndarray:
    """Collection 1 `pixel_qa` re-coded into Collection 2's `QA_PIXEL` bits.

    C1: 0 fill, 1 clear, 2 water, 3 shadow, 4 snow, 5 cloud, 6-7 cloud confidence, 8-9 cirrus
    confidence. C2: 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 shadow, 5 snow, 6 clear (no
    cloud, no dilated cloud), 7 water, 8-9 cloud, 10-11 shadow, 12-13 snow/ice, 14-15 cirrus
    confidences; a confidence is 'high' where its flag is set and 'low' elsewhere, as USGS's
    clear pixels read (21824 clear land, 21952 clear water on Landsat 8).
    """
    qa = pixel_qa.astype(np.uint32)

    def bit(n: int) -> np.ndarray:
        return (qa >> n) & 1

    cloud, shadow, snow = bit(5), bit(3), bit(4)
    cloud_confidence = (qa >> 6) & 3
    cirrus_confidence = (qa >> 8) & 3 if oli else np.zeros_like(qa)
    cirrus = (cirrus_confidence == 3).astype(np.uint32)
    clear = 1 - cloud
    out = (
        (cirrus << 2)
        | (cloud << 3)
        | (shadow << 4)
        | (snow << 5)
        | (clear << 6)
        | (bit(2) << 7)
        | (cloud_confidence << 8)
        | ((1 + 2 * shadow) << 10)
        | ((1 + 2 * snow) << 12)
        | (cirrus_confidence << 14)
    )
    result = out.astype(np.uint16)
    result[bit(0) == 1] = 1
    return result


def _coastal(blue: np.ndarray) -> np.ndarray:
    # A plausible coastal-aerosol band: slightly darker than blue over everything.
    return np.where(blue == -9999, -9999, blue - blue // 10).astype(np.int16)


def _level1_numbers(reflectance: np.ndarray) -> np.ndarray:
    # Top-of-atmosphere digital numbers for a Level-1 download: any monotone encoding will do.
    return np.where(reflectance == -9999, 0, np.clip(reflectance * 4 + 5000, 1, 65535)).astype(
        np.uint16
    )


def _bands(
    collection: int,
    level1: bool,
    family: str,
    numbers: tuple[int, ...],
    source: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """USGS band name -> pixels, for the chosen product."""
    fill = source["pixel_qa"] & 1 == 1
    oli = family == "oli"
    reflective = dict(zip(numbers, (source[band] for band in CANONICAL), strict=True))
    if oli:
        reflective[1] = _coastal(source["blue"])
    bands: dict[str, np.ndarray] = {}
    if level1:
        for number, values in sorted(reflective.items()):
            bands[f"B{number}"] = _level1_numbers(values)
        if collection == 1:
            bands["BQA"] = np.where(fill, 1, 2720).astype(np.uint16)
        else:
            bands["QA_PIXEL"] = collection2_qa_pixel(source["pixel_qa"], oli=oli)
        return bands
    if collection == 2:
        for number, values in sorted(reflective.items()):
            bands[f"SR_B{number}"] = collection2_reflectance(values)
        bands["QA_PIXEL"] = collection2_qa_pixel(source["pixel_qa"], oli=oli)
        bands["QA_RADSAT"] = np.zeros(fill.shape, dtype=np.uint16)
        if oli:
            bands["SR_QA_AEROSOL"] = np.where(fill, 1, 2).astype(np.uint8)
        else:
            bands["SR_ATMOS_OPACITY"] = np.where(fill, -9999, 150).astype(np.int16)
            bands["SR_CLOUD_QA"] = np.zeros(fill.shape, dtype=np.uint8)
        return bands
    for number, values in sorted(reflective.items()):
        bands[f"sr_band{number}"] = values.astype(np.int16)
    bands["pixel_qa"] = source["pixel_qa"].astype(np.uint16)
    bands["radsat_qa"] = np.where(fill, 1, 0).astype(np.uint16)
    if oli:
        bands["sr_aerosol"] = np.where(fill, 1, 2).astype(np.uint8)
    else:
        bands["sr_atmos_opacity"] = np.where(fill, -9999, 150).astype(np.int16)
        bands["sr_cloud_qa"] = np.zeros(fill.shape, dtype=np.uint8)
    return bands


_NODATA = {"int16": -9999}


def _write_tiff(path: Path, pixels: np.ndarray, geobox: GeoBox, compress: bool) -> None:
    profile: dict[str, object] = {
        "driver": "GTiff",
        "height": pixels.shape[0],
        "width": pixels.shape[1],
        "count": 1,
        "dtype": pixels.dtype.name,
        "crs": str(geobox.crs),
        "transform": geobox.transform,
    }
    if compress:  # Collection 2 ships tiled, compressed GeoTIFFs; ESPA wrote plain ones.
        profile.update(tiled=True, blockxsize=256, blockysize=256, compress="DEFLATE")
    with rasterio.open(path, "w", **profile) as target:
        target.write(pixels, 1)


# -- metadata ------------------------------------------------------------------------------


def _corners(geobox: GeoBox) -> dict[str, tuple[float, float, float, float]]:
    """UL/UR/LL/LR pixel centres: (x, y, lon, lat)."""
    assert geobox.crs is not None
    to_lonlat = Transformer.from_crs(geobox.crs.to_wkt(), "EPSG:4326", always_xy=True)
    cell = geobox.transform.a
    rows, cols = geobox.shape
    left, top = geobox.transform.c + cell / 2, geobox.transform.f - cell / 2
    right, bottom = left + (cols - 1) * cell, top - (rows - 1) * cell
    corners: dict[str, tuple[float, float, float, float]] = {}
    for name, (x, y) in {
        "UL": (left, top), "UR": (right, top), "LL": (left, bottom), "LR": (right, bottom)
    }.items():  # fmt: skip
        lon, lat = to_lonlat.transform(x, y)
        corners[name] = (x, y, round(lon, 5), round(lat, 5))
    return corners


def _sun(acquired: datetime, latitude: float) -> tuple[float, float]:
    """A plausible morning sun for a 10:00 descending pass: (azimuth, elevation) in degrees."""
    day = acquired.timetuple().tm_yday
    declination = -23.44 * np.cos(np.radians(360 / 365 * (day + 10)))
    elevation = 90 - abs(latitude - declination) - 25
    azimuth = 90 + (latitude - declination)
    return round(float(azimuth), 8), round(float(elevation), 8)


def _scene_id(prefix: str, region: str, acquired: datetime) -> str:
    return (
        f"L{prefix[1]}{int(prefix[2:])}{region}{acquired:%Y}{acquired.timetuple().tm_yday:03d}LGN00"
    )


def _projection_keys(geobox: GeoBox, corners: Mapping[str, tuple[float, ...]]) -> dict[str, object]:
    return {
        **{f"CORNER_{c}_LAT_PRODUCT": corners[c][3] for c in ("UL", "UR", "LL", "LR")},
        **{f"CORNER_{c}_LON_PRODUCT": corners[c][2] for c in ("UL", "UR", "LL", "LR")},
        **{
            f"CORNER_{c}_PROJECTION_{axis}_PRODUCT": float(corners[c][index])
            for c in ("UL", "UR", "LL", "LR")
            for index, axis in ((0, "X"), (1, "Y"))
        },
    }


def _mtl(
    scene: UsgsScene, record: SceneRecord, files: Mapping[str, str], spacecraft: str, sensor: str,
) -> dict[str, object]:  # fmt: skip
    geobox = scene.geobox
    assert geobox.crs is not None and geobox.crs.epsg is not None
    corners = _corners(geobox)
    prefix, level_text, region, _day, made, number, category = scene.name.split("_")
    path, row = int(region[:3]), int(region[3:])
    azimuth, elevation = _sun(scene.acquired, corners["UL"][3])
    acquired = scene.acquired
    clock = Bare(f"{acquired:%H:%M:%S}.{acquired.microsecond:06d}0Z")
    day = Bare(f"{acquired:%Y-%m-%d}")
    generated = Bare(f"{made[:4]}-{made[4:6]}-{made[6:]}T03:40:04Z")
    rows, cols = geobox.shape
    zone = geobox.crs.epsg - 32600
    image = {
        "SPACECRAFT_ID": spacecraft,
        "SENSOR_ID": sensor,
        "WRS_TYPE": 2,
        "WRS_PATH": path,
        "WRS_ROW": row,
        "NADIR_OFFNADIR": "NADIR",
        "TARGET_WRS_PATH": path,
        "TARGET_WRS_ROW": row,
        "DATE_ACQUIRED": day,
        "SCENE_CENTER_TIME": str(clock),
        "STATION_ID": "LGN",
        "CLOUD_COVER": round(record.cloud_cover, 2),
        "CLOUD_COVER_LAND": round(record.cloud_cover, 2),
        "SUN_AZIMUTH": azimuth,
        "SUN_ELEVATION": elevation,
        "EARTH_SUN_DISTANCE": 0.9877,
    }
    projection = {
        "MAP_PROJECTION": "UTM",
        "DATUM": "WGS84",
        "ELLIPSOID": "WGS84",
        "UTM_ZONE": zone,
        "GRID_CELL_SIZE_REFLECTIVE": 30.0,
        "GRID_CELL_SIZE_THERMAL": 30.0,
        "REFLECTIVE_LINES": rows,
        "REFLECTIVE_SAMPLES": cols,
        "THERMAL_LINES": rows,
        "THERMAL_SAMPLES": cols,
        "ORIENTATION": "NORTH_UP",
    }
    scene_id = _scene_id(prefix, region, acquired)
    file_names = {f"FILE_NAME_{key}": value for key, value in files.items()}
    if scene.collection == 1:
        return {
            "L1_METADATA_FILE": {
                "METADATA_FILE_INFO": {
                    "ORIGIN": "Image courtesy of the U.S. Geological Survey",
                    "REQUEST_ID": "0501902280001_00001",
                    "LANDSAT_SCENE_ID": scene_id,
                    "LANDSAT_PRODUCT_ID": scene.name,
                    "COLLECTION_NUMBER": Bare(number),
                    "FILE_DATE": generated,
                    "STATION_ID": "LGN",
                    "PROCESSING_SOFTWARE_VERSION": "LPGS_13.1.0",
                },
                "PRODUCT_METADATA": {
                    "DATA_TYPE": level_text,
                    "COLLECTION_CATEGORY": category,
                    "ELEVATION_SOURCE": "GLS2000",
                    "OUTPUT_FORMAT": "GEOTIFF",
                    **{k: v for k, v in image.items() if k.startswith(("SPACECRAFT", "SENSOR"))},
                    **{k: image[k] for k in ("WRS_PATH", "WRS_ROW", "NADIR_OFFNADIR")},
                    **{k: image[k] for k in ("TARGET_WRS_PATH", "TARGET_WRS_ROW")},
                    "DATE_ACQUIRED": day,
                    "SCENE_CENTER_TIME": str(clock),
                    **_projection_keys(geobox, corners),
                    "REFLECTIVE_LINES": rows,
                    "REFLECTIVE_SAMPLES": cols,
                    "THERMAL_LINES": rows,
                    "THERMAL_SAMPLES": cols,
                    **file_names,
                    "METADATA_FILE_NAME": f"{scene.name}_MTL.txt",
                },
                "IMAGE_ATTRIBUTES": {
                    k: image[k]
                    for k in (
                        "CLOUD_COVER",
                        "CLOUD_COVER_LAND",
                        "SUN_AZIMUTH",
                        "SUN_ELEVATION",
                        "EARTH_SUN_DISTANCE",
                    )
                },
                "PROJECTION_PARAMETERS": {
                    **{
                        k: v
                        for k, v in projection.items()
                        if "LINES" not in k and "SAMPLES" not in k
                    },
                    "RESAMPLING_OPTION": "CUBIC_CONVOLUTION",
                },
            }
        }
    level2: dict[str, object] = {}
    if not scene.level1:
        level2 = {
            "LEVEL2_PROCESSING_RECORD": {
                "ORIGIN": "Image courtesy of the U.S. Geological Survey",
                "DIGITAL_OBJECT_IDENTIFIER": "https://doi.org/10.5066/P9OGBGM6",
                "REQUEST_ID": "L2",
                "LANDSAT_PRODUCT_ID": scene.name,
                "PROCESSING_LEVEL": level_text,
                "OUTPUT_FORMAT": "GEOTIFF",
                "DATE_PRODUCT_GENERATED": generated,
                "PROCESSING_SOFTWARE_VERSION": "LPGS_15.3.1c",
                "ALGORITHM_SOURCE_SURFACE_REFLECTANCE": (
                    "LaSRC_1.5.0" if sensor == "OLI_TIRS" else "LEDAPS_3.4.0"
                ),
            },
            "LEVEL2_SURFACE_REFLECTANCE_PARAMETERS": {
                key: value
                for number in sorted(
                    int(name.removeprefix("BAND_")) for name in files if name.startswith("BAND_")
                )
                for key, value in (
                    (f"REFLECTANCE_MAXIMUM_BAND_{number}", 1.602213),
                    (f"REFLECTANCE_MINIMUM_BAND_{number}", -0.199972),
                    (f"QUANTIZE_CAL_MAX_BAND_{number}", 65535),
                    (f"QUANTIZE_CAL_MIN_BAND_{number}", 1),
                    (f"REFLECTANCE_MULT_BAND_{number}", Bare("2.75E-05")),
                    (f"REFLECTANCE_ADD_BAND_{number}", -0.2),
                )
            },
        }
    level1_name = scene.name.replace("_L2SP_", "_L1TP_").replace("_L2SR_", "_L1TP_")
    return {
        "LANDSAT_METADATA_FILE": {
            "PRODUCT_CONTENTS": {
                "ORIGIN": "Image courtesy of the U.S. Geological Survey",
                "DIGITAL_OBJECT_IDENTIFIER": "https://doi.org/10.5066/P9OGBGM6",
                "LANDSAT_PRODUCT_ID": scene.name,
                "PROCESSING_LEVEL": level_text,
                "COLLECTION_NUMBER": Bare(number),
                "COLLECTION_CATEGORY": category,
                "OUTPUT_FORMAT": "GEOTIFF",
                **file_names,
                "FILE_NAME_METADATA_ODL": f"{scene.name}_MTL.txt",
            },
            "IMAGE_ATTRIBUTES": image,
            "PROJECTION_ATTRIBUTES": {**projection, **_projection_keys(geobox, corners)},
            **level2,
            "LEVEL1_PROCESSING_RECORD": {
                "ORIGIN": "Image courtesy of the U.S. Geological Survey",
                "LANDSAT_SCENE_ID": scene_id,
                "LANDSAT_PRODUCT_ID": level1_name,
                "PROCESSING_LEVEL": "L1TP",
                "COLLECTION_CATEGORY": category,
                "OUTPUT_FORMAT": "GEOTIFF",
                "PROCESSING_SOFTWARE_VERSION": "LPGS_15.3.1c",
            },
        }
    }


# MTL FILE_NAME_* keys of Collection 2 files, by USGS band name.
_C2_FILE_KEYS = {
    "QA_PIXEL": "QUALITY_L1_PIXEL",
    "QA_RADSAT": "QUALITY_L1_RADIOMETRIC_SATURATION",
    "SR_QA_AEROSOL": "QUALITY_L2_AEROSOL",
    "SR_ATMOS_OPACITY": "ATMOSPHERIC_OPACITY",
    "SR_CLOUD_QA": "QUALITY_L2_SURFACE_REFLECTANCE_CLOUD",
    "BQA": "BAND_QUALITY",
}


def _file_key(band: str) -> str:
    if band.startswith("SR_B"):
        return f"BAND_{band.removeprefix('SR_B')}"
    if band.startswith("B") and band[1:].isdigit():
        return f"BAND_{band[1:]}"
    return _C2_FILE_KEYS.get(band, band.upper())


def _espa_xml(scene: UsgsScene, files: Mapping[str, str], bands: Mapping[str, np.ndarray]) -> bytes:
    ET.register_namespace("", ESPA_NAMESPACE)

    def element(
        parent: ET.Element, tag: str, text: str | None = None, **attributes: str
    ) -> ET.Element:
        child = ET.SubElement(parent, f"{{{ESPA_NAMESPACE}}}{tag}", attributes)
        if text is not None:
            child.text = text
        return child

    geobox = scene.geobox
    assert geobox.crs is not None and geobox.crs.epsg is not None
    root = ET.Element(f"{{{ESPA_NAMESPACE}}}espa_metadata", {"version": "2.0"})
    header = element(root, "global_metadata")
    spacecraft = MISSIONS[scene.platform][1]
    element(header, "data_provider", "USGS/EROS")
    element(header, "satellite", spacecraft)
    element(header, "acquisition_date", f"{scene.acquired:%Y-%m-%d}")
    element(header, "product_id", scene.name)
    element(header, "lpgs_metadata_file", f"{scene.name}_MTL.txt")
    box = geobox.boundingbox
    projection = element(
        header, "projection_information", projection="UTM", datum="WGS84", units="meters"
    )
    element(projection, "corner_point", location="UL", x=f"{box.left:.6f}", y=f"{box.top:.6f}")
    element(projection, "corner_point", location="LR", x=f"{box.right:.6f}", y=f"{box.bottom:.6f}")
    element(projection, "grid_origin", "UL")
    utm = element(projection, "utm_proj_params")
    element(utm, "zone_code", str(geobox.crs.epsg - 32600))
    listing = element(root, "bands")
    rows, cols = geobox.shape
    for band, file_name in files.items():
        pixels = bands[band]
        attributes = {
            "product": "sr_refl" if band.startswith("sr_") else "level2_qa",
            "source": "toa_refl",
            "name": band,
            "category": "image" if band.startswith("sr_band") else "qa",
            "data_type": pixels.dtype.name.upper(),
            "nlines": str(rows),
            "nsamps": str(cols),
            "app_version": "LaSRC_1.4.1",
        }
        if band.startswith("sr_band"):
            attributes.update(fill_value="-9999", scale_factor="0.000100")
        elif band == "sr_atmos_opacity":
            attributes.update(fill_value="-9999", scale_factor="0.001000")
        elif band in ("pixel_qa", "radsat_qa", "sr_aerosol"):
            attributes.update(fill_value="1")
        entry = element(listing, "band", **attributes)
        element(entry, "file_name", file_name)
        element(entry, "pixel_size", x="30", y="30", units="meters")
        if band.startswith("sr_band"):
            element(entry, "valid_range", min="-2000.000000", max="16000.000000")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


# -- packaging -----------------------------------------------------------------------------


def _package(folder: Path, target: Path, packaging: Packaging) -> Path:
    if packaging == "folder":
        return folder
    mode = "w:gz" if packaging == "tar.gz" else "w"
    partial = target.with_name(f".{target.name}.partial")
    with tarfile.open(partial, mode) as archive:  # type: ignore[call-overload]
        for path in sorted(folder.iterdir()):
            archive.add(path, arcname=path.name, recursive=False)
    os.replace(partial, target)
    shutil.rmtree(folder)
    return target


def write_usgs_scene(
    record: SceneRecord,
    out_dir: Path,
    *,
    collection: int = 2,
    packaging: Packaging | None = None,
    level1: bool = False,
    platform: str | None = None,
    processed: date | None = None,
) -> UsgsScene:
    """Write `record` as USGS ships it into `out_dir`: Collection 2 as a `.tar`, Collection 1
    (ESPA) as a `.tar.gz` unless `packaging` says otherwise. `platform` re-labels the scene
    (e.g. `landsat-9` from a Landsat 8 archive: the pixels are the same)."""
    chosen_platform = platform or record.platform
    _prefix, spacecraft, sensor, numbers = MISSIONS[chosen_platform]
    family = "oli" if sensor == "OLI_TIRS" else "tm"
    name = scene_name(
        record, collection, level="L1TP" if level1 else None, platform=chosen_platform,
        processed=processed,
    )  # fmt: skip
    chosen = packaging or ("tar" if collection == 2 else "tar.gz")
    suffix = {"tar": ".tar", "tar.gz": ".tar.gz", "folder": ""}[chosen]
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}{suffix}"
    folder = out_dir / name if chosen == "folder" else out_dir / f".{name}.staging"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    geobox = usgs_geobox(record.geobox)
    source = _read_record(record)
    bands = _bands(collection, level1, family, numbers, source)
    scene = UsgsScene(
        name=name,
        collection=collection,
        level1=level1,
        path=target,
        geobox=geobox,
        platform=chosen_platform,
        acquired=record.acquired,
        values=bands,
        source_values=source,
    )
    upper = collection == 2 or level1
    files = {band: f"{name}_{band}{'.TIF' if upper else '.tif'}" for band in bands}
    for band, file_name in files.items():
        _write_tiff(folder / file_name, bands[band], geobox, compress=upper)
    mtl_files = {_file_key(band): file_name for band, file_name in files.items()}
    mtl = _mtl(scene, record, mtl_files if (collection == 2 or level1) else {}, spacecraft, sensor)
    (folder / f"{name}_MTL.txt").write_text(render_mtl(mtl), encoding="utf-8")  # type: ignore[arg-type]
    if collection == 1 and not level1:
        (folder / f"{name}.xml").write_bytes(_espa_xml(scene, files, bands))
    _package(folder, target, chosen)
    return scene
