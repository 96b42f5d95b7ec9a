"""Band files of an L2A product to Cloud-Optimised GeoTIFFs, plus NDVI and a cloud mask.

Each band is decoded once, at its native resolution (10, 20 or 60 m), and written as a COG with
nodata 0. The BOA offset is applied here, so that the COGs hold surface reflectance x 10000 for
every processing baseline alike:

    reflectance x 10000 = (DN + BOA_ADD_OFFSET) * 10000 / BOA_QUANTIFICATION_VALUE

DN 0 stays 0 (nodata) and DN 65535 stays 65535 (saturated); a valid pixel whose reflectance
would fall below 1 (ESA allows slightly negative reflectances from baseline 04.00 on) becomes 1,
the smallest valid value, since 0 means nodata. Products before 04.00 have no offset and their
DN pass through unchanged. A datacube load therefore needs no per-dataset offset: the indexed
files are reflectance already, as `s2_esa_sr_granule` declares.

NDVI is `(nir - red) / (nir + red)` at 10 m from the offset-corrected B08 and B04, stored as
int16 scaled by 10000 (NDVI = value x 0.0001, as the reflectances are) with nodata -9999 where
either band has no data. The original workflow wrote float32; int16 holds NDVI to 0.0001, far
finer than its accuracy, in half the bytes and a third of the encoding time.

The cloud mask is derived from SCL at 20 m with fmask's codes: 0 no data (also saturated or
defective), 1 clear, 2 cloud (medium, high, thin cirrus), 3 cloud shadow, 4 snow, 5 water.

These functions block (GDAL decodes and encodes); the runner calls them from threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox
from odc.geo.xr import wrap_xr
from rasterio.errors import RasterioError
from rasterio.transform import Affine

from services.worker.ard.errors import CorruptScene
from services.worker.ard.safe import L2A_BANDS, SCL_BAND, L2ABand, SafeProduct
from services.worker.outputs.cog import write_cog_file
from services.worker.outputs.spec import BandSpec, CogOptions

REFLECTANCE_SCALE = 10000
NODATA = 0
SATURATED = 65535
# Rows per step when correcting offsets, so a full 10980 px tile never needs int32 copies whole.
ROWS_PER_STEP = 1024

REFLECTANCE = BandSpec(dtype="uint16", nodata=NODATA, overview_resampling="average")
CLASSES = BandSpec(dtype="uint8", nodata=NODATA, overview_resampling="mode")
NDVI_NODATA = -9999
NDVI = BandSpec(dtype="int16", nodata=NDVI_NODATA, overview_resampling="average")

# SCL class -> fmask code; see the module's docstring.
CLOUD_MASK_CODES = np.array([0, 0, 1, 3, 1, 1, 5, 1, 2, 2, 2, 4], dtype=np.uint8)
CLOUD_MASK_NAME = "cloud_mask"
NDVI_NAME = "ndvi"


@dataclass(frozen=True)
class OutputBand:
    """One COG of the ARD product: its measurement name, file label and resolution."""

    measurement: str
    label: str
    resolution: int
    spec: BandSpec
    common_name: str | None = None
    wavelength_um: float | None = None
    # Reflectances carry scale 0.0001 in STAC; classes and NDVI none.
    scale: float | None = None


@dataclass(frozen=True)
class ConvertedBand:
    band: OutputBand
    path: Path
    geobox: GeoBox


def reflectance_band(band: L2ABand) -> OutputBand:
    return OutputBand(
        measurement=band.measurement,
        label=f"{band.code}_{band.resolution}m",
        resolution=band.resolution,
        spec=REFLECTANCE,
        common_name=band.common_name,
        wavelength_um=band.wavelength_um,
        scale=1 / REFLECTANCE_SCALE,
    )


OUTPUT_BANDS: tuple[OutputBand, ...] = (
    *(reflectance_band(band) for band in L2A_BANDS),
    OutputBand(SCL_BAND.measurement, "SCL_20m", 20, CLASSES),
    OutputBand(NDVI_NAME, "NDVI_10m", 10, NDVI, scale=1 / REFLECTANCE_SCALE),
    OutputBand(CLOUD_MASK_NAME, "CLOUD_MASK_20m", 20, CLASSES),
)
OUTPUT_BY_NAME = {band.measurement: band for band in OUTPUT_BANDS}


def band_file_name(scene: str, band: OutputBand) -> str:
    return f"{scene}_{band.label}.tif"


def read_band(path: Path, expected: GeoBox | None = None) -> tuple[np.ndarray, GeoBox]:
    """A band file's pixels and grid; an unreadable file is a `CorruptScene` naming it."""
    if not path.is_file():
        raise CorruptScene(f"band file {path.name} is missing from the product ({path})")
    try:
        with rasterio.open(path) as source:
            pixels = source.read(1)
            geobox = GeoBox(source.shape, source.transform, source.crs)
    except (RasterioError, OSError) as error:
        raise CorruptScene(f"band file {path.name} is corrupt or unreadable: {error}") from None
    if expected is not None and (geobox.shape != expected.shape or geobox.crs != expected.crs):
        raise CorruptScene(
            f"band file {path.name} is {geobox.shape.x}x{geobox.shape.y} px in {geobox.crs}, "
            f"but the tile metadata says {expected.shape.x}x{expected.shape.y} px in {expected.crs}"
        )
    return pixels, geobox


def to_reflectance(numbers: np.ndarray, offset: int, quantification: float) -> np.ndarray:
    """Digital numbers to reflectance x 10000 (uint16, nodata 0); see the module's docstring."""
    if offset == 0 and quantification == REFLECTANCE_SCALE:
        return numbers.astype(np.uint16, copy=False)
    factor = REFLECTANCE_SCALE / quantification
    result = np.empty(numbers.shape, dtype=np.uint16)
    for start in range(0, numbers.shape[0], ROWS_PER_STEP):
        rows = numbers[start : start + ROWS_PER_STEP]
        values = rows.astype(np.int32) + offset
        if factor != 1:
            values = np.rint(values * factor).astype(np.int32)
        step = np.clip(values, 1, SATURATED).astype(np.uint16)
        step[rows == NODATA] = NODATA
        step[rows == SATURATED] = SATURATED
        result[start : start + ROWS_PER_STEP] = step
    return result


def ndvi(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """(nir - red) / (nir + red) x 10000 as int16, -9999 where either is nodata."""
    result = np.empty(red.shape, dtype=np.int16)
    for start in range(0, red.shape[0], ROWS_PER_STEP):
        r = red[start : start + ROWS_PER_STEP].astype(np.float32)
        n = nir[start : start + ROWS_PER_STEP].astype(np.float32)
        total = n + r
        missing = (r == NODATA) | (n == NODATA)
        # Valid reflectances are at least 1, so only a missing pixel could divide by zero.
        scaled = np.rint((n - r) / np.where(missing, 1, total) * REFLECTANCE_SCALE)
        step = scaled.astype(np.int16)
        step[missing] = NDVI_NODATA
        result[start : start + ROWS_PER_STEP] = step
    return result


def cloud_mask(scene_classification: np.ndarray) -> np.ndarray:
    """fmask-style codes from SCL; classes beyond ESA's eleven count as no data."""
    known = scene_classification < len(CLOUD_MASK_CODES)
    codes = CLOUD_MASK_CODES[np.where(known, scene_classification, 0)]
    return codes.astype(np.uint8)


def write_band(
    pixels: np.ndarray, geobox: GeoBox, band: OutputBand, folder: Path, scene: str, cog: CogOptions
) -> ConvertedBand:
    path = folder / band_file_name(scene, band)
    array = wrap_xr(pixels, geobox, nodata=band.spec.nodata)
    array.name = band.measurement
    write_cog_file(array, path, band.spec, cog)
    return ConvertedBand(band=band, path=path, geobox=geobox)


def _expected_grid(product: SafeProduct, resolution: int) -> GeoBox | None:
    grid = product.metadata.grids.get(resolution)
    if grid is None:
        return None
    transform = Affine(resolution, 0, grid.ulx, 0, -resolution, grid.uly)
    return GeoBox((grid.rows, grid.cols), transform, product.metadata.crs)


def convert_scene(
    product: SafeProduct, folder: Path, scene: str, *, threads: int, cog: CogOptions
) -> list[ConvertedBand]:
    """Every band, NDVI and the cloud mask as COGs in `folder`, `threads` bands at a time."""
    folder.mkdir(parents=True, exist_ok=True)
    metadata = product.metadata
    kept: dict[str, tuple[np.ndarray, GeoBox]] = {}

    def reflectance(band: L2ABand) -> ConvertedBand:
        numbers, geobox = read_band(product.file_of(band), _expected_grid(product, band.resolution))
        pixels = to_reflectance(
            numbers, metadata.offset_of(band.code), metadata.quantification_value
        )
        if band.measurement in ("red", "nir"):
            kept[band.measurement] = (pixels, geobox)
        return write_band(pixels, geobox, reflectance_band(band), folder, scene, cog)

    def classification() -> list[ConvertedBand]:
        path = product.file_of(SCL_BAND)
        classes, geobox = read_band(path, _expected_grid(product, SCL_BAND.resolution))
        if classes.dtype != np.uint8:
            if classes.max(initial=0) > 255:
                raise CorruptScene(f"band file {path.name} holds values above 255, not SCL classes")
            classes = classes.astype(np.uint8)
        return [
            write_band(classes, geobox, OUTPUT_BY_NAME[SCL_BAND.measurement], folder, scene, cog),
            write_band(
                cloud_mask(classes), geobox, OUTPUT_BY_NAME[CLOUD_MASK_NAME], folder, scene, cog
            ),
        ]

    def vegetation_index() -> ConvertedBand:
        red, geobox = kept.pop("red")
        nir, _ = kept.pop("nir")
        return write_band(ndvi(red, nir), geobox, OUTPUT_BY_NAME[NDVI_NAME], folder, scene, cog)

    # The 10 m bands first: the largest, and NDVI waits for two of them.
    ordered = sorted(L2A_BANDS, key=lambda band: (band.resolution, band.code))
    pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="ard-band")
    try:
        futures = {band.measurement: pool.submit(reflectance, band) for band in ordered}
        classes = pool.submit(classification)
        futures["red"].result()
        futures["nir"].result()
        index = pool.submit(vegetation_index)
        converted = [future.result() for future in futures.values()]
        converted.append(index.result())
        converted.extend(classes.result())
    except BaseException:
        # One broken band fails the scene: do not decode the rest.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return converted
