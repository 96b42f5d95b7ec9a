"""Synthetic Sentinel-2 scenes in ESA's SAFE layout, with the truth they were made from.

A scene is a real product folder, as the Copernicus hubs deliver it::

    S2A_MSIL2A_20190812T235741_N0213_R030_T56LRR_20190813T014708.SAFE/
        MTD_MSIL2A.xml                         product metadata (baseline, quantification, offsets)
        manifest.safe
        DATASTRIP/DS_..._S20190812T235741/MTD_DS.xml
        GRANULE/L2A_T56LRR_A021554_20190812T235741/
            MTD_TL.xml                         tile metadata (sensing time, angles, cloud cover)
            IMG_DATA/R10m/T56LRR_20190812T235741_B02_10m.jp2   B02 B03 B04 B08
            IMG_DATA/R20m/T56LRR_20190812T235741_B05_20m.jp2   B05 B06 B07 B8A B11 B12 SCL
            IMG_DATA/R60m/T56LRR_20190812T235741_B01_60m.jp2   B01 B09

Bands are lossless JPEG 2000 (OpenJPEG, `REVERSIBLE=YES`, `QUALITY=100`), so what is read back
is exactly what was written. Every scene is a deterministic function of its name, size and seed.

Its `truth` holds the surface reflectance (x 10000, nodata 0) of every band at its native
resolution and the scene classification (SCL), which is what an ARD pipeline must deliver. The
digital numbers in the files are `reflectance * quantification / 10000 - BOA_ADD_OFFSET`: from
processing baseline 04.00 on, ESA adds 1000 to every valid pixel and says so in MTD_MSIL2A.xml.

    scene = write_safe(archive_dir, name=SEED_SCENE_NAME, size=240, seed=1)
    scene.truth.reflectance["red"]     # (240, 240) uint16
    zip_safe(scene.path, archive_dir)  # the same product as S2A_....zip
"""

from __future__ import annotations

import re
import shutil
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import rasterio
from rasterio.transform import Affine, from_origin

from shared.messages import SENTINEL2_SCENE

SEED_SCENE_NAME = "S2A_MSIL2A_20190812T235741_N0213_R030_T56LRR_20190813T014708"

L2A_NAMESPACE = "https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd"
L1C_NAMESPACE = "https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-1C.xsd"
L2A_TILE_NAMESPACE = "https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-2A_Tile_Metadata.xsd"
L1C_TILE_NAMESPACE = "https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-1C_Tile_Metadata.xsd"

BOA_QUANTIFICATION = 10000
BOA_OFFSET_FROM_BASELINE_4 = -1000
SATURATED = 65535


@dataclass(frozen=True)
class SpectralBand:
    """One MSI band: ESA's id and name, its native resolution and our measurement name."""

    band_id: int
    code: str
    resolution: int
    measurement: str
    # Typical vegetated-land surface reflectance x 10000, and over water.
    land: int
    water: int


MSI_BANDS: tuple[SpectralBand, ...] = (
    SpectralBand(0, "B01", 60, "coastal_aerosol", 450, 500),
    SpectralBand(1, "B02", 10, "blue", 500, 600),
    SpectralBand(2, "B03", 10, "green", 800, 700),
    SpectralBand(3, "B04", 10, "red", 600, 400),
    SpectralBand(4, "B05", 20, "veg_red_edge_1", 1200, 300),
    SpectralBand(5, "B06", 20, "veg_red_edge_2", 2200, 200),
    SpectralBand(6, "B07", 20, "veg_red_edge_3", 2600, 180),
    SpectralBand(7, "B08", 10, "nir", 2900, 150),
    SpectralBand(8, "B8A", 20, "narrow_nir", 3000, 140),
    SpectralBand(9, "B09", 60, "water_vapour", 900, 60),
    SpectralBand(10, "B10", 60, "cirrus", 30, 20),
    SpectralBand(11, "B11", 20, "swir1", 2000, 50),
    SpectralBand(12, "B12", 20, "swir2", 1100, 30),
)
# B10 (cirrus) is absorbed by the atmosphere: L1C carries it, L2A drops it.
L2A_BANDS = tuple(band for band in MSI_BANDS if band.code != "B10")
SCL_RESOLUTION = 20

# ESA scene classification (SCL) classes.
SCL_NO_DATA, SCL_SATURATED, SCL_DARK, SCL_SHADOW, SCL_VEGETATION = 0, 1, 2, 3, 4
SCL_NOT_VEGETATED, SCL_WATER, SCL_UNCLASSIFIED, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH = 5, 6, 7, 8, 9
SCL_CIRRUS, SCL_SNOW = 10, 11
SCL_CLOUDS = (SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS)

# Where Sentinel-2 tiles start: the upper-left corner of the 100 km MGRS square, as in the
# seed's tile; other tiles keep the same corner (the coordinates only need to be plausible).
TILE_ORIGINS: dict[str, tuple[float, float, int]] = {
    "56LRR": (799980.0, 9100000.0, 32756),
}


@dataclass(frozen=True)
class SceneTruth:
    """What the scene was made from: reflectance x 10000 by measurement (nodata 0), and SCL."""

    reflectance: dict[str, np.ndarray]
    scene_classification: np.ndarray
    crs: str
    transforms: dict[int, Affine]

    def at(self, measurement: str) -> np.ndarray:
        if measurement in ("scene_classification", "SCL"):
            return self.scene_classification
        return self.reflectance[measurement]


@dataclass(frozen=True)
class SceneFacts:
    """The metadata the scene's XML carries, as plain values a test can compare with."""

    name: str
    level: str
    platform: str
    tile: str
    sensing_time: datetime
    generation_time: datetime
    processing_baseline: str
    relative_orbit: int
    absolute_orbit: int
    cloud_cover: float
    sun_zenith: float
    sun_azimuth: float
    view_zenith: float
    view_azimuth: float
    quantification_value: int
    boa_add_offset: int
    shape_10m: tuple[int, int]


@dataclass(frozen=True)
class SyntheticScene:
    name: str
    path: Path
    facts: SceneFacts
    truth: SceneTruth
    band_files: dict[str, Path] = field(default_factory=dict)

    @property
    def safe_name(self) -> str:
        return f"{self.name}.SAFE"


def parse_scene_name(name: str) -> re.Match[str]:
    match = SENTINEL2_SCENE.match(name.removesuffix(".zip").removesuffix(".SAFE"))
    if match is None:
        raise ValueError(f"{name!r} is not a Sentinel-2 product name")
    return match


def boa_add_offset(baseline: str) -> int:
    """ESA's BOA_ADD_OFFSET for a processing baseline `NNNN` (e.g. `0213`, `0509`)."""
    return BOA_OFFSET_FROM_BASELINE_4 if int(baseline) >= 400 else 0


def _scene_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def _absolute_orbit(mission: str, sensing: datetime) -> int:
    # 143 orbits per 10-day cycle from launch; close enough to look like ESA's numbers.
    launched = {"S2A": datetime(2015, 6, 23, tzinfo=UTC), "S2B": datetime(2017, 3, 7, tzinfo=UTC)}
    start = launched.get(mission, datetime(2024, 9, 5, tzinfo=UTC))
    return max(1, int((sensing - start).total_seconds() / 86400 * 14.3))


def _tile_origin(tile: str) -> tuple[float, float, int]:
    if tile in TILE_ORIGINS:
        return TILE_ORIGINS[tile]
    zone = int(tile[:2])
    south = tile[2] < "N"
    return 499980.0, 9000040.0 if south else 1000000.0, (32700 if south else 32600) + zone


# -- pixels -----------------------------------------------------------------------------------


def _valid_area(shape: tuple[int, int]) -> np.ndarray:
    """False in the upper-left corner outside the swath, as at the edge of a real orbit."""
    rows, cols = np.indices(shape, dtype=np.float64)
    fraction = ((rows + 0.5) / shape[0]) + ((cols + 0.5) / shape[1])
    return fraction > 0.35


def _blobs(
    shape: tuple[int, int], rng: np.random.Generator, count: int, radius: float
) -> np.ndarray:
    rows, cols = np.indices(shape, dtype=np.float64)
    inside = np.zeros(shape, dtype=bool)
    for _ in range(count):
        centre_row, centre_col = rng.uniform(0.2, 0.9) * shape[0], rng.uniform(0.2, 0.9) * shape[1]
        size = radius * shape[0] * rng.uniform(0.6, 1.4)
        inside |= (rows - centre_row) ** 2 + (cols - centre_col) ** 2 < size**2
    return inside


def synthetic_scl(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Land and water, clouds with their shadows, some cirrus, snow and dark pixels."""
    rows, cols = np.indices(shape)
    scl = np.where((rows + cols) % 7 < 4, SCL_VEGETATION, SCL_NOT_VEGETATED).astype(np.uint8)
    river = np.abs(cols - (0.6 * shape[1] + 0.15 * shape[1] * np.sin(rows / shape[0] * 6))) < (
        0.05 * shape[1]
    )
    scl[river] = SCL_WATER
    scl[_blobs(shape, rng, 2, 0.03)] = SCL_UNCLASSIFIED
    scl[_blobs(shape, rng, 1, 0.02)] = SCL_SNOW
    scl[_blobs(shape, rng, 2, 0.015)] = SCL_DARK
    cloud_high = _blobs(shape, rng, 3, 0.06)
    cloud_medium = _blobs(shape, rng, 3, 0.09) & ~cloud_high
    shift = max(2, shape[0] // 20)
    shadow = np.roll(cloud_high | cloud_medium, (shift, shift), axis=(0, 1))
    scl[shadow] = SCL_SHADOW
    scl[cloud_medium] = SCL_CLOUD_MEDIUM
    scl[cloud_high] = SCL_CLOUD_HIGH
    scl[_blobs(shape, rng, 1, 0.05) & ~(cloud_high | cloud_medium)] = SCL_CIRRUS
    scl[rng.random(shape) < 0.001] = SCL_SATURATED
    scl[~_valid_area(shape)] = SCL_NO_DATA
    return scl


def _classes_at(scl: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """SCL (20 m) resampled by nearest neighbour onto another resolution's grid."""
    rows = (np.arange(shape[0]) + 0.5) * scl.shape[0] / shape[0]
    cols = (np.arange(shape[1]) + 0.5) * scl.shape[1] / shape[1]
    return scl[np.ix_(rows.astype(int), cols.astype(int))]


def synthetic_reflectance(
    band: SpectralBand, shape: tuple[int, int], scl: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Reflectance x 10000 following the land cover, smooth in space, with noise; nodata 0."""
    classes = _classes_at(scl, shape)
    rows, cols = np.indices(shape, dtype=np.float64)
    base = np.where(classes == SCL_WATER, band.water, band.land).astype(np.float64)
    base[classes == SCL_NOT_VEGETATED] *= 1.3
    base[np.isin(classes, SCL_CLOUDS)] = 5000 + band.land * 0.4
    base[classes == SCL_SNOW] = 8000 - band.band_id * 400
    base[classes == SCL_SHADOW] *= 0.4
    base[classes == SCL_DARK] *= 0.2
    pattern = 1 + 0.25 * np.sin(rows / shape[0] * 5 + band.band_id) * np.cos(cols / shape[1] * 4)
    noisy = base * pattern + rng.normal(0, 40, shape)
    reflectance = np.clip(np.rint(noisy), 1, 15000).astype(np.uint16)
    reflectance[classes == SCL_SATURATED] = 15000
    reflectance[classes == SCL_NO_DATA] = 0
    return reflectance


def digital_numbers(reflectance: np.ndarray, quantification: int, offset: int) -> np.ndarray:
    """What the product stores for a reflectance x 10000: scaled, minus the (negative) offset."""
    valid = reflectance > 0
    scaled = np.rint(reflectance.astype(np.float64) * quantification / 10000) - offset
    numbers = np.clip(scaled, 1, SATURATED).astype(np.uint16)
    return np.where(valid, numbers, 0).astype(np.uint16)


def write_jp2(path: Path, pixels: np.ndarray, crs: str, transform: Affine) -> None:
    """Lossless JPEG 2000 with GeoJP2/GMLJP2 georeferencing, as ESA's bands are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "JP2OpenJPEG",
        "width": pixels.shape[1],
        "height": pixels.shape[0],
        "count": 1,
        "dtype": pixels.dtype.name,
        "crs": crs,
        "transform": transform,
    }
    with rasterio.open(path, "w", REVERSIBLE="YES", QUALITY="100", **profile) as target:
        target.write(pixels, 1)


# -- metadata XML -----------------------------------------------------------------------------


def _element(parent: ET.Element, tag: str, text: object = None, **attributes: object) -> ET.Element:
    child = ET.SubElement(parent, tag, {key: str(value) for key, value in attributes.items()})
    if text is not None:
        child.text = str(text)
    return child


def _write_xml(root: ET.Element, path: Path) -> None:
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)


@dataclass(frozen=True)
class _Layout:
    name: str
    level: str
    tile: str
    granule: str
    datastrip: str
    sensing_label: str

    def band_stem(self, band_code: str, resolution: int) -> str:
        stem = f"{self.granule_dir}/IMG_DATA"
        if self.level == "L1C":
            return f"{stem}/T{self.tile}_{self.sensing_label}_{band_code}"
        return f"{stem}/R{resolution}m/T{self.tile}_{self.sensing_label}_{band_code}_{resolution}m"

    @property
    def granule_dir(self) -> str:
        return f"GRANULE/{self.granule}"


def _product_metadata(
    layout: _Layout, facts: SceneFacts, bands: tuple[SpectralBand, ...]
) -> ET.Element:
    l2a = layout.level == "L2A"
    namespace = L2A_NAMESPACE if l2a else L1C_NAMESPACE
    ET.register_namespace("n1", namespace)
    root = ET.Element(f"{{{namespace}}}Level-{'2A' if l2a else '1C'}_User_Product")
    general = _element(root, f"{{{namespace}}}General_Info")
    info = _element(general, "Product_Info")
    _element(info, "PRODUCT_START_TIME", _iso(facts.sensing_time))
    _element(info, "PRODUCT_STOP_TIME", _iso(facts.sensing_time + timedelta(seconds=5)))
    _element(info, "PRODUCT_URI", f"{layout.name}.SAFE")
    _element(info, "PROCESSING_LEVEL", "Level-2A" if l2a else "Level-1C")
    _element(info, "PRODUCT_TYPE", "S2MSI2A" if l2a else "S2MSI1C")
    _element(info, "PROCESSING_BASELINE", facts.processing_baseline)
    _element(info, "PRODUCT_DOI", "https://doi.org/10.5270/S2_-znk9xsj" if l2a else "")
    _element(info, "GENERATION_TIME", _iso(facts.generation_time))
    _element(info, "PREVIEW_IMAGE_URL", "Not applicable")
    unit = facts.platform[-1].upper()
    datatake_id = (
        f"GS2{unit}_{facts.sensing_time:%Y%m%dT%H%M%S}_{facts.absolute_orbit:06d}"
        f"_N{facts.processing_baseline}"
    )
    datatake = _element(info, "Datatake", datatakeIdentifier=datatake_id)
    _element(datatake, "SPACECRAFT_NAME", f"Sentinel-2{unit}")
    _element(datatake, "DATATAKE_TYPE", "INS-NOBS")
    _element(datatake, "DATATAKE_SENSING_START", _iso(facts.sensing_time))
    _element(datatake, "SENSING_ORBIT_NUMBER", facts.relative_orbit)
    _element(datatake, "SENSING_ORBIT_DIRECTION", "DESCENDING")
    options = _element(info, "Query_Options", completeSingleTile="true")
    _element(options, "PRODUCT_FORMAT", "SAFE_COMPACT")
    organisation = _element(info, "Product_Organisation")
    granules = _element(organisation, "Granule_List")
    granule = _element(
        granules, "Granule", datastripIdentifier=layout.datastrip,
        granuleIdentifier=layout.granule, imageFormat="JPEG2000",
    )  # fmt: skip
    for band in bands:
        _element(granule, "IMAGE_FILE", layout.band_stem(band.code, band.resolution))
    if l2a:
        _element(granule, "IMAGE_FILE", layout.band_stem("SCL", SCL_RESOLUTION))

    characteristics = _element(general, "Product_Image_Characteristics")
    for text, index in (("NODATA", 0), ("SATURATED", SATURATED)):
        special = _element(characteristics, "Special_Values")
        _element(special, "SPECIAL_VALUE_TEXT", text)
        _element(special, "SPECIAL_VALUE_INDEX", index)
    if l2a:
        values = _element(characteristics, "QUANTIFICATION_VALUES_LIST")
        _element(values, "BOA_QUANTIFICATION_VALUE", facts.quantification_value, unit="none")
        _element(values, "AOT_QUANTIFICATION_VALUE", "1000.0", unit="none")
        _element(values, "WVP_QUANTIFICATION_VALUE", "1000.0", unit="cm")
        if int(facts.processing_baseline.replace(".", "")) >= 400:
            offsets = _element(characteristics, "BOA_ADD_OFFSET_VALUES_LIST")
            for band in MSI_BANDS:
                _element(offsets, "BOA_ADD_OFFSET", facts.boa_add_offset, band_id=band.band_id)
    else:
        _element(characteristics, "QUANTIFICATION_VALUE", facts.quantification_value, unit="none")
    spectral = _element(characteristics, "Spectral_Information_List")
    for band in MSI_BANDS:
        information = _element(
            spectral, "Spectral_Information", bandId=band.band_id,
            physicalBand=band.code.replace("B0", "B"),
        )  # fmt: skip
        _element(information, "RESOLUTION", band.resolution)
    if l2a:
        classes = _element(characteristics, "Scene_Classification_List")
        for index, text in enumerate(
            ("NODATA", "SATURATED_DEFECTIVE", "DARK_AREA_PIXELS", "CLOUD_SHADOWS", "VEGETATION",
             "NOT_VEGETATED", "WATER", "UNCLASSIFIED", "CLOUD_MEDIUM_PROBABILITY",
             "CLOUD_HIGH_PROBABILITY", "THIN_CIRRUS", "SNOW_ICE")
        ):  # fmt: skip
            entry = _element(classes, "Scene_Classification_ID")
            _element(entry, "SCENE_CLASSIFICATION_TEXT", f"SC_{text}")
            _element(entry, "SCENE_CLASSIFICATION_INDEX", index)
    quality = _element(root, f"{{{namespace}}}Quality_Indicators_Info")
    _element(quality, "Cloud_Coverage_Assessment", f"{facts.cloud_cover:.4f}")
    return root


def _tile_metadata(
    layout: _Layout, facts: SceneFacts, origin: tuple[float, float], epsg: int,
    shapes: dict[int, tuple[int, int]], scl_shares: dict[str, float],
) -> ET.Element:  # fmt: skip
    l2a = layout.level == "L2A"
    namespace = L2A_TILE_NAMESPACE if l2a else L1C_TILE_NAMESPACE
    ET.register_namespace("n1", namespace)
    root = ET.Element(f"{{{namespace}}}Level-{'2A' if l2a else '1C'}_Tile_ID")
    general = _element(root, f"{{{namespace}}}General_Info")
    level_code = "L2A" if l2a else "L1C"
    tile_id = (
        f"S2{facts.platform[-1].upper()}_OPER_MSI_{level_code}_TL_SGS__{facts.generation_time:%Y%m%dT%H%M%S}"
        f"_A{facts.absolute_orbit:06d}_T{facts.tile}_N{facts.processing_baseline}"
    )
    _element(general, "TILE_ID", tile_id, metadataLevel="Brief")
    _element(general, "DATASTRIP_ID", layout.datastrip, metadataLevel="Brief")
    _element(general, "SENSING_TIME", _iso(facts.sensing_time), metadataLevel="Standard")
    geometric = _element(root, f"{{{namespace}}}Geometric_Info")
    geocoding = _element(geometric, "Tile_Geocoding", metadataLevel="Brief")
    zone = facts.tile[:2]
    hemisphere = "S" if facts.tile[2] < "N" else "N"
    _element(geocoding, "HORIZONTAL_CS_NAME", f"WGS84 / UTM zone {int(zone)}{hemisphere}")
    _element(geocoding, "HORIZONTAL_CS_CODE", f"EPSG:{epsg}")
    for resolution, (rows, cols) in sorted(shapes.items()):
        size = _element(geocoding, "Size", resolution=resolution)
        _element(size, "NROWS", rows)
        _element(size, "NCOLS", cols)
    for resolution in sorted(shapes):
        position = _element(geocoding, "Geoposition", resolution=resolution)
        _element(position, "ULX", f"{origin[0]:.0f}")
        _element(position, "ULY", f"{origin[1]:.0f}")
        _element(position, "XDIM", resolution)
        _element(position, "YDIM", -resolution)
    angles = _element(geometric, "Tile_Angles", metadataLevel="Standard")
    sun = _element(angles, "Mean_Sun_Angle")
    _element(sun, "ZENITH_ANGLE", f"{facts.sun_zenith:.6f}", unit="deg")
    _element(sun, "AZIMUTH_ANGLE", f"{facts.sun_azimuth:.6f}", unit="deg")
    views = _element(angles, "Mean_Viewing_Incidence_Angle_List")
    for band in MSI_BANDS:
        view = _element(views, "Mean_Viewing_Incidence_Angle", bandId=band.band_id)
        # Bands look from slightly different angles; their mean is the scene's view angle.
        spread = (band.band_id - 6) * 0.01
        _element(view, "ZENITH_ANGLE", f"{facts.view_zenith + spread:.6f}", unit="deg")
        _element(view, "AZIMUTH_ANGLE", f"{facts.view_azimuth - spread:.6f}", unit="deg")
    quality = _element(root, f"{{{namespace}}}Quality_Indicators_Info", metadataLevel="Standard")
    content = _element(quality, "Image_Content_QI")
    _element(content, "CLOUDY_PIXEL_PERCENTAGE", f"{facts.cloud_cover:.4f}")
    _element(content, "DEGRADED_MSI_DATA_PERCENTAGE", 0)
    for tag, share in scl_shares.items():
        _element(content, tag, f"{share:.6f}")
    return root


def _scl_shares(scl: np.ndarray) -> dict[str, float]:
    valid = scl != SCL_NO_DATA
    total = max(int(valid.sum()), 1)

    def share(*classes: int) -> float:
        return float(np.isin(scl[valid], classes).sum()) * 100 / total

    return {
        "NODATA_PIXEL_PERCENTAGE": float((~valid).sum()) * 100 / scl.size,
        "SATURATED_DEFECTIVE_PIXEL_PERCENTAGE": share(SCL_SATURATED),
        "DARK_FEATURES_PERCENTAGE": share(SCL_DARK),
        "CLOUD_SHADOW_PERCENTAGE": share(SCL_SHADOW),
        "VEGETATION_PERCENTAGE": share(SCL_VEGETATION),
        "NOT_VEGETATED_PERCENTAGE": share(SCL_NOT_VEGETATED),
        "WATER_PERCENTAGE": share(SCL_WATER),
        "UNCLASSIFIED_PERCENTAGE": share(SCL_UNCLASSIFIED),
        "MEDIUM_PROBA_CLOUDS_PERCENTAGE": share(SCL_CLOUD_MEDIUM),
        "HIGH_PROBA_CLOUDS_PERCENTAGE": share(SCL_CLOUD_HIGH),
        "THIN_CIRRUS_PERCENTAGE": share(SCL_CIRRUS),
        "SNOW_ICE_PERCENTAGE": share(SCL_SNOW),
    }


def _manifest(name: str) -> ET.Element:
    namespace = "urn:ccsds:schema:xfdu:1"
    ET.register_namespace("xfdu", namespace)
    root = ET.Element(f"{{{namespace}}}XFDU", version="esa/safe/sentinel/1.1/sentinel-2/msi")
    information = ET.SubElement(root, "informationPackageMap")
    ET.SubElement(information, f"{{{namespace}}}contentUnit", textInfo=name)
    return root


# -- the scene --------------------------------------------------------------------------------


def write_safe(
    directory: Path,
    *,
    name: str = SEED_SCENE_NAME,
    size: int = 240,
    seed: int = 0,
) -> SyntheticScene:
    """Write the scene `name` as `{directory}/{name}.SAFE` with 10 m bands of `size` pixels.

    `size` must be a multiple of 6 so that the 20 m and 60 m grids cover the same ground.
    The level (L1C or L2A) and processing baseline come from the name.
    """
    if size % 6 or size < 12:
        raise ValueError(f"size {size} must be a multiple of 6 and at least 12")
    match = parse_scene_name(name)
    name = match.group(0)
    level = match.group("level")
    mission = name[:3]
    tile = match.group("tile")
    baseline = match.group("baseline")
    sensing_label = match.group("sensing")
    rng = np.random.default_rng([seed, *name.encode()])

    sensing = _scene_time(sensing_label) + timedelta(milliseconds=int(rng.integers(0, 999)))
    origin_x, origin_y, epsg = _tile_origin(tile)
    crs = f"EPSG:{epsg}"
    shapes = {res: (size * 10 // res, size * 10 // res) for res in (10, 20, 60)}
    transforms = {res: from_origin(origin_x, origin_y, res, res) for res in shapes}
    scl = synthetic_scl(shapes[SCL_RESOLUTION], rng)
    shares = _scl_shares(scl)
    cloud_cover = sum(
        shares[key]
        for key in (
            "MEDIUM_PROBA_CLOUDS_PERCENTAGE",
            "HIGH_PROBA_CLOUDS_PERCENTAGE",
            "THIN_CIRRUS_PERCENTAGE",
        )
    )
    offset = boa_add_offset(baseline) if level == "L2A" else 0
    facts = SceneFacts(
        name=name,
        level=level,
        platform=f"sentinel-2{mission[-1].lower()}",
        tile=tile,
        sensing_time=sensing,
        generation_time=_scene_time(match.group("discriminator")),
        processing_baseline=f"{baseline[:2]}.{baseline[2:]}",
        relative_orbit=int(match.group("orbit")),
        absolute_orbit=_absolute_orbit(mission, sensing),
        cloud_cover=round(cloud_cover, 4),
        sun_zenith=round(float(rng.uniform(25, 60)), 6),
        sun_azimuth=round(float(rng.uniform(20, 160)), 6),
        view_zenith=round(float(rng.uniform(2, 10)), 6),
        view_azimuth=round(float(rng.uniform(90, 290)), 6),
        quantification_value=BOA_QUANTIFICATION,
        boa_add_offset=offset,
        shape_10m=shapes[10],
    )
    layout = _Layout(
        name=name,
        level=level,
        tile=tile,
        granule=f"{level}_T{tile}_A{facts.absolute_orbit:06d}_{sensing_label}",
        datastrip=(
            f"S2{mission[-1]}_OPER_MSI_{level}_DS_SGS__{match.group('discriminator')}"
            f"_S{sensing_label}_N{facts.processing_baseline}"
        ),
        sensing_label=sensing_label,
    )

    root = Path(directory) / f"{name}.SAFE"
    if root.exists():
        shutil.rmtree(root)
    bands = L2A_BANDS if level == "L2A" else MSI_BANDS
    reflectance: dict[str, np.ndarray] = {}
    band_files: dict[str, Path] = {}
    for band in bands:
        pixels = synthetic_reflectance(band, shapes[band.resolution], scl, rng)
        reflectance[band.measurement] = pixels
        stem = layout.band_stem(band.code, band.resolution)
        path = root / f"{stem}.jp2"
        numbers = digital_numbers(pixels, facts.quantification_value, offset)
        write_jp2(path, numbers, crs, transforms[band.resolution])
        band_files[band.measurement] = path
    if level == "L2A":
        path = root / f"{layout.band_stem('SCL', SCL_RESOLUTION)}.jp2"
        write_jp2(path, scl, crs, transforms[SCL_RESOLUTION])
        band_files["scene_classification"] = path

    product_file = "MTD_MSIL2A.xml" if level == "L2A" else "MTD_MSIL1C.xml"
    _write_xml(_product_metadata(layout, facts, bands), root / product_file)
    _write_xml(
        _tile_metadata(layout, facts, (origin_x, origin_y), epsg, shapes, shares),
        root / layout.granule_dir / "MTD_TL.xml",
    )
    _write_xml(_manifest(name), root / "manifest.safe")
    datastrip = root / "DATASTRIP" / f"DS_SGS__{match.group('discriminator')}_S{sensing_label}"
    _write_xml(ET.Element("Level-1C_DataStrip_ID" if level == "L1C" else "Level-2A_DataStrip_ID"),
               datastrip / "MTD_DS.xml")  # fmt: skip
    for folder in ("AUX_DATA", "HTML", "rep_info", f"{layout.granule_dir}/AUX_DATA",
                   f"{layout.granule_dir}/QI_DATA"):  # fmt: skip
        (root / folder).mkdir(parents=True, exist_ok=True)

    truth = SceneTruth(
        reflectance=reflectance,
        scene_classification=scl if level == "L2A" else np.zeros(shapes[20], np.uint8),
        crs=crs,
        transforms=transforms,
    )
    return SyntheticScene(name=name, path=root, facts=facts, truth=truth, band_files=band_files)


def zip_safe(safe_dir: Path, directory: Path, *, remove_folder: bool = False) -> Path:
    """The product as ESA ships it: `{name}.zip` holding the `{name}.SAFE/` folder."""
    safe_dir = Path(safe_dir)
    name = safe_dir.name.removesuffix(".SAFE")
    target = Path(directory) / f"{name}.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    # JPEG 2000 is compressed already: stored entries cost nothing to unpack.
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in sorted(safe_dir.rglob("*")):
            arcname = f"{safe_dir.name}/{path.relative_to(safe_dir).as_posix()}"
            if path.is_dir():
                archive.writestr(f"{arcname}/", b"")
            else:
                compression = zipfile.ZIP_STORED if path.suffix == ".jp2" else zipfile.ZIP_DEFLATED
                archive.write(path, arcname, compress_type=compression)
    if remove_folder:
        shutil.rmtree(safe_dir)
    return target


def variant_name(
    name: str,
    *,
    level: str | None = None,
    baseline: str | None = None,
    discriminator: str | None = None,
) -> str:
    """`name` with another level, baseline or discriminator, e.g. the L2A twin of an L1C."""
    match = parse_scene_name(name)
    return (
        f"{name[:3]}_MSI{level or match.group('level')}_{match.group('sensing')}"
        f"_N{baseline or match.group('baseline')}_R{match.group('orbit')}_T{match.group('tile')}"
        f"_{discriminator or match.group('discriminator')}"
    )


def prepare_demo_scene(source_dir: Path, *, size: int = 1098, seed: int = 2019) -> str:
    """The seed's scene in `source_dir` as an ESA `.SAFE` folder; returns its name.

    1098 px at 10 m is a tenth of a real tile's width: real layout, a few seconds to make.
    """
    Path(source_dir).mkdir(parents=True, exist_ok=True)
    scene = write_safe(Path(source_dir), name=SEED_SCENE_NAME, size=size, seed=seed)
    return scene.name
