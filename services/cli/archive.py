"""`conveyor archive …`: initialise the datacube index, add the products, synthesise and index.

    conveyor archive init
    conveyor archive add-products
    conveyor archive synthesise ls8_usgs_sr_scene --bbox 2130000 3499700 2233300 3600300 \\
        --crs EPSG:3460 --time-from 2019-01-01 --time-to 2019-12-31 --out-dir archive
    conveyor archive index archive/

Every command is idempotent. The index is found as `shared.datacube` describes
(CONVEYOR_DB_URL, datacube's own configuration, or the embedded PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from devtools.archive.catalogue import PRODUCTS
from devtools.archive.demo import prepare_demo_archive
from devtools.archive.synthetic import DEFAULT_SEED, generate_archive
from shared.datacube import (
    DatacubeSettings,
    add_products,
    index_datasets,
    init_index,
    locate_index,
    open_location,
)
from shared.errors import ConveyorError

archive_app = typer.Typer(
    help="The datacube archive: index set-up, product definitions, synthetic scenes, indexing.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()


@contextmanager
def _reported() -> Iterator[None]:
    """ConveyorErrors end the command with their message and exit status 1, no traceback."""
    try:
        yield
    except ConveyorError as error:
        console.print(f"[red]{type(error).__name__}:[/] {error}")
        raise typer.Exit(1) from None


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a date (expected YYYY-MM-DD)") from None


@archive_app.command()
def init() -> None:
    """Create the datacube index schema (with datacube's default metadata types)."""
    with _reported():
        settings = DatacubeSettings()
        created = init_index(settings)
        where = locate_index(settings).description
    console.print(f"index {'created' if created else 'already initialised'} at {where}")


@archive_app.command("add-products")
def add_products_command(
    products: Annotated[
        list[str] | None,
        typer.Argument(help=f"Products to add (default all: {', '.join(PRODUCTS)})"),
    ] = None,
) -> None:
    """Add the archive's product definitions to the index (existing ones are left alone)."""
    with _reported():
        settings = DatacubeSettings()
        init_index(settings)
        datacube = open_location(locate_index(settings))
        outcomes = add_products(datacube, products or None)
    for name, outcome in outcomes.items():
        console.print(f"{name}: {outcome}")


@archive_app.command()
def synthesise(
    product: Annotated[str, typer.Argument(help=f"One of {', '.join(PRODUCTS)}.")],
    bbox: Annotated[
        tuple[float, float, float, float] | None,
        typer.Option(help="left bottom right top, in --crs.", show_default=False),
    ] = None,
    latitude: Annotated[
        tuple[float, float] | None, typer.Option(help="from to (degrees).", show_default=False)
    ] = None,
    longitude: Annotated[
        tuple[float, float] | None, typer.Option(help="from to (degrees).", show_default=False)
    ] = None,
    crs: Annotated[str, typer.Option(help="CRS of --bbox.")] = "EPSG:4326",
    time_from: Annotated[str, typer.Option(help="First day, YYYY-MM-DD.")] = "2019-01-01",
    time_to: Annotated[str, typer.Option(help="Last day, YYYY-MM-DD.")] = "2019-12-31",
    out_dir: Annotated[Path, typer.Option(help="Where scenes are written.")] = Path("archive"),
    seed: Annotated[int, typer.Option(help="Same seed, same archive.")] = DEFAULT_SEED,
    index: Annotated[bool, typer.Option(help="Index the scenes once written.")] = True,
) -> None:
    """Write synthetic scenes (COGs + eo3 documents) over an area and period, then index them."""
    if bbox is not None:
        area, area_crs = bbox, crs
    elif latitude is not None and longitude is not None:
        area = (min(longitude), min(latitude), max(longitude), max(latitude))
        area_crs = "EPSG:4326"
    else:
        raise typer.BadParameter("give --bbox (with --crs) or both --latitude and --longitude")
    with _reported(), _progress() as progress:
        task = progress.add_task(f"synthesising {product}", total=None)
        records = generate_archive(
            product,
            area,
            _day(time_from),
            _day(time_to),
            out_dir,
            seed,
            crs=area_crs,
            on_planned=lambda total: progress.update(task, total=total),
            on_scene=lambda _record: progress.advance(task),
        )
        if index and records:
            progress.add_task("indexing", total=None)
            settings = DatacubeSettings()
            init_index(settings)
            datacube = open_location(locate_index(settings))
            add_products(datacube, [product])
            report = index_datasets(datacube, [record.metadata_path for record in records])
    console.print(f"{len(records)} scenes of {product} under {out_dir}")
    if index and records:
        console.print(f"indexed {len(report.added)}, already indexed {len(report.already_indexed)}")


@archive_app.command("index")
def index_command(
    paths: Annotated[list[Path], typer.Argument(help="eo3 documents or folders of them.")],
    check_files: Annotated[bool, typer.Option(help="Open every band file first.")] = True,
) -> None:
    """Index eo3 dataset documents (folders are searched); already indexed ones are skipped."""
    with _reported():
        settings = DatacubeSettings()
        datacube = open_location(locate_index(settings))
        report = index_datasets(datacube, paths, check_files=check_files)
    console.print(f"indexed {len(report.added)}, already indexed {len(report.already_indexed)}")


@archive_app.command()
def demo(
    out_dir: Annotated[Path, typer.Option(help="Where scenes are written.")] = Path(
        ".conveyor/archive"
    ),
) -> None:
    """Synthesise and index the demo archive: the seed's Fiji box, Landsat 8, 2019."""
    with _reported():
        archive = prepare_demo_archive(DatacubeSettings(), out_dir, console=console)
    console.print(f"{len(archive.records)} scenes indexed at {archive.index_description}")
