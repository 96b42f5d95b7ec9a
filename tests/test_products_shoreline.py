"""The shoreline follows the true coast within a pixel, and tides filter observations as numbers."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from shapely.geometry import MultiLineString, Point, shape

from services.worker.products import ProductContext, TideRange, TideTable
from services.worker.products.shoreline import observations_within_tide
from shared.errors import NoData, Permanent
from tests.test_products_support import (
    ALL_PRODUCTS,
    PIXEL,
    TILE_LEFT,
    TILE_TOP,
    Metres,
    Scene,
    Truth,
    island_coast,
    island_distance,
    run_product,
    straight_coast,
    straight_coast_distance,
    straight_coast_y,
    synthetic_scene,
)

#: Dates 2-6 of ten are taken at high tide, when the sea stands 300 m further inland.
TIDE_HEIGHTS = (9.0, 9.4, 9.5, 9.75, 10.0, 10.25, 10.5, 10.6, 11.0, 8.0)
HIGH_TIDE_DATES = [2, 3, 4, 5, 6]
HIGH_TIDE_SHIFT = 300.0


def high_tide_coast(x: Metres, y: Metres) -> Truth:
    return straight_coast(x, y - HIGH_TIDE_SHIFT)


def high_tide_distance(x: Metres, y: Metres) -> Metres:
    return straight_coast_distance(x, y - HIGH_TIDE_SHIFT)


def tidal_scene(product: str = "ls8_usgs_sr_scene") -> Scene:
    coasts = [high_tide_coast if t in HIGH_TIDE_DATES else straight_coast for t in range(10)]
    return synthetic_scene(product, dates=10, seed=41, coasts=coasts)


def write_tide_table(path: Path, scene: Scene) -> Path:
    """Readings an hour either side of each acquisition, at the height of that acquisition."""
    lines = ["time,height"]
    for when, height in zip(scene.times, TIDE_HEIGHTS, strict=True):
        for hours in (-1, 1):
            moment = (when + np.timedelta64(hours, "h")).astype("datetime64[s]")
            lines.append(f"{moment}Z,{height}")
    path.write_text("\n".join(lines) + "\n")
    return path


def shoreline_of(vectors: dict[str, dict]) -> MultiLineString:
    collection = vectors["shoreline"]
    assert collection["type"] == "FeatureCollection"
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::3460"
    json.dumps(collection, allow_nan=False)  # writable as it is
    lines = [shape(feature["geometry"]) for feature in collection["features"]]
    assert lines and all(line.geom_type == "LineString" for line in lines)
    return MultiLineString(lines)


def vertices(lines: MultiLineString) -> npt.NDArray[np.float64]:
    return np.concatenate([np.asarray(line.coords) for line in lines.geoms])


def inside_tile(points: npt.NDArray[np.float64], margin: float) -> npt.NDArray[np.bool_]:
    size = 64 * PIXEL
    x, y = points[:, 0], points[:, 1]
    return (
        (x > TILE_LEFT + margin)
        & (x < TILE_LEFT + size - margin)
        & (y < TILE_TOP - margin)
        & (y > TILE_TOP - size + margin)
    )


@pytest.mark.parametrize("product", ALL_PRODUCTS)
def test_shoreline_lies_within_a_pixel_of_a_straight_coast(product: str) -> None:
    scene = synthetic_scene(product, dates=8, seed=42)

    result, vectors = run_product("shoreline", scene)
    lines = shoreline_of(vectors)

    points = vertices(lines)
    assert straight_coast_distance(points[:, 0], points[:, 1]).max() <= PIXEL
    # And the whole coast is traced, not just a piece of it.
    xs = np.linspace(TILE_LEFT, TILE_LEFT + 64 * PIXEL, 200)
    coast = np.column_stack([xs, straight_coast_y(xs)])
    for x, y in coast[inside_tile(coast, margin=PIXEL)]:
        assert lines.distance(Point(x, y)) <= PIXEL
    assert result["mndwi"].dtype == np.float32


def test_shoreline_lies_within_a_pixel_of_a_round_island() -> None:
    scene = synthetic_scene("ls8_usgs_sr_scene", dates=8, seed=43, coasts=[island_coast])

    _result, vectors = run_product("shoreline", scene)
    lines = shoreline_of(vectors)

    points = vertices(lines)
    assert island_distance(points[:, 0], points[:, 1]).max() <= PIXEL
    assert len(lines.geoms) == 1 and lines.geoms[0].is_closed
    assert lines.geoms[0].length == pytest.approx(2 * np.pi * 610.0, rel=0.03)


def test_the_raster_is_the_median_water_index_of_clear_observations() -> None:
    scene = synthetic_scene("s2_esa_sr_granule", dates=7, seed=44)
    default = (("opening", 2), ("dilation", 5))  # odc-stats' Sentinel-2 cloud buffer
    usable = scene.usable(("green", "swir1"), default, default)
    green = scene.reflectance_int16("green").astype("float64")
    swir1 = scene.reflectance_int16("swir1").astype("float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmedian(np.where(usable, (green - swir1) / (green + swir1), np.nan), axis=0)

    result, _ = run_product("shoreline", scene)

    np.testing.assert_allclose(result["mndwi"].values, expected, atol=2e-6)


def test_tide_range_keeps_only_observations_between_the_heights_as_numbers(tmp_path: Path) -> None:
    scene = tidal_scene()
    table = TideTable.from_csv(write_tide_table(tmp_path / "tides.csv", scene))
    context = ProductContext(tide_table=table)
    options = {"tide_range_from": "9.5", "tide_range_to": "10.5"}

    result, vectors = run_product("shoreline", scene, options, context)

    kept_only, _ = run_product("shoreline", _dates(scene, HIGH_TIDE_DATES))
    np.testing.assert_array_equal(result["mndwi"].values, kept_only["mndwi"].values)
    points = vertices(shoreline_of(vectors))
    assert high_tide_distance(points[:, 0], points[:, 1]).max() <= PIXEL


def test_tide_filter_keeps_exactly_the_dates_whose_height_is_in_range(tmp_path: Path) -> None:
    scene = tidal_scene()
    table = TideTable.from_csv(write_tide_table(tmp_path / "tides.csv", scene))

    kept = observations_within_tide(scene.cube, table, TideRange(low=9.5, high=10.5))

    np.testing.assert_array_equal(kept["time"].values, scene.times[HIGH_TIDE_DATES])


def test_ten_is_inside_nine_and_a_half_to_ten(tmp_path: Path) -> None:
    # As text "10" < "9.5": the original compared strings and kept the wrong dates.
    scene = tidal_scene()
    context = ProductContext(TideTable.from_csv(write_tide_table(tmp_path / "t.csv", scene)))
    options = {"tide_range_from": "9.5", "tide_range_to": "10"}

    result, _ = run_product("shoreline", scene, options, context)

    kept_only, _ = run_product("shoreline", _dates(scene, [2, 3, 4]))
    np.testing.assert_array_equal(result["mndwi"].values, kept_only["mndwi"].values)


def test_no_observation_inside_the_tide_range_is_no_data(tmp_path: Path) -> None:
    scene = tidal_scene()
    context = ProductContext(TideTable.from_csv(write_tide_table(tmp_path / "t.csv", scene)))
    with pytest.raises(NoData, match="between 20 and 30"):
        run_product("shoreline", scene, {"tide_range_from": "20", "tide_range_to": "30"}, context)


def test_a_tide_range_without_a_tide_table_says_how_to_configure_one() -> None:
    scene = tidal_scene()
    with pytest.raises(Permanent, match="CONVEYOR_TIDE_TABLE"):
        run_product("shoreline", scene, {"tide_range_from": "9", "tide_range_to": "10"})


def test_tide_table_interpolates_between_readings_in_utc(tmp_path: Path) -> None:
    path = tmp_path / "tides.csv"
    path.write_text(
        "time,height\n"
        "2019-03-01T00:00:00Z,1.0\n"
        "2019-03-01T12:00:00+12:00,-9999\n"  # missing reading, ignored
        "2019-03-01T14:00:00+12:00,3.0\n"  # 02:00 UTC
        "2019-03-01T04:00:00,2.0\n"
    )
    table = TideTable.from_csv(path)

    heights = table.heights_at(
        np.array(["2019-03-01T01:00", "2019-03-01T03:00", "2019-03-01T05:00"], "datetime64[ns]")
    )

    assert heights[:2].tolist() == pytest.approx([2.0, 2.5])
    assert np.isnan(heights[2])


def test_a_tide_table_without_time_and_height_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tides.csv"
    path.write_text("when,level\n2019-03-01T00:00:00Z,1.0\n")
    with pytest.raises(Permanent, match="columns time and height"):
        TideTable.from_csv(path)


def test_a_bad_tide_reading_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "tides.csv"
    path.write_text("time,height\n2019-03-01T00:00:00Z,1.0\n2019-03-01T01:00:00Z,high\n")
    with pytest.raises(Permanent, match="line 3"):
        TideTable.from_csv(path)


def test_product_context_reads_the_configured_tide_table(tmp_path: Path) -> None:
    class Settings:
        tide_table: Path | None = write_tide_table(tmp_path / "tides.csv", tidal_scene())

    context = ProductContext.from_settings(Settings())
    assert context.tide_table is not None
    assert context.tide_table.heights.size == 20
    Settings.tide_table = None
    assert ProductContext.from_settings(Settings()).tide_table is None


def _dates(scene: Scene, dates: list[int]) -> Scene:
    subset = Scene(
        product=scene.product,
        geobox=scene.geobox,
        times=scene.times[dates],
        raw={name: values[dates] for name, values in scene.raw.items()},
        water_fraction=scene.water_fraction,
        codes=scene.codes,
        nodata=scene.nodata,
    )
    return subset


# DEA Coastlines' tide filter. The table's readings are the ten heights above, each twice: its
# mean (standing for mean sea level) is 9.8 and the observed range 8.0 to 11.0.


def tidal_context(tmp_path: Path, scene: Scene) -> ProductContext:
    return ProductContext(TideTable.from_csv(write_tide_table(tmp_path / "tides.csv", scene)))


def test_by_default_a_tide_table_keeps_the_days_near_mean_sea_level(tmp_path: Path) -> None:
    # 9.8 +- 0.25 x 3.0 keeps 9.05..10.55: the heights 9.4, 9.5, 9.75, 10.0, 10.25, 10.5.
    scene = tidal_scene()

    result, _ = run_product("shoreline", scene, {}, tidal_context(tmp_path, scene))

    kept_only, _ = run_product("shoreline", _dates(scene, [1, 2, 3, 4, 5, 6]))
    np.testing.assert_array_equal(result["mndwi"].values, kept_only["mndwi"].values)


def test_the_tide_band_takes_its_centre_and_share_from_the_request(tmp_path: Path) -> None:
    # 10 +- 0.1 x 3.0 keeps 9.7..10.3: 9.75, 10.0 and 10.25.
    scene = tidal_scene()
    options = {"tide_centre": "10", "tide_band": "0.1"}

    result, _ = run_product("shoreline", scene, options, tidal_context(tmp_path, scene))

    kept_only, _ = run_product("shoreline", _dates(scene, [3, 4, 5]))
    np.testing.assert_array_equal(result["mndwi"].values, kept_only["mndwi"].values)


def test_tide_filter_none_keeps_every_day(tmp_path: Path) -> None:
    scene = tidal_scene()
    context = tidal_context(tmp_path, scene)

    result, _ = run_product("shoreline", scene, {"tide_filter": "none"}, context)

    unfiltered, _ = run_product("shoreline", scene)
    np.testing.assert_array_equal(result["mndwi"].values, unfiltered["mndwi"].values)


def test_asking_for_the_tide_band_without_a_table_says_how_to_configure_one() -> None:
    with pytest.raises(Permanent, match="CONVEYOR_TIDE_TABLE"):
        run_product("shoreline", tidal_scene(), {"tide_band": "0.2"})


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"tide_band": "0.7"}, "out of range"),
        ({"tide_band": "0"}, "out of range"),
        ({"tide_centre": "msl"}, "not a number"),
        ({"tide_filter": "fes2014"}, "not dea or none"),
        ({"tide_filter": "none", "tide_band": "0.2"}, "would be ignored"),
        ({"tide_range_from": "1", "tide_range_to": "2", "tide_centre": "0"}, "not both"),
    ],
)
def test_bad_tide_options_are_refused_by_the_dispatcher(options: dict, reason: str) -> None:
    from shared.catalogue import check_request
    from shared.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match=reason):
        check_request("shoreline", "ls8_usgs_sr_scene", options)


@pytest.mark.parametrize("product", ALL_PRODUCTS)
def test_shoreline_loads_reflectance_cubic_and_the_mask_nearest(product: str) -> None:
    from services.worker.products import get_product, sensor_for

    sensor = sensor_for(product)
    assert get_product("shoreline").load_resampling(sensor) == {
        sensor.mask_band: "nearest",
        "*": "cubic",
    }
    assert get_product("water").load_resampling(sensor)[sensor.mask_band] == "nearest"
