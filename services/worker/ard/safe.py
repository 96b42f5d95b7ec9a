"""Reading a Sentinel-2 L2A product in ESA's SAFE layout: its two metadata files and band files.

`MTD_MSIL2A.xml` (product) gives the processing baseline, the quantification value, the
`BOA_ADD_OFFSET` of each band (baseline 04.00 and later), the orbit, the cloud assessment and the
list of image files; `GRANULE/*/MTD_TL.xml` (tile) gives the sensing time, the tile's CRS and
grids, and the mean sun and viewing angles. Anything missing or unreadable is a `CorruptScene`
naming the file, since a retry cannot mend a broken product.

Element names are matched whatever their XML namespace: the PSD version (and so the namespace)
changes between baselines, the element names do not.

The metadata comes from an archive, so it is read as untrusted: XML with a DTD or entities is
refused (defusedxml; ESA's files have neither), and every band file it names must be a plain
relative path that resolves inside the product's folder.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from xml.etree import ElementTree as ET

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from services.worker.ard.errors import CorruptScene

PRODUCT_METADATA = "MTD_MSIL2A.xml"
TILE_METADATA = "MTD_TL.xml"


@dataclass(frozen=True)
class L2ABand:
    """One band of an L2A product: ESA's code, its native resolution and our measurement name."""

    code: str
    resolution: int
    measurement: str
    # STAC eo common name, where there is one.
    common_name: str | None = None
    wavelength_um: float | None = None


# The L2A bands at their native resolution, named as the product s2_esa_sr_granule names them.
L2A_BANDS: tuple[L2ABand, ...] = (
    L2ABand("B01", 60, "coastal_aerosol", "coastal", 0.443),
    L2ABand("B02", 10, "blue", "blue", 0.49),
    L2ABand("B03", 10, "green", "green", 0.56),
    L2ABand("B04", 10, "red", "red", 0.665),
    L2ABand("B05", 20, "veg_red_edge_1", "rededge", 0.705),
    L2ABand("B06", 20, "veg_red_edge_2", "rededge", 0.74),
    L2ABand("B07", 20, "veg_red_edge_3", "rededge", 0.783),
    L2ABand("B08", 10, "nir", "nir", 0.842),
    L2ABand("B8A", 20, "narrow_nir", "nir08", 0.865),
    L2ABand("B09", 60, "water_vapour", "nir09", 0.945),
    L2ABand("B11", 20, "swir1", "swir16", 1.61),
    L2ABand("B12", 20, "swir2", "swir22", 2.19),
)
SCL_BAND = L2ABand("SCL", 20, "scene_classification")
IMAGE_FILE = re.compile(r"_(?P<code>B\d[\dA]|SCL|AOT|WVP|TCI)_(?P<resolution>\d+)m$")


@dataclass(frozen=True)
class TileGrid:
    """The pixel grid of one resolution: upper-left corner and size."""

    resolution: int
    ulx: float
    uly: float
    rows: int
    cols: int


@dataclass(frozen=True)
class SceneMetadata:
    """What an ARD product needs to say about the scene it came from."""

    product_uri: str
    product_type: str
    processing_level: str
    processing_baseline: str
    generation_time: datetime
    platform: str
    datatake_id: str
    datatake_start: datetime
    relative_orbit: int
    orbit_direction: str | None
    quantification_value: float
    boa_add_offsets: dict[str, int]
    cloud_cover: float
    granule_id: str
    datastrip_id: str
    tile_id: str
    mgrs_tile: str
    sensing_time: datetime
    crs: str
    grids: dict[int, TileGrid]
    sun_zenith: float
    sun_azimuth: float
    view_zenith: float
    view_azimuth: float
    image_quality: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.product_uri.removesuffix(".SAFE")

    @property
    def absolute_orbit(self) -> int | None:
        match = re.search(r"_A(\d{6})_", self.granule_id)
        return int(match.group(1)) if match else None

    def offset_of(self, band_code: str) -> int:
        return self.boa_add_offsets.get(band_code, 0)


@dataclass(frozen=True)
class SafeProduct:
    """A fetched L2A product: its folder, metadata and the file of each band we deliver."""

    root: Path
    metadata: SceneMetadata
    band_files: dict[str, Path]

    def file_of(self, band: L2ABand) -> Path:
        return self.band_files[band.measurement]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse(path: Path) -> ET.Element:
    try:
        return SafeET.parse(path, forbid_dtd=True).getroot()
    except FileNotFoundError:
        raise CorruptScene(f"{path} is missing from the product") from None
    except DefusedXmlException as error:
        raise CorruptScene(
            f"{path} declares a DTD or entities ({error}), which product metadata never has"
        ) from None
    except (ET.ParseError, OSError) as error:
        raise CorruptScene(f"{path} is not readable XML ({error})") from None


def band_path(root: Path, stem: str, metadata: Path) -> Path:
    """`root/{stem}.jp2` for an IMAGE_FILE of the metadata, if it stays inside `root`.

    A name from the metadata is data, not a path to trust: absolute names, empty, `.` or `..`
    parts, backslashes and control characters are refused, and the result (links resolved)
    must lie under the product's folder.
    """
    parts = PurePosixPath(stem).parts
    if (
        not parts
        or stem.startswith("/")
        or any(part in ("", ".", "..") for part in parts)
        or "\\" in stem
        or any(ord(character) < 32 or ord(character) == 127 for character in stem)
    ):
        raise CorruptScene(f"{metadata} names a band file {stem!r} outside the product's folder")
    path = root.joinpath(*parts[:-1], f"{parts[-1]}.jp2")
    resolved_root = root.resolve()
    if not path.resolve().is_relative_to(resolved_root):
        raise CorruptScene(
            f"{metadata} names a band file {stem!r} that leads outside the product's folder "
            f"({path.resolve()})"
        )
    return path


class _Reader:
    """Namespace-blind lookups in one metadata file, with errors that name it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.root = _parse(path)

    def all(self, name: str) -> list[ET.Element]:
        return [element for element in self.root.iter() if _local(element.tag) == name]

    def first(self, name: str) -> ET.Element | None:
        return next((e for e in self.root.iter() if _local(e.tag) == name), None)

    def text(self, name: str) -> str:
        element = self.first(name)
        if element is None or element.text is None or not element.text.strip():
            raise CorruptScene(f"{self.path} has no {name}")
        return element.text.strip()

    def optional_text(self, name: str) -> str | None:
        element = self.first(name)
        return None if element is None or element.text is None else element.text.strip()

    def number(self, name: str, within: ET.Element | None = None) -> float:
        scope = self.root if within is None else within
        element = next((e for e in scope.iter() if _local(e.tag) == name), None)
        if element is None or element.text is None:
            raise CorruptScene(f"{self.path} has no {name}")
        try:
            return float(element.text)
        except ValueError:
            raise CorruptScene(f"{self.path}: {name} {element.text!r} is not a number") from None

    def time(self, name: str) -> datetime:
        text = self.text(name)
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise CorruptScene(f"{self.path}: {name} {text!r} is not a time") from None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def find_product_root(folder: Path, name: str) -> Path:
    """The `.SAFE` folder holding `MTD_MSIL2A.xml`: `folder/{name}.SAFE`, or `folder` itself."""
    for candidate in (folder / f"{name}.SAFE", folder / name, folder):
        if (candidate / PRODUCT_METADATA).is_file():
            return candidate
    found = sorted(folder.glob(f"*/{PRODUCT_METADATA}"))
    if len(found) == 1:
        return found[0].parent
    raise CorruptScene(
        f"{name} has no {PRODUCT_METADATA} (looked in {folder}); it is not an L2A SAFE product"
    )


def _band_code(physical: str) -> str:
    """ESA spells bands `B1`, `B8A` in some places and `B01`, `B8A` in file names."""
    return f"B{int(physical[1:]):02d}" if physical[1:].isdigit() else physical


def _boa_offsets(reader: _Reader) -> dict[str, int]:
    by_id = {
        element.get("bandId", ""): _band_code(element.get("physicalBand", ""))
        for element in reader.all("Spectral_Information")
    }
    offsets: dict[str, int] = {}
    for element in reader.all("BOA_ADD_OFFSET"):
        band_id = element.get("band_id", "")
        code = by_id.get(band_id)
        if code is None:
            raise CorruptScene(
                f"{reader.path}: BOA_ADD_OFFSET band_id {band_id!r} names no band of the "
                "Spectral_Information_List"
            )
        try:
            offsets[code] = int(float(element.text or ""))
        except ValueError:
            raise CorruptScene(
                f"{reader.path}: BOA_ADD_OFFSET of {code} is {element.text!r}, not a number"
            ) from None
    return offsets


def _image_files(reader: _Reader, root: Path) -> dict[str, Path]:
    """Band files by measurement, at each band's native resolution."""
    wanted = {(band.code, band.resolution): band.measurement for band in (*L2A_BANDS, SCL_BAND)}
    files: dict[str, Path] = {}
    for element in reader.all("IMAGE_FILE"):
        stem = (element.text or "").strip()
        match = IMAGE_FILE.search(stem)
        if match is None:
            continue
        key = (match.group("code"), int(match.group("resolution")))
        if key in wanted:
            files[wanted[key]] = band_path(root, stem, reader.path)
    missing = [band.code for band in (*L2A_BANDS, SCL_BAND) if band.measurement not in files]
    if missing:
        raise CorruptScene(
            f"{reader.path} lists no image file for {', '.join(missing)} at its native resolution"
        )
    return files


def _mean_degrees(values: list[float]) -> float:
    """The mean of angles, right across north (359 and 1 average to 0, not 180)."""
    sines = sum(math.sin(math.radians(value)) for value in values)
    cosines = sum(math.cos(math.radians(value)) for value in values)
    return math.degrees(math.atan2(sines, cosines)) % 360


def _tile_facts(path: Path) -> dict[str, object]:
    tile = _Reader(path)
    code = tile.text("HORIZONTAL_CS_CODE")
    sizes = {int(e.get("resolution", "0")): e for e in tile.all("Size")}
    grids: dict[int, TileGrid] = {}
    for position in tile.all("Geoposition"):
        resolution = int(position.get("resolution", "0"))
        size = sizes.get(resolution)
        if size is None:
            raise CorruptScene(f"{path} has a Geoposition but no Size for {resolution} m")
        grids[resolution] = TileGrid(
            resolution=resolution,
            ulx=tile.number("ULX", position),
            uly=tile.number("ULY", position),
            rows=int(tile.number("NROWS", size)),
            cols=int(tile.number("NCOLS", size)),
        )
    sun = tile.first("Mean_Sun_Angle")
    if sun is None:
        raise CorruptScene(f"{path} has no Mean_Sun_Angle")
    views = tile.all("Mean_Viewing_Incidence_Angle")
    if not views:
        raise CorruptScene(f"{path} has no Mean_Viewing_Incidence_Angle")
    quality = tile.first("Image_Content_QI")
    image_quality: dict[str, float] = {}
    if quality is not None:
        for element in quality:
            try:
                image_quality[_local(element.tag)] = float(element.text or "")
            except ValueError:
                continue
    tile_id = tile.text("TILE_ID")
    return {
        "tile_id": tile_id,
        "sensing_time": tile.time("SENSING_TIME"),
        "crs": code.upper(),
        "grids": grids,
        "sun_zenith": tile.number("ZENITH_ANGLE", sun),
        "sun_azimuth": tile.number("AZIMUTH_ANGLE", sun),
        # Bands look from slightly different angles; the scene's is their mean.
        "view_zenith": sum(tile.number("ZENITH_ANGLE", view) for view in views) / len(views),
        "view_azimuth": _mean_degrees([tile.number("AZIMUTH_ANGLE", view) for view in views]),
        "image_quality": image_quality,
    }


def read_safe(folder: Path, name: str) -> SafeProduct:
    """Read the L2A product `name` fetched into `folder` (the `.SAFE` folder or its parent)."""
    root = find_product_root(folder, name)
    product = _Reader(root / PRODUCT_METADATA)
    level = product.text("PROCESSING_LEVEL")
    if "2A" not in level:
        raise CorruptScene(f"{product.path} says {level}, not Level-2A")
    granules = sorted(root.glob(f"GRANULE/*/{TILE_METADATA}"))
    if len(granules) != 1:
        raise CorruptScene(
            f"{root} holds {len(granules)} tile metadata files (GRANULE/*/{TILE_METADATA}); "
            "expected one, as in every single-tile product since 2016"
        )
    tile = _tile_facts(granules[0])
    datatake = product.first("Datatake")
    granule = product.first("Granule")
    quantification = product.first("BOA_QUANTIFICATION_VALUE")
    if quantification is None:
        raise CorruptScene(f"{product.path} has no BOA_QUANTIFICATION_VALUE")
    spacecraft = product.text("SPACECRAFT_NAME")
    mgrs = re.search(r"_T(\d{2}[C-X][A-Z]{2})(_|$)", str(tile["tile_id"]))
    metadata = SceneMetadata(
        product_uri=product.text("PRODUCT_URI"),
        product_type=product.text("PRODUCT_TYPE"),
        processing_level=level,
        processing_baseline=product.text("PROCESSING_BASELINE"),
        generation_time=product.time("GENERATION_TIME"),
        platform=spacecraft.lower(),
        datatake_id="" if datatake is None else datatake.get("datatakeIdentifier", ""),
        datatake_start=product.time("DATATAKE_SENSING_START"),
        relative_orbit=int(product.number("SENSING_ORBIT_NUMBER")),
        orbit_direction=product.optional_text("SENSING_ORBIT_DIRECTION"),
        quantification_value=product.number("BOA_QUANTIFICATION_VALUE"),
        boa_add_offsets=_boa_offsets(product),
        cloud_cover=product.number("Cloud_Coverage_Assessment"),
        granule_id="" if granule is None else granule.get("granuleIdentifier", ""),
        datastrip_id="" if granule is None else granule.get("datastripIdentifier", ""),
        mgrs_tile=mgrs.group(1) if mgrs else granules[0].parent.name.split("_")[1][1:],
        **tile,  # type: ignore[arg-type]
    )
    if metadata.quantification_value <= 0:
        raise CorruptScene(
            f"{product.path}: BOA_QUANTIFICATION_VALUE {metadata.quantification_value} is not "
            "positive"
        )
    return SafeProduct(root=root, metadata=metadata, band_files=_image_files(product, root))
