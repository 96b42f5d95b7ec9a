"""USGS's MTL text and product names: parsed, checked, and refused with reasons."""

from __future__ import annotations

import string
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtools.archive.usgs import Bare, render_mtl
from services.worker.ard.errors import CorruptScene
from services.worker.ard.landsat_espa import parse_espa
from services.worker.ard.landsat_mtl import MtlError, landsat_metadata, parse_mtl
from shared.errors import InvalidRequest
from shared.messages import SceneRequest, parse_request

# An excerpt of a real Collection 2 Level-2 MTL's layout (LSDS-1619), values of a Fiji scene.
C2_MTL = """GROUP = LANDSAT_METADATA_FILE
  GROUP = PRODUCT_CONTENTS
    ORIGIN = "Image courtesy of the U.S. Geological Survey"
    DIGITAL_OBJECT_IDENTIFIER = "https://doi.org/10.5066/P9OGBGM6"
    LANDSAT_PRODUCT_ID = "LC08_L2SP_074072_20190214_20200829_02_T1"
    PROCESSING_LEVEL = "L2SP"
    COLLECTION_NUMBER = 02
    COLLECTION_CATEGORY = "T1"
    OUTPUT_FORMAT = "GEOTIFF"
    FILE_NAME_BAND_1 = "LC08_L2SP_074072_20190214_20200829_02_T1_SR_B1.TIF"
    FILE_NAME_QUALITY_L1_PIXEL = "LC08_L2SP_074072_20190214_20200829_02_T1_QA_PIXEL.TIF"
  END_GROUP = PRODUCT_CONTENTS
  GROUP = IMAGE_ATTRIBUTES
    SPACECRAFT_ID = "LANDSAT_8"
    SENSOR_ID = "OLI_TIRS"
    WRS_TYPE = 2
    WRS_PATH = 74
    WRS_ROW = 72
    DATE_ACQUIRED = 2019-02-14
    SCENE_CENTER_TIME = "22:23:31.1855160Z"
    CLOUD_COVER = 28.22
    CLOUD_COVER_LAND = -1.00
    SUN_AZIMUTH = 91.78154755
    SUN_ELEVATION = 55.08342513
  END_GROUP = IMAGE_ATTRIBUTES
  GROUP = PROJECTION_ATTRIBUTES
    MAP_PROJECTION = "UTM"
    DATUM = "WGS84"
    ELLIPSOID = "WGS84"
    UTM_ZONE = 60
    GRID_CELL_SIZE_REFLECTIVE = 30.00
    REFLECTIVE_LINES = 7791
    REFLECTIVE_SAMPLES = 7681
    ORIENTATION = "NORTH_UP"
    CORNER_UL_LAT_PRODUCT = -16.14205
    CORNER_UL_LON_PRODUCT = 177.37679
    CORNER_UR_LAT_PRODUCT = -16.12736
    CORNER_UR_LON_PRODUCT = 179.53087
    CORNER_LL_LAT_PRODUCT = -18.25450
    CORNER_LL_LON_PRODUCT = 177.38109
    CORNER_LR_LAT_PRODUCT = -18.23777
    CORNER_LR_LON_PRODUCT = 179.55971
    CORNER_UL_PROJECTION_X_PRODUCT = 540285.000
    CORNER_UL_PROJECTION_Y_PRODUCT = -1784685.000
    CORNER_UR_PROJECTION_X_PRODUCT = 770685.000
    CORNER_UR_PROJECTION_Y_PRODUCT = -1784685.000
    CORNER_LL_PROJECTION_X_PRODUCT = 540285.000
    CORNER_LL_PROJECTION_Y_PRODUCT = -2018385.000
    CORNER_LR_PROJECTION_X_PRODUCT = 770685.000
    CORNER_LR_PROJECTION_Y_PRODUCT = -2018385.000
  END_GROUP = PROJECTION_ATTRIBUTES
  GROUP = LEVEL2_PROCESSING_RECORD
    LANDSAT_PRODUCT_ID = "LC08_L2SP_074072_20190214_20200829_02_T1"
    PROCESSING_LEVEL = "L2SP"
    DATE_PRODUCT_GENERATED = 2020-08-29T10:11:12Z
    PROCESSING_SOFTWARE_VERSION = "LPGS_15.3.1c"
    ALGORITHM_SOURCE_SURFACE_REFLECTANCE = "LaSRC_1.5.0"
  END_GROUP = LEVEL2_PROCESSING_RECORD
  GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS
    REFLECTANCE_MULT_BAND_1 = 2.75E-05
    REFLECTANCE_ADD_BAND_1 = -0.200000
  END_GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS
  GROUP = LEVEL1_PROCESSING_RECORD
    LANDSAT_SCENE_ID = "LC80740722019045LGN00"
    LANDSAT_PRODUCT_ID = "LC08_L1TP_074072_20190214_20190222_02_T1"
    PROCESSING_LEVEL = "L1TP"
  END_GROUP = LEVEL1_PROCESSING_RECORD
END_GROUP = LANDSAT_METADATA_FILE
END
"""


def test_a_collection_2_mtl_gives_the_scene_facts() -> None:
    facts = landsat_metadata(parse_mtl(C2_MTL), "x_MTL.txt")

    assert facts.product_id == "LC08_L2SP_074072_20190214_20200829_02_T1"
    assert (facts.collection, facts.collection_category, facts.processing_level) == (
        2,
        "T1",
        "L2SP",
    )
    assert (facts.platform, facts.sensor, facts.region_code) == ("landsat-8", "OLI_TIRS", "074072")
    assert facts.acquired == datetime(2019, 2, 14, 22, 23, 31, 185516, tzinfo=UTC)
    assert (facts.sun_azimuth, facts.sun_elevation) == (91.78154755, 55.08342513)
    assert facts.cloud_cover == 28.22
    assert facts.cloud_cover_land is None  # USGS's -1: not assessed
    assert facts.scene_id == "LC80740722019045LGN00"
    assert facts.reflectance_algorithm == "LaSRC_1.5.0"
    assert facts.reflectance_rescaling == {1: (2.75e-05, -0.2)}
    assert facts.file_names["QUALITY_L1_PIXEL"].endswith("_QA_PIXEL.TIF")
    # The northern zone south of the equator; corners are pixel centres, so edges lie 15 m out.
    assert facts.geobox.crs is not None and facts.geobox.crs.epsg == 32660
    assert facts.geobox.shape == (7791, 7681)
    assert tuple(facts.geobox.transform)[:6] == (30.0, 0.0, 540270.0, 0.0, -30.0, -1784670.0)
    assert facts.generated == datetime(2020, 8, 29, 10, 11, 12, tzinfo=UTC)


def test_corners_that_disagree_with_the_grid_are_a_corrupt_scene() -> None:
    broken = C2_MTL.replace("CORNER_UR_LON_PRODUCT = 179.53087", "CORNER_UR_LON_PRODUCT = 178.9")
    with pytest.raises(CorruptScene, match=r"corner UR is at lon 178\.9"):
        landsat_metadata(parse_mtl(broken), "x_MTL.txt")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (("REFLECTIVE_LINES = 7791", "REFLECTIVE_LINES = 7000"), "is not 7681 x 7000 cells"),
        (('MAP_PROJECTION = "UTM"', 'MAP_PROJECTION = "SOM"'), "MAP_PROJECTION 'SOM'"),
        (("    SUN_AZIMUTH = 91.78154755\n", ""), "has no SUN_AZIMUTH"),
        (("WRS_PATH = 74", 'WRS_PATH = "seventy"'), "WRS_PATH = 'seventy' is not a number"),
        (("DATE_ACQUIRED = 2019-02-14", "DATE_ACQUIRED = 2019-02-30"), "is not a time"),
        (("LANDSAT_METADATA_FILE", "SOMETHING_ELSE"), "is not a Landsat MTL"),
    ],
)
def test_a_broken_mtl_says_which_key(change: tuple[str, str], reason: str) -> None:
    with pytest.raises(CorruptScene, match=reason):
        landsat_metadata(parse_mtl(C2_MTL.replace(*change)), "x_MTL.txt")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("GROUP = A\n  X = 1\nEND", "group A is never closed"),
        ("GROUP = A\nEND_GROUP = B\nEND", "line 2: END_GROUP = B closes A"),
        ("GROUP = A\nEND_GROUP = A\n", "no END line"),
        ("GROUP = A\n  just words\nEND_GROUP = A\nEND", "line 2: 'just words' is not KEY = value"),
        ("END\nX = 1", "line 2: 'X = 1' follows END"),
    ],
)
def test_text_that_is_not_an_mtl_is_refused_naming_the_line(text: str, reason: str) -> None:
    with pytest.raises(MtlError, match=reason):
        parse_mtl(text)


_KEYS = st.from_regex(r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True).filter(
    lambda key: key not in ("GROUP", "END_GROUP", "END")
)
_QUOTED = st.text(alphabet=string.ascii_letters + string.digits + " .-_:/()", max_size=30).map(str)
_BARE = st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9:]{8}Z)?", fullmatch=True).map(Bare)
_VALUES = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    _QUOTED,
    _BARE,
)
_GROUPS = st.recursive(
    st.dictionaries(_KEYS, _VALUES, max_size=6),
    lambda children: st.dictionaries(_KEYS, children, min_size=1, max_size=3),
    max_leaves=20,
)


@given(document=st.dictionaries(_KEYS, _GROUPS, min_size=1, max_size=3))
def test_any_mtl_reads_back_as_written(document: dict[str, Any]) -> None:
    assert parse_mtl(render_mtl(document)) == document


SCENES = [
    "LC08_L2SP_074072_20190214_20200829_02_T1",
    "LC09_L2SP_074072_20220214_20220216_02_T1",
    "LE07_L2SP_074072_20190214_20200829_02_T2",
    "LT05_L1TP_074072_20090214_20161029_01_T1",
    "LC08_L1TP_072074_20190214_20190302_01_T1",
    "LO08_L2SR_074072_20190214_20200829_02_RT",
]


@pytest.mark.parametrize("scene", SCENES)
@pytest.mark.parametrize("suffix", ["", ".tar", ".tar.gz"])
def test_usgs_product_names_are_accepted_as_scene_requests(scene: str, suffix: str) -> None:
    request, _ignored = parse_request({"in_scene": scene + suffix, "inter_dir": "/tmp/x"})
    assert isinstance(request, SceneRequest)
    assert request.in_scene == scene
    assert request.pool == "ard"
    assert request.scene_level == scene.split("_")[1]


@pytest.mark.parametrize(
    "scene",
    [
        "LC08_L2SP_74072_20190214_20200829_02_T1",  # path of two digits
        "LC08_L3SP_074072_20190214_20200829_02_T1",  # no such level
        "LC08_L2SP_074072_20190214_20200829_03_T1",  # no Collection 3
        "LC08_L2SP_074072_20190214_20200829_02_T3",  # no such category
        "LX08_L2SP_074072_20190214_20200829_02_T1",  # no such sensor
        "LC80740722019045LGN00",  # a scene id, not a product id
    ],
)
def test_malformed_landsat_names_are_refused_with_both_conventions_named(scene: str) -> None:
    with pytest.raises(InvalidRequest, match="nor a USGS Landsat product name"):
        parse_request({"in_scene": scene, "inter_dir": "/tmp/x"})


def test_the_landsat_plugins_take_only_whole_names_of_their_own_collection() -> None:
    from services.worker.ard.landsat import LandsatCollection1, LandsatCollection2

    c1, c2 = LandsatCollection1(), LandsatCollection2()
    assert c2.accepts("LC08_L2SP_074072_20190214_20200829_02_T1")
    assert not c1.accepts("LC08_L2SP_074072_20190214_20200829_02_T1")
    assert c1.accepts("LC08_L1TP_072074_20190214_20190302_01_T1")
    assert not c2.accepts("LC08_L2SP_074072_20190214_20200829_02_T1\n")
    assert not c2.accepts("S2A_MSIL2A_20190812T235741_N0213_R030_T56LRR_20190813T014708")


def test_espa_xml_lists_its_bands_with_fill_and_scale() -> None:
    text = """<?xml version="1.0" encoding="UTF-8"?>
    <espa_metadata version="2.0" xmlns="http://espa.cr.usgs.gov/v2">
      <global_metadata><product_id>LC08_L1TP_072074_20190214_20190302_01_T1</product_id>
      </global_metadata>
      <bands>
        <band product="sr_refl" name="sr_band2" data_type="INT16" nlines="10" nsamps="12"
              fill_value="-9999" scale_factor="0.000100" app_version="LaSRC_1.4.1">
          <file_name>LC08_L1TP_072074_20190214_20190302_01_T1_sr_band2.tif</file_name>
        </band>
        <band product="level2_qa" name="pixel_qa" data_type="UINT16" fill_value="1">
          <file_name>LC08_L1TP_072074_20190214_20190302_01_T1_pixel_qa.tif</file_name>
        </band>
      </bands>
    </espa_metadata>"""

    espa = parse_espa(text, "x.xml")

    assert espa.product_id == "LC08_L1TP_072074_20190214_20190302_01_T1"
    assert [band.name for band in espa.surface_reflectance] == ["sr_band2"]
    band = espa.bands["sr_band2"]
    assert (band.fill_value, band.scale_factor, band.lines, band.samples) == (-9999, 0.0001, 10, 12)
    assert espa.algorithm == "LaSRC_1.4.1"
    assert espa.bands["pixel_qa"].fill_value == 1
    with pytest.raises(CorruptScene, match="not readable XML"):
        parse_espa("<espa_metadata><bands>", "x.xml")
