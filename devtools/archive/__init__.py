"""A synthetic Landsat and Sentinel-2 archive, its ODC product definitions, and the datacube index.

settings = DatacubeSettings()                       # CONVEYOR_DB_URL, datacube.conf, or embedded
init_index(settings)
datacube = open_datacube(settings)
add_products(datacube)
records = generate_archive("ls8_usgs_sr_scene", (2130000, 3499700, 2233300, 3600300),
                           date(2019, 1, 1), date(2019, 12, 31), Path("archive"),
                           crs="EPSG:3460")
index_datasets(datacube, [record.metadata_path for record in records])
grid = archive_grid("ls8_usgs_sr_scene", (2130000, 3499700, 2233300, 3600300), "EPSG:3460")
day, scenes = next(iter(acquisition_days("ls8_usgs_sr_scene", grid, date(2019, 1, 1),
                                         date(2019, 12, 31)).items()))
expected = truth("ls8_usgs_sr_scene", day, grid)   # what a nearest load onto `grid` gives

Scenes are on their native grids (Landsat: UTM zone of the scene, pixel corners on 15 + 30k m;
Sentinel-2: MGRS tiles), and one longitude/latitude ground raster lies under all of them.
"""

from devtools.archive.catalogue import PRODUCTS, product_definition, product_definitions
from devtools.archive.demo import DemoArchive, prepare_demo_archive
from devtools.archive.scene_files import CogOptions, SceneRecord
from devtools.archive.synthetic import (
    Truth,
    acquisition_days,
    archive_grid,
    generate_archive,
    truth,
)
from shared.datacube import (
    DatacubeSettings,
    IndexLocation,
    IndexReport,
    add_product_definition,
    add_products,
    index_datasets,
    index_product_output,
    init_index,
    locate_index,
    open_datacube,
)

__all__ = [
    "PRODUCTS",
    "CogOptions",
    "DatacubeSettings",
    "DemoArchive",
    "IndexLocation",
    "IndexReport",
    "SceneRecord",
    "Truth",
    "acquisition_days",
    "add_product_definition",
    "add_products",
    "archive_grid",
    "generate_archive",
    "index_datasets",
    "index_product_output",
    "init_index",
    "locate_index",
    "open_datacube",
    "prepare_demo_archive",
    "product_definition",
    "product_definitions",
    "truth",
]
