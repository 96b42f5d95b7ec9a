"""ESPA's metadata of a Collection 1 surface-reflectance order (`{product id}.xml`).

USGS's ESPA (EROS Science Processing Architecture) delivered Collection 1 surface reflectance
as a tarball of GeoTIFFs plus the Level-1 `_MTL.txt` and this XML (schema
`http://espa.cr.usgs.gov/v2`), which lists every band it made: `<band name="sr_band2"
product="sr_refl" data_type="INT16" fill_value="-9999" scale_factor="0.000100" nlines=...
nsamps=... app_version="LaSRC_1.4.1">` with its `<file_name>`. Surface reflectance is int16
reflectance x 10,000 with fill -9999 and a valid range of 0..10,000 (-2000..16,000 allowed);
`pixel_qa` (uint16) flags fill, clear, water, shadow, snow, cloud and confidences (LSDS-1368,
LSDS-1370); `radsat_qa` (saturation) and `sr_aerosol` (LaSRC, Landsat 8) or
`sr_atmos_opacity`/`sr_cloud_qa` (LEDAPS, Landsat 4-7) come alongside.

Element names are matched whatever their namespace (the schema's version changes it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

from services.worker.ard.errors import CorruptScene


@dataclass(frozen=True)
class EspaBand:
    """One band of an ESPA order, as its XML describes it."""

    name: str
    file_name: str
    product: str
    data_type: str
    fill_value: int | None
    scale_factor: float | None
    lines: int | None
    samples: int | None
    app_version: str | None


@dataclass(frozen=True)
class EspaMetadata:
    product_id: str | None
    bands: Mapping[str, EspaBand]

    @property
    def surface_reflectance(self) -> list[EspaBand]:
        return [band for band in self.bands.values() if band.name.startswith("sr_band")]

    @property
    def algorithm(self) -> str | None:
        """The surface-reflectance code that made the order, e.g. `LaSRC_1.4.1`."""
        versions = {band.app_version for band in self.surface_reflectance if band.app_version}
        return sorted(versions)[0] if versions else None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _number(element: ET.Element, attribute: str, source: str) -> float | None:
    text = element.get(attribute)
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        name = element.get("name", "?")
        raise CorruptScene(
            f"{source}: band {name} has {attribute}={text!r}, which is not a number"
        ) from None


def _integer(element: ET.Element, attribute: str, source: str) -> int | None:
    value = _number(element, attribute, source)
    return None if value is None else int(value)


def parse_espa(text: str | bytes, source: str) -> EspaMetadata:
    """The product id and bands of an ESPA XML document (`source` names it in errors)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as error:
        raise CorruptScene(f"{source} is not readable XML ({error})") from None
    if _local(root.tag) != "espa_metadata":
        raise CorruptScene(f"{source} is not ESPA metadata (its root is {_local(root.tag)})")
    product_id = next(
        (
            (element.text or "").strip()
            for element in root.iter()
            if _local(element.tag) == "product_id"
        ),
        None,
    )
    bands: dict[str, EspaBand] = {}
    for element in root.iter():
        if _local(element.tag) != "band":
            continue
        name = element.get("name")
        file_name = next(
            ((child.text or "").strip() for child in element if _local(child.tag) == "file_name"),
            "",
        )
        if not name or not file_name:
            raise CorruptScene(f"{source} lists a band without a name or file_name")
        fill = _number(element, "fill_value", source)
        bands[name] = EspaBand(
            name=name,
            file_name=file_name,
            product=element.get("product", ""),
            data_type=element.get("data_type", ""),
            fill_value=None if fill is None else int(fill),
            scale_factor=_number(element, "scale_factor", source),
            lines=_integer(element, "nlines", source),
            samples=_integer(element, "nsamps", source),
            app_version=element.get("app_version"),
        )
    return EspaMetadata(product_id=product_id or None, bands=bands)


def read_espa(path: Path) -> EspaMetadata:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorruptScene(f"the product has no {path.name} ({path})") from None
    except OSError as error:
        raise CorruptScene(f"{path.name} is unreadable: {error}") from None
    return parse_espa(data, path.name)
