"""The demo archive: the seed's Fiji box for 2019, Landsat 8, synthesised and indexed.

`make demo` runs the original work items against it; a second run finds everything in place
(same ids, same files, already indexed) and takes seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from rich.console import Console

from devtools.archive.scene_files import SceneRecord
from devtools.archive.synthetic import DEFAULT_SEED, generate_archive
from shared.datacube import (
    DatacubeSettings,
    IndexReport,
    add_products,
    index_datasets,
    init_index,
    locate_index,
    open_location,
)
from shared.seed import SEED_BOX_EPSG3460

DEMO_PRODUCT = "ls8_usgs_sr_scene"
DEMO_CRS = "EPSG:3460"
DEMO_PERIOD = (date(2019, 1, 1), date(2019, 12, 31))
# Landsat downloads for `RPUSH jobLS`: a Landsat 8 scene astride the antimeridian off Taveuni
# (lon/lat), outside the seed's box, as USGS ships it in both collections.
LANDSAT_AREA = (179.92, -16.90, 180.08, -16.78)
LANDSAT_PERIOD = (date(2019, 1, 1), date(2019, 1, 31))


@dataclass(frozen=True)
class DemoLandsatScene:
    """A USGS download in the scene archive, and the product its ARD is indexed as."""

    name: str
    product: str
    crs: str
    bounds: tuple[float, float, float, float]


@dataclass
class DemoArchive:
    """What the demo needs to run workers against the archive."""

    records: list[SceneRecord]
    index_report: IndexReport
    index_description: str  # where the index is, without secrets
    # Variables that point another process (dispatcher, workers) at the same index.
    environment: dict[str, str] = field(default_factory=dict)
    archive_dir: Path = Path()
    # The Sentinel-2 SAFE scene for the ARD work item, when that generator is installed.
    safe_dir: Path | None = None
    scene_name: str | None = None
    # USGS Landsat downloads (C1 and C2 tarballs) in the same scene archive as the SAFE scene.
    landsat_scenes: list[DemoLandsatScene] = field(default_factory=list)


def prepare_demo_archive(
    settings: DatacubeSettings | None = None,
    out_dir: Path | None = None,
    *,
    state_dir: Path | None = None,
    console: Console | None = None,
    seed: int = DEFAULT_SEED,
    with_safe_scene: bool = True,
    with_landsat_scenes: bool = True,
) -> DemoArchive:
    """Synthesise and index the demo archive under `out_dir` (default `state_dir/archive`).

    `settings` default to `DatacubeSettings()` with `state_dir` (so the embedded PostgreSQL
    lives beside the demo's other servers).
    """
    if settings is None:
        settings = (
            DatacubeSettings() if state_dir is None else DatacubeSettings(state_dir=state_dir)
        )
    archive_dir = (out_dir or settings.state_dir / "archive").resolve()
    say = console.print if console is not None else (lambda *_args, **_kwargs: None)
    location = locate_index(settings)
    say(f"datacube index: {location.description}")
    init_index(settings)
    datacube = open_location(location, app="conveyor-demo")
    try:
        add_products(datacube)
        say(f"synthesising {DEMO_PRODUCT} over the seed's Fiji box for 2019 into {archive_dir}")
        records = generate_archive(
            DEMO_PRODUCT, SEED_BOX_EPSG3460, *DEMO_PERIOD, archive_dir, seed, crs=DEMO_CRS
        )
        report = index_datasets(datacube, [record.metadata_path for record in records])
    finally:
        datacube.close()
    say(
        f"archive: {len(records)} scenes, {len(report.added)} newly indexed, "
        f"{len(report.already_indexed)} already indexed"
    )
    archive = DemoArchive(
        records=records,
        index_report=report,
        index_description=location.description,
        environment=location.child_environment(),
        archive_dir=archive_dir,
    )
    if with_safe_scene:
        _add_safe_scene(archive, archive_dir.parent / "safe", seed)
    if with_landsat_scenes:
        _add_landsat_scenes(archive, archive_dir.parent, seed)
    return archive


def _add_safe_scene(archive: DemoArchive, safe_dir: Path, seed: int) -> None:
    try:
        from devtools.archive.safe import prepare_demo_scene
    except ImportError:  # the Sentinel-2 SAFE generator is optional here
        return
    archive.safe_dir = safe_dir
    archive.scene_name = prepare_demo_scene(safe_dir, seed=seed)


def _add_landsat_scenes(archive: DemoArchive, state_dir: Path, seed: int) -> None:
    """A Landsat 8 scene as a USGS Collection 1 ESPA order and a Collection 2 Level-2 product,
    written into the scene archive (beside the SAFE scene) unless they are there already."""
    from devtools.archive.usgs import scene_name, usgs_geobox, write_usgs_scene

    scene_dir = archive.safe_dir or state_dir / "safe"
    records = generate_archive(
        "ls8_usgs_sr_scene", LANDSAT_AREA, *LANDSAT_PERIOD, state_dir / "usgs-source", seed,
        processes=1,
    )  # fmt: skip
    # The largest window of the area, and of those the clearest.
    record = max(records, key=lambda r: (r.geobox.shape[0] * r.geobox.shape[1], -r.cloud_cover))
    geobox = usgs_geobox(record.geobox)
    box = geobox.boundingbox
    for collection, product, suffix in (
        (1, "ls8_usgs_sr_scene", ".tar.gz"),
        (2, "ls8_c2l2_sr", ".tar"),
    ):
        name = scene_name(record, collection)
        if not (scene_dir / f"{name}{suffix}").exists():
            write_usgs_scene(record, scene_dir, collection=collection)
        archive.landsat_scenes.append(
            DemoLandsatScene(
                name=name,
                product=product,
                crs=str(geobox.crs),
                bounds=(box.left, box.bottom, box.right, box.top),
            )
        )
    archive.safe_dir = scene_dir
