"""Landsat bands: what each mission and collection delivers, what it becomes, and the COGs.

Band numbers differ by sensor (USGS band designations): TM and ETM+ band 1 is blue, 2 green,
3 red, 4 near infrared, 5 SWIR 1, 7 SWIR 2; OLI (Landsat 8 and 9) band 1 is coastal aerosol,
2 blue, 3 green, 4 red, 5 near infrared, 6 SWIR 1, 7 SWIR 2.

* Collection 1 (ESPA surface reflectance) becomes the `lsN_usgs_sr_scene` products with their
  original measurement names (`blue` ... `swir2`, `pixel_qa`): `sr_bandN` int16 reflectance x
  10,000 with nodata -9999 and `pixel_qa` as they are (a fill value other than -9999 in the ESPA
  XML is relabelled -9999). OLI's `sr_band1` (`coastal_aerosol`), `radsat_qa`, and
  `sr_aerosol` (LaSRC) or `sr_atmos_opacity`/`sr_cloud_qa` (LEDAPS) come along when present.
* Collection 2 Level-2 becomes `lsN_c2l2_sr`, stored as USGS stores it: `SR_Bn` uint16 with
  fill 0 and reflectance = DN x 0.0000275 - 0.2, `QA_PIXEL`, `QA_RADSAT`, and `SR_QA_AEROSOL`
  (OLI) or `SR_ATMOS_OPACITY`/`SR_CLOUD_QA` (TM/ETM+), named as the product definitions name
  them (`blue`, `nir08`, `swir16`, `qa_pixel`, ...). A scene whose MTL gives another
  `REFLECTANCE_MULT/ADD_BAND_n` has those bands re-encoded to the declared scale and offset, so
  every dataset of a product means the same thing by a value.

Each file is decoded once on the scene's grid (checked against the MTL's) and written as a COG;
`threads` files at a time. These functions block; the runner calls them from a thread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
from odc.geo.geobox import GeoBox

from services.worker.ard.bands import ConvertedBand, OutputBand, read_band, write_band
from services.worker.ard.errors import CorruptScene
from services.worker.outputs.spec import BandSpec, CogOptions
from shared.catalogue import C2_REFLECTANCE_OFFSET, C2_REFLECTANCE_SCALE

Family = Literal["oli", "tm"]
RESOLUTION = 30
C1_SCALE = 0.0001
C1_NODATA = -9999
C2_NODATA = 0
C2_MAX = 65535
# Rows per step when re-encoding, so a full scene never needs float copies whole.
ROWS_PER_STEP = 1024


@dataclass(frozen=True)
class Mission:
    """One Landsat satellite: its eo3 platform, sensor family and the product of each collection."""

    satellite: str
    platform: str
    family: Family
    sensor_letters: frozenset[str]
    products: Mapping[int, str]


MISSIONS: Mapping[str, Mission] = {
    "05": Mission(
        "05", "landsat-5", "tm", frozenset("T"), {1: "ls5_usgs_sr_scene", 2: "ls5_c2l2_sr"}
    ),
    "07": Mission(
        "07", "landsat-7", "tm", frozenset("E"), {1: "ls7_usgs_sr_scene", 2: "ls7_c2l2_sr"}
    ),
    "08": Mission(
        "08", "landsat-8", "oli", frozenset("CO"), {1: "ls8_usgs_sr_scene", 2: "ls8_c2l2_sr"}
    ),
    "09": Mission("09", "landsat-9", "oli", frozenset("CO"), {2: "ls9_c2l2_sr"}),
}


@dataclass(frozen=True)
class LandsatBand:
    """One file of a Landsat product and the measurement it becomes."""

    measurement: str
    #: USGS's name of the band: `sr_band2` (ESPA), `SR_B2`, `QA_PIXEL` (Collection 2).
    source: str
    spec: BandSpec
    common_name: str | None = None
    wavelength_um: float | None = None
    #: Reflectance = value x scale + offset (STAC raster); None for flags.
    scale: float | None = None
    offset: float | None = None
    #: Collection 2: the MTL's `FILE_NAME_<key>` that names the file.
    mtl_key: str | None = None
    required: bool = True
    reflectance_band: int | None = None

    def output(self) -> OutputBand:
        return OutputBand(
            measurement=self.measurement,
            label=self.source,
            resolution=RESOLUTION,
            spec=self.spec,
            common_name=self.common_name,
            wavelength_um=self.wavelength_um,
            scale=self.scale,
        )


def _flags(dtype: str, nodata: int) -> BandSpec:
    # Bit flags must never be averaged into values that mean something else.
    return BandSpec(dtype=dtype, nodata=nodata, units="bit_index", overview_resampling="nearest")


C1_REFLECTANCE = BandSpec(dtype="int16", nodata=C1_NODATA, overview_resampling="average")
C2_REFLECTANCE = BandSpec(dtype="uint16", nodata=C2_NODATA, overview_resampling="average")
ATMOS_OPACITY = BandSpec(dtype="int16", nodata=-9999, overview_resampling="average")

# (common name, our Collection 1 name, Collection 2 name) by band number, per sensor family,
# with centre wavelengths (micrometres).
_REFLECTIVE: Mapping[Family, tuple[tuple[int, str, str, str, float], ...]] = {
    "oli": (
        (1, "coastal", "coastal_aerosol", "coastal", 0.443),
        (2, "blue", "blue", "blue", 0.482),
        (3, "green", "green", "green", 0.561),
        (4, "red", "red", "red", 0.655),
        (5, "nir08", "nir", "nir08", 0.865),
        (6, "swir16", "swir1", "swir16", 1.609),
        (7, "swir22", "swir2", "swir22", 2.201),
    ),
    "tm": (
        (1, "blue", "blue", "blue", 0.485),
        (2, "green", "green", "green", 0.56),
        (3, "red", "red", "red", 0.66),
        (4, "nir08", "nir", "nir08", 0.835),
        (5, "swir16", "swir1", "swir16", 1.65),
        (7, "swir22", "swir2", "swir22", 2.215),
    ),
}


def collection1_bands(family: Family) -> tuple[LandsatBand, ...]:
    """ESPA's bands as `lsN_usgs_sr_scene` names them; extras (not in the product) optional."""
    reflective = tuple(
        LandsatBand(
            measurement=c1_name,
            source=f"sr_band{number}",
            spec=C1_REFLECTANCE,
            common_name=common,
            wavelength_um=wavelength,
            scale=C1_SCALE,
            offset=0.0,
            required=c1_name != "coastal_aerosol",
            reflectance_band=number,
        )
        for number, common, c1_name, _c2_name, wavelength in _REFLECTIVE[family]
    )
    quality = (
        LandsatBand("pixel_qa", "pixel_qa", _flags("uint16", 1)),
        LandsatBand("radsat_qa", "radsat_qa", _flags("uint16", 1), required=False),
    )
    if family == "oli":
        atmosphere: tuple[LandsatBand, ...] = (
            LandsatBand("sr_aerosol", "sr_aerosol", _flags("uint8", 1), required=False),
        )
    else:
        atmosphere = (
            LandsatBand(
                "sr_atmos_opacity", "sr_atmos_opacity", ATMOS_OPACITY, scale=0.001,
                required=False,
            ),
            LandsatBand("sr_cloud_qa", "sr_cloud_qa", _flags("uint8", 255), required=False),
        )  # fmt: skip
    return (*reflective, *quality, *atmosphere)


def collection2_bands(family: Family) -> tuple[LandsatBand, ...]:
    """Level-2 bands as `lsN_c2l2_sr` names them; all are in the product, so all required."""
    reflective = tuple(
        LandsatBand(
            measurement=c2_name,
            source=f"SR_B{number}",
            spec=C2_REFLECTANCE,
            common_name=common,
            wavelength_um=wavelength,
            scale=C2_REFLECTANCE_SCALE,
            offset=C2_REFLECTANCE_OFFSET,
            mtl_key=f"BAND_{number}",
            reflectance_band=number,
        )
        for number, common, _c1_name, c2_name, wavelength in _REFLECTIVE[family]
    )
    quality = (
        LandsatBand("qa_pixel", "QA_PIXEL", _flags("uint16", 1), mtl_key="QUALITY_L1_PIXEL"),
        LandsatBand(
            "qa_radsat", "QA_RADSAT", _flags("uint16", 65535),
            mtl_key="QUALITY_L1_RADIOMETRIC_SATURATION",
        ),
    )  # fmt: skip
    if family == "oli":
        atmosphere: tuple[LandsatBand, ...] = (
            LandsatBand(
                "qa_aerosol", "SR_QA_AEROSOL", _flags("uint8", 1), mtl_key="QUALITY_L2_AEROSOL"
            ),
        )
    else:
        atmosphere = (
            LandsatBand(
                "atmos_opacity", "SR_ATMOS_OPACITY", ATMOS_OPACITY, scale=0.001,
                mtl_key="ATMOSPHERIC_OPACITY",
            ),
            LandsatBand(
                "qa_cloud", "SR_CLOUD_QA", _flags("uint8", 255),
                mtl_key="QUALITY_L2_SURFACE_REFLECTANCE_CLOUD",
            ),
        )  # fmt: skip
    return (*reflective, *quality, *atmosphere)


def bands_of(collection: int, family: Family) -> tuple[LandsatBand, ...]:
    return collection1_bands(family) if collection == 1 else collection2_bands(family)


@dataclass(frozen=True)
class BandSource:
    """Where one band's pixels are, and how they differ from what the product stores."""

    band: LandsatBand
    path: Path
    #: The file's fill value, where it is not the product's nodata (relabelled on the way).
    fill: int | None = None
    #: Collection 2 (multiply, add) from the MTL, where not the product's scale and offset.
    rescale: tuple[float, float] | None = None


def plain_file_name(file_name: str, listed_in: str) -> str:
    """A band file name from the product's metadata, refused unless it names a file in the
    scene's own folder (no folders, no `..`)."""
    if (
        not file_name
        or PurePosixPath(file_name).name != file_name
        or file_name in (".", "..")
        or "\\" in file_name
    ):
        raise CorruptScene(
            f"{listed_in} names band file {file_name!r}, which is not a file in the scene's folder"
        )
    return file_name


def default_file(root: Path, scene: str, band: LandsatBand) -> Path:
    """USGS's own naming, `{scene}_{band}.TIF` (Collection 2) or `.tif` (ESPA)."""
    for suffix in (".TIF", ".tif"):
        path = root / f"{scene}_{band.source}{suffix}"
        if path.is_file():
            return path
    return root / f"{scene}_{band.source}{'.TIF' if band.mtl_key else '.tif'}"


def _same(first: float, second: float) -> bool:
    return math.isclose(first, second, rel_tol=1e-9, abs_tol=1e-12)


def reflectance_rescale(
    band: LandsatBand, rescaling: Mapping[int, tuple[float, float]], source: str
) -> tuple[float, float] | None:
    """Collection 2: the MTL's (multiply, add) for `band` when it is not the declared encoding."""
    if band.reflectance_band is None or band.scale is None or band.offset is None:
        return None
    given = rescaling.get(band.reflectance_band)
    if given is None:
        raise CorruptScene(
            f"{source} has no REFLECTANCE_MULT_BAND_{band.reflectance_band} / "
            f"REFLECTANCE_ADD_BAND_{band.reflectance_band}: the scene is not a Level-2 product"
        )
    if _same(given[0], band.scale) and _same(given[1], band.offset):
        return None
    return given


def reencode(numbers: np.ndarray, multiply: float, add: float) -> np.ndarray:
    """DN under (multiply, add) to DN under the product's 0.0000275 / -0.2; 0 stays fill."""
    result = np.empty(numbers.shape, dtype=np.uint16)
    for start in range(0, numbers.shape[0], ROWS_PER_STEP):
        rows = numbers[start : start + ROWS_PER_STEP]
        reflectance = rows.astype(np.float64) * multiply + add
        values = np.rint((reflectance - C2_REFLECTANCE_OFFSET) / C2_REFLECTANCE_SCALE)
        step = np.clip(values, 1, C2_MAX).astype(np.uint16)
        step[rows == C2_NODATA] = C2_NODATA
        result[start : start + ROWS_PER_STEP] = step
    return result


def _as_dtype(pixels: np.ndarray, band: LandsatBand, path: Path) -> np.ndarray:
    target = np.dtype(band.spec.dtype)
    if pixels.dtype == target:
        return pixels
    if pixels.dtype.kind in "iu" and pixels.size:
        limits = np.iinfo(target)
        if limits.min <= int(pixels.min()) and int(pixels.max()) <= limits.max:
            return pixels.astype(target)
    raise CorruptScene(
        f"band file {path.name} holds {pixels.dtype} values that are not {band.source}'s "
        f"{target} (expected {target} pixels)"
    )


def _read(source: BandSource, geobox: GeoBox) -> np.ndarray:
    pixels, found = read_band(source.path, geobox)
    tolerance = abs(geobox.resolution.x) * 1e-6
    if not all(
        abs(a - b) <= tolerance for a, b in zip(found.transform, geobox.transform, strict=False)
    ):
        raise CorruptScene(
            f"band file {source.path.name} lies at {tuple(found.transform)[:6]}, not on the "
            f"MTL's grid {tuple(geobox.transform)[:6]}"
        )
    pixels = _as_dtype(pixels, source.band, source.path)
    nodata = source.band.spec.nodata
    if source.fill is not None and nodata is not None and source.fill != nodata:
        pixels = np.where(pixels == source.fill, nodata, pixels).astype(pixels.dtype)
    if source.rescale is not None:
        pixels = reencode(pixels, *source.rescale)
    return pixels


def convert_bands(
    sources: Sequence[BandSource],
    geobox: GeoBox,
    folder: Path,
    scene: str,
    *,
    threads: int,
    cog: CogOptions,
) -> list[ConvertedBand]:
    """Every band as a COG in `folder` (`{scene}_{band}.tif`), `threads` at a time, in order."""
    folder.mkdir(parents=True, exist_ok=True)

    def convert(source: BandSource) -> ConvertedBand:
        pixels = _read(source, geobox)
        return write_band(pixels, geobox, source.band.output(), folder, scene, cog)

    pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="ard-landsat")
    try:
        futures = [pool.submit(convert, source) for source in sources]
        converted = [future.result() for future in futures]
    except BaseException:
        # One broken band fails the scene: do not decode the rest.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return converted
