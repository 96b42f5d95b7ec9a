"""A small synthetic archive indexed in the test PostgreSQL, shared by worker tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from devtools.archive.synthetic import generate_archive
from shared.datacube import (
    DatacubeSettings,
    add_products,
    index_datasets,
    init_index,
    open_datacube,
)


@dataclass
class ArchiveFixture:
    db_url: str
    root: Path
    records: list[Any] = field(default_factory=list)

    @property
    def environment(self) -> dict[str, str]:
        """What a worker process needs to reach this index."""
        return {"CONVEYOR_DB_URL": self.db_url}

    def settings(self) -> DatacubeSettings:
        return DatacubeSettings(db_url=self.db_url)  # type: ignore[arg-type]

    def datacube(self) -> Any:
        return open_datacube(self.settings())


def build_archive(
    db_url: str,
    root: Path,
    product: str,
    bounds: tuple[float, float, float, float],
    time_from: date,
    time_to: date,
    crs: str = "EPSG:3460",
) -> ArchiveFixture:
    fixture = ArchiveFixture(db_url=db_url, root=root)
    settings = fixture.settings()
    init_index(settings)
    datacube = open_datacube(settings)
    try:
        add_products(datacube, [product])
        fixture.records = generate_archive(product, bounds, time_from, time_to, root, crs=crs)
        index_datasets(datacube, [record.metadata_path for record in fixture.records])
    finally:
        datacube.close()
    return fixture
