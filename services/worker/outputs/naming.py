"""Where each file of a product dataset goes, relative to the destination's root.

Two layouts. `odc` (the default) follows odc-stats, one folder per tile and period::

    {prefix}/{product}/{x}/{y}/{period}/{product}_{tile}_{period}_{band}.tif
    {prefix}/{product}/{x}/{y}/{period}/{product}_{tile}_{period}_{vector}.geojson
    {prefix}/{product}/{x}/{y}/{period}/{product}_{tile}_{period}_final.stac-item.json
    {prefix}/{product}/{x}/{y}/{period}/{product}_{tile}_{period}_final.odc-metadata.yaml

e.g. `fiji/ls8_geomedian/x022/y036/2019--P1Y/ls8_geomedian_x022y036_2019--P1Y_red.tif`. The tile
`x022y036` is split into `x022/y036` folders, the period is odc-stats' label (`2019--P1Y`,
`2019-03--P3M`, `2019-01-05--2019-02-20`), and the metadata names carry the dataset maturity
(`final`) as odc-stats' do, which also keeps them apart from any band's name.

`legacy` reproduces the original worker's flat names, for downstream scripts that expect them::

    {prefix}/{ls8|s2|...}_{job_code}_{time_from}_{time_to}_{epsgNNNN}_{x_from}_{y_from}_{x_to}_{y_to}_{band}.tif
    {prefix}/..._{x_to}_{y_to}_datacube-metadata.yaml
    {prefix}/..._{x_to}_{y_to}_stac-item.json

where the sensor is the source product's first three letters for Landsat (`ls5`, `ls7`, `ls8`)
and two otherwise (`s2`), and the numbers print as Python prints a float (`2130000.0`).
The `_datacube-metadata.yaml` is an eo3 document now (the original wrote an older format).

In both layouts the metadata document is written last: its presence means "done".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from odc.geo.crs import CRS

from services.worker.outputs.spec import OutputSpec
from shared.catalogue import INPUT_PRODUCTS

# A cell of the output grid (`x110y182`); ids of tiles once clipped to a request's box carry a
# hash of their bounds (`x022y036-1a2b3c`) and still name their folders.
TILE_PARTS = re.compile(r"^(?P<x>x-?\d+)(?P<y>y-?\d+(?:-[0-9a-f]+)?)$")
MATURITY = "final"
BAND_EXTENSION = "tif"
VECTOR_EXTENSION = "geojson"


@dataclass(frozen=True)
class ProductLayout:
    """The keys of one product dataset's files; all in one folder so paths inside are basenames."""

    product_folder: str
    folder: str
    stem: str
    stac_key: str
    metadata_key: str

    def band_key(self, band: str) -> str:
        return self.file_key(f"{band}.{BAND_EXTENSION}")

    def vector_key(self, name: str) -> str:
        return self.file_key(f"{name}.{VECTOR_EXTENSION}")

    @property
    def quicklook_key(self) -> str:
        return self.file_key("quicklook.png")

    def file_key(self, suffix: str) -> str:
        """`{folder}/{stem}_{suffix}`: any other file of the dataset."""
        return f"{self.folder}/{self.stem}_{suffix}"


def basename(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def tile_path(tile: str) -> str:
    """`x022y036` -> `x022/y036` as odc-stats splits region codes; other ids stay one folder."""
    match = TILE_PARTS.match(tile)
    return f"{match.group('x')}/{match.group('y')}" if match else tile


def sensor_short_name(source_product: str) -> str:
    """The original worker's rule: `ls8_usgs_sr_scene` -> `ls8`, `s2_esa_sr_granule` -> `s2`."""
    known = INPUT_PRODUCTS.get(source_product)
    if known is not None:
        return known.short_name
    return source_product[:3] if source_product.startswith("ls") else source_product[:2]


def epsg_label(crs: str) -> str:
    """`EPSG:3460` -> `epsg3460`, as the original spelt the CRS in file names."""
    epsg = CRS(crs).epsg
    if epsg is None:
        raise ValueError(f"legacy naming needs a CRS with an EPSG code; {crs!r} has none")
    return f"epsg{epsg}"


def legacy_corners(spec: OutputSpec) -> tuple[float, float, float, float]:
    """(x_from, y_from, x_to, y_to) as the original put them in names, optionally as lon/lat."""
    if spec.legacy_bounds is not None:
        x_from, y_from, x_to, y_to = spec.legacy_bounds
    else:
        x_from, y_from, x_to, y_to = spec.bounds
    if spec.epsg4326_naming:
        from odc.geo.geom import point

        lower = point(x_from, y_from, CRS(spec.crs)).to_crs("EPSG:4326").coords[0]
        upper = point(x_to, y_to, CRS(spec.crs)).to_crs("EPSG:4326").coords[0]
        x_from, y_from, x_to, y_to = lower[0], lower[1], upper[0], upper[1]
    return float(x_from), float(y_from), float(x_to), float(y_to)


def odc_layout(spec: OutputSpec) -> ProductLayout:
    period = spec.period.label
    folder = f"{spec.prefix}/{spec.product_name}/{tile_path(spec.tile)}/{period}"
    stem = f"{spec.product_name}_{spec.tile}_{period}"
    return ProductLayout(
        product_folder=f"{spec.prefix}/{spec.product_name}",
        folder=folder,
        stem=stem,
        stac_key=f"{folder}/{stem}_{MATURITY}.stac-item.json",
        metadata_key=f"{folder}/{stem}_{MATURITY}.odc-metadata.yaml",
    )


def legacy_layout(spec: OutputSpec) -> ProductLayout:
    x_from, y_from, x_to, y_to = legacy_corners(spec)
    stem = (
        f"{sensor_short_name(spec.source_product)}_{spec.job_code}_"
        f"{spec.period.start.isoformat()}_{spec.period.end.isoformat()}_{epsg_label(spec.crs)}_"
        f"{x_from}_{y_from}_{x_to}_{y_to}"
    )
    folder = spec.prefix
    return ProductLayout(
        product_folder=folder,
        folder=folder,
        stem=stem,
        stac_key=f"{folder}/{stem}_stac-item.json",
        metadata_key=f"{folder}/{stem}_datacube-metadata.yaml",
    )


def layout_for(spec: OutputSpec) -> ProductLayout:
    return legacy_layout(spec) if spec.naming == "legacy" else odc_layout(spec)
