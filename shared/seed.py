"""The original deployment's work items, byte for byte: what the demo pushes and the tests check."""

from __future__ import annotations

import json

SEED_PRODUCT_ITEM = (
    '{"job_code": "geomedian", "product": "ls8_usgs_sr_scene", "query_x_from": "2130000.0", '
    '"query_y_from": "3499700.0", "query_x_to": "2233300.0", "query_y_to": "3600300.0", '
    '"query_crs": "EPSG:3460", "time_from": "2019-01-01", "time_to": "2019-12-31", '
    '"output_crs": "EPSG:3460", "prefix": "commonsensing/fiji/landsat_8_geomedian/2019"}'
)

# The same box as WGS84 degrees: its envelope, just east of the antimeridian.
SEED_LATLON_ITEM = (
    '{"job_code": "geomedian", "product": "ls8_usgs_sr_scene", "latitude_from": "-21.5155", '
    '"latitude_to": "-20.5970", "longitude_from": "-179.9950", "longitude_to": "-178.9984", '
    '"time_from": "2019-01-01", "time_to": "2019-12-31", "output_crs": "EPSG:3460", '
    '"prefix": "commonsensing/fiji/landsat_8_geomedian/2019"}'
)

SEED_SCENE_ITEM = (
    '{"in_scene": "S2A_MSIL2A_20190812T235741_N0213_R030_T56LRR_20190813T014708", '
    '"inter_dir": "/data/intermediate/"}'
)

SEED_BOX_EPSG3460 = (2130000.0, 3499700.0, 2233300.0, 3600300.0)


def seed_product_request() -> dict[str, str]:
    return dict(json.loads(SEED_PRODUCT_ITEM))
