"""Builders shared by the product tests: small synthetic cubes shaped as `dc.load` returns them.

A scene is a 64 x 64 tile at 30 m on the EPSG:3460 grid, a few dates, with a coastline whose
position is known, clouds, shadows, fill and a block where one band alone is missing. The mask
codes are written out here from the USGS and ESA definitions, independently of the sensor
module, so that the tests check it rather than repeat it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask.array
import numpy as np
import numpy.typing as npt
import pandas as pd
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from services.worker.products import ProductContext, get_product, sensor_for

PIXEL = 30.0
TILE_LEFT, TILE_TOP = 2130000.0, 3501600.0
LANDSAT_PRODUCTS = ("ls5_usgs_sr_scene", "ls7_usgs_sr_scene", "ls8_usgs_sr_scene")
ALL_PRODUCTS = (*LANDSAT_PRODUCTS, "s2_esa_sr_granule")
BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")


@dataclass(frozen=True)
class MaskCodes:
    """Codes of the mask band, per USGS pixel_qa (Collection 1 SR) and ESA SCL."""

    band: str
    land: tuple[int, ...]
    water: tuple[int, ...]
    cloud: tuple[int, ...]
    shadow: tuple[int, ...]
    fill: int

    @property
    def clear(self) -> tuple[int, ...]:
        return self.land + self.water


# pixel_qa bits: 0 fill, 1 clear, 2 water, 3 shadow, 4 snow, 5 cloud, 6-7 cloud confidence,
# 8-9 cirrus confidence (L8), 10 terrain occlusion (L8).
LANDSAT_5_7 = MaskCodes("pixel_qa", (66, 130), (68, 132), (224, 160), (72, 136), 1)
LANDSAT_8 = MaskCodes(
    "pixel_qa",
    (322, 386, 834, 898, 1346),
    (324, 388, 836, 900, 1348),
    (480, 992, 2800),
    (328, 392),
    1,
)
# SCL: 0 no data, 2 dark area, 3 cloud shadow, 4 vegetation, 5 not vegetated, 6 water,
# 7 unclassified, 8 cloud medium, 9 cloud high, 10 thin cirrus, 11 snow.
SENTINEL_2 = MaskCodes("scene_classification", (2, 4, 5, 7), (6,), (8, 9, 10, 11), (3,), 0)

MASK_CODES = {
    "ls5_usgs_sr_scene": LANDSAT_5_7,
    "ls7_usgs_sr_scene": LANDSAT_5_7,
    "ls8_usgs_sr_scene": LANDSAT_8,
    "s2_esa_sr_granule": SENTINEL_2,
}

# Surface reflectance x 10000 of the two surfaces the scene is made of.
LAND = {"blue": 450, "green": 800, "red": 700, "nir": 2800, "swir1": 2000, "swir2": 1200}
WATER = {"blue": 650, "green": 750, "red": 450, "nir": 250, "swir1": 120, "swir2": 60}
CLOUD = 6500
SHADOW = 150

#: Map coordinates (metres) and what is true of them.
Metres = npt.NDArray[np.float64]
Truth = npt.NDArray[np.bool_]
Coast = Callable[[Metres, Metres], Truth]


def tile_geobox(size: int = 64) -> GeoBox:
    return GeoBox.from_bbox(
        (TILE_LEFT, TILE_TOP - size * PIXEL, TILE_LEFT + size * PIXEL, TILE_TOP),
        "EPSG:3460",
        resolution=PIXEL,
    )


def straight_coast(x: Metres, y: Metres) -> Truth:
    """Water east of a slanted line through the tile (0.3 m north per metre east)."""
    return y < straight_coast_y(x)


def straight_coast_y(x: Metres) -> Metres:
    return TILE_TOP - 700.0 - 0.3 * (x - TILE_LEFT)


def straight_coast_distance(x: Metres, y: Metres) -> Metres:
    # Distance to y = c - 0.3 (x - left), i.e. 0.3 x + y - (c + 0.3 left) = 0.
    offset = TILE_TOP - 700.0 + 0.3 * TILE_LEFT
    return np.abs(0.3 * x + y - offset) / np.hypot(0.3, 1.0)


ISLAND_CENTRE = (TILE_LEFT + 980.0, TILE_TOP - 940.0)
ISLAND_RADIUS = 610.0


def island_coast(x: Metres, y: Metres) -> Truth:
    """Water all round a round island in the middle of the tile."""
    return np.hypot(x - ISLAND_CENTRE[0], y - ISLAND_CENTRE[1]) > ISLAND_RADIUS


def island_distance(x: Metres, y: Metres) -> Metres:
    return np.abs(np.hypot(x - ISLAND_CENTRE[0], y - ISLAND_CENTRE[1]) - ISLAND_RADIUS)


def water_fraction(geobox: GeoBox, coast: Coast, samples: int = 8) -> npt.NDArray[np.float64]:
    """Share of each pixel's area that is water, from `samples` x `samples` points per pixel."""
    ny, nx = geobox.shape
    offsets = (np.arange(samples) + 0.5) / samples
    cols = (np.arange(nx)[:, None] + offsets[None, :]).ravel()
    rows = (np.arange(ny)[:, None] + offsets[None, :]).ravel()
    xs = TILE_LEFT + cols * PIXEL
    ys = TILE_TOP - rows * PIXEL
    wet = coast(xs[None, :], ys[:, None]).astype("float64")
    return wet.reshape(ny, samples, nx, samples).mean(axis=(1, 3))


@dataclass
class Scene:
    """A synthetic stack: the cube as `dc.load` gives it and the numpy arrays it was made from."""

    product: str
    geobox: GeoBox
    times: npt.NDArray[np.datetime64]
    #: measurement name -> (time, y, x) array as stored (int16 Landsat, uint16 Sentinel-2)
    raw: dict[str, npt.NDArray[np.integer]]
    water_fraction: list[npt.NDArray[np.float64]]
    codes: MaskCodes
    nodata: int
    cube: xr.Dataset = field(init=False)

    def __post_init__(self) -> None:
        self.cube = as_loaded(self)

    @property
    def mask(self) -> npt.NDArray[np.integer]:
        return self.raw[self.codes.band]

    def reflectance_int16(self, band: str) -> npt.NDArray[np.int16]:
        """`band` as int16 x 10000 with nodata -9999, whatever the sensor stores."""
        values = self.raw[band]
        if values.dtype == np.int16:
            return values.astype(np.int16)
        converted = np.minimum(values, 32767).astype(np.int16)
        return np.where(values == self.nodata, np.int16(-9999), converted)

    def clear(self) -> npt.NDArray[np.bool_]:
        return np.isin(self.mask, self.codes.clear)

    def wet(self) -> npt.NDArray[np.bool_]:
        return np.isin(self.mask, self.codes.water)

    def cloud(self) -> npt.NDArray[np.bool_]:
        """Cloud as buffering sees it: pixel_qa's cloud bit, SCL 8-10 (snow, 11, is not cloud)."""
        if self.codes.band == "pixel_qa":
            return (self.mask & 32) != 0
        return np.isin(self.mask, [code for code in self.codes.cloud if code != 11])

    def shadow(self) -> npt.NDArray[np.bool_]:
        if self.codes.band == "pixel_qa":
            return (self.mask & 8) != 0
        return np.isin(self.mask, self.codes.shadow)

    def usable(
        self,
        bands: Sequence[str],
        cloud_filter: Sequence[tuple[str, int]] = (),
        shadow_filter: Sequence[tuple[str, int]] = (),
    ) -> npt.NDArray[np.bool_]:
        """Clear, outside the buffered cloud and shadow, every band a reflectance in (0, 1]."""
        from devtools.validate.references import buffer

        keep = self.clear()
        if cloud_filter:
            keep &= ~buffer(self.cloud(), cloud_filter)
        if shadow_filter:
            keep &= ~buffer(self.shadow(), shadow_filter)
        for band in bands:
            values = self.reflectance_int16(band)
            keep &= (values >= 1) & (values <= 10000)
        return keep


def acquisition_times(dates: int) -> npt.NDArray[np.datetime64]:
    """Every 16 days from 5 January 2019, at 22:15 UTC (mid-morning in Fiji)."""
    start = pd.Timestamp("2019-01-05T22:15:00")
    return np.array([np.datetime64(start + pd.Timedelta(days=16 * n), "ns") for n in range(dates)])


def synthetic_scene(
    product: str,
    *,
    dates: int = 8,
    size: int = 64,
    coasts: Sequence[Coast] | None = None,
    seed: int = 0,
    clouds: bool = True,
    intertidal: bool = False,
) -> Scene:
    """A stack over the tile whose coastline on date t is `coasts[t % len(coasts)]`.

    With `clouds`, each date has a cloud, its shadow, and date 1 a strip of fill and a block
    where red alone is missing. With `intertidal`, columns 40-43 are water on 4 of the first 10
    dates (share 0.4) and columns 44-47 on 5 (share 0.5), and never cloudy.
    """
    rng = np.random.default_rng(seed)
    codes = MASK_CODES[product]
    landsat = product in LANDSAT_PRODUCTS
    nodata = -9999 if landsat else 0
    dtype = np.int16 if landsat else np.uint16
    geobox = tile_geobox(size)
    coasts = list(coasts or [straight_coast])
    fractions = [water_fraction(geobox, coast) for coast in coasts]
    times = acquisition_times(dates)
    shape = (dates, size, size)

    bands: dict[str, npt.NDArray[np.float64]] = {}
    share = np.stack([fractions[t % len(fractions)] for t in range(dates)])
    # Land varies along rows (greener to the south) so that NDVI and cover vary too.
    greenness = np.linspace(0.7, 1.3, size)[None, :, None]
    for band in BANDS:
        land = LAND[band] * (greenness if band == "nir" else 1.0)
        surface = share * WATER[band] + (1 - share) * land
        bands[band] = surface + rng.normal(0, 25, shape)

    wet = share >= 0.5
    mask = np.empty(shape, dtype=np.uint16 if landsat else np.uint8)
    land_codes = rng.choice(codes.land, shape)
    water_codes = rng.choice(codes.water, shape)
    mask[:] = np.where(wet, water_codes, land_codes)

    if intertidal:
        for columns, wet_dates in ((slice(40, 44), 4), (slice(44, 48), 5)):
            for t in range(dates):
                is_wet = t < wet_dates if t < 10 else False
                for band in BANDS:
                    level = WATER[band] if is_wet else LAND[band]
                    bands[band][t, :, columns] = level + rng.normal(0, 25, (size, 4))
                pool = codes.water if is_wet else codes.land
                mask[t, :, columns] = rng.choice(pool, (size, 4))

    if clouds:
        for t in range(dates):
            top, left = rng.integers(0, size - 16, 2)
            rows, cols = slice(top, top + 14), slice(left, left + 14)
            shadow_rows = slice(top + 14, min(top + 18, size))
            if intertidal:
                cols = slice(min(left, 24), min(left, 24) + 14)
            mask[t, rows, cols] = rng.choice(codes.cloud, (14, 14))
            mask[t, shadow_rows, cols] = codes.shadow[0]
            for band in BANDS:
                bands[band][t, rows, cols] = CLOUD + rng.normal(0, 200, (14, 14))
                bands[band][t, shadow_rows, cols] = SHADOW

    raw: dict[str, npt.NDArray[np.integer]] = {
        band: np.clip(np.rint(values), 1, 12000).astype(dtype) for band, values in bands.items()
    }
    if clouds and dates > 1:
        # Date 1: a strip of fill at the top, and red alone missing in a block the mask calls clear.
        mask[1, :3, :] = codes.fill
        for band in BANDS:
            raw[band][1, :3, :] = nodata
        raw["red"][1, 20:26, 5:11] = nodata
    raw[codes.band] = mask
    return Scene(
        product=product,
        geobox=geobox,
        times=times,
        raw=raw,
        water_fraction=fractions,
        codes=codes,
        nodata=nodata,
    )


def as_loaded(scene: Scene, chunk: int = 32) -> xr.Dataset:
    """What `dc.load(..., group_by="solar_day", dask_chunks={"time": 1, ...})` returns."""
    coords = {"time": scene.times, **xr_coords(scene.geobox)}
    variables = {}
    for name, values in scene.raw.items():
        is_mask = name == scene.codes.band
        nodata = scene.codes.fill if is_mask else scene.nodata
        variables[name] = xr.DataArray(
            dask.array.from_array(values, chunks=(1, chunk, chunk)),
            dims=("time", "y", "x"),
            coords=coords,
            attrs={
                "units": "bit_index" if is_mask else "1",
                "nodata": nodata,
                "crs": "EPSG:3460",
                "grid_mapping": "spatial_ref",
            },
            name=name,
        )
    return xr.Dataset(variables, attrs={"crs": "EPSG:3460"})


def loaded(scene: Scene, measurements: Sequence[str]) -> xr.Dataset:
    """The cube with just `measurements`, as a load of those would be."""
    return scene.cube[list(measurements)]


def run_product(
    job_code: str,
    scene: Scene,
    options: dict[str, str] | None = None,
    context: ProductContext | None = None,
) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """What the worker does with a loaded cube: check, compute, then the vectors of the result."""
    product = get_product(job_code)
    sensor = sensor_for(scene.product)
    options = options or {}
    product.check(sensor, options)
    cube = loaded(scene, product.measurements(sensor))
    result = product.compute(cube, sensor, options, context or ProductContext()).compute()
    return result, product.vectors(result, options)
