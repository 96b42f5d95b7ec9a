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


def prepare_demo_archive(
    settings: DatacubeSettings | None = None,
    out_dir: Path | None = None,
    *,
    state_dir: Path | None = None,
    console: Console | None = None,
    seed: int = DEFAULT_SEED,
    with_safe_scene: bool = True,
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
    return archive


def _add_safe_scene(archive: DemoArchive, safe_dir: Path, seed: int) -> None:
    try:
        from devtools.archive.safe import prepare_demo_scene
    except ImportError:  # the Sentinel-2 SAFE generator is optional here
        return
    archive.safe_dir = safe_dir
    archive.scene_name = prepare_demo_scene(safe_dir, seed=seed)
