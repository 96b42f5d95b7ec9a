"""What to write for one tile and period of a product: everything that shapes names and metadata.

An `OutputSpec` is known before any pixel is loaded (the worker finds the source datasets first),
so the commit check (`is_committed`) and the dataset id need nothing but the spec.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.jobs import Period
from shared.paths import relative_path

NamingMode = Literal["odc", "legacy"]
Compression = Literal["DEFLATE", "ZSTD"]
OverviewResampling = Literal["nearest", "average", "mode", "bilinear", "cubic"]

DEFAULT_VERSION = "1.0.0"


class BandSpec(BaseModel):
    """How one output band is stored: its dtype and nodata, and how its overviews are made."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dtype: str
    nodata: float | int | None = None
    units: str = "1"
    # Counts and classes must not be averaged into values that never occur; reflectances may.
    overview_resampling: OverviewResampling = "average"
    #: physical value = stored * scale + offset; None when the stored value is the value.
    scale: float | None = None
    offset: float | None = None

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        try:
            dtype = np.dtype(value)
        except TypeError:
            raise ValueError(
                f"{value!r} is not a numpy dtype (expected e.g. int16, float32)"
            ) from None
        if dtype.kind not in "iuf":
            raise ValueError(f"{value!r} cannot be written as a GeoTIFF band (use an int or float)")
        return dtype.name

    @model_validator(mode="after")
    def _nodata_fits(self) -> BandSpec:
        if self.nodata is None:
            return self
        dtype = np.dtype(self.dtype)
        if dtype.kind == "f":
            return self
        if isinstance(self.nodata, float) and not float(self.nodata).is_integer():
            raise ValueError(f"nodata {self.nodata} is not a whole number, as a {dtype} band needs")
        limits = np.iinfo(dtype)
        if not limits.min <= self.nodata <= limits.max:
            raise ValueError(
                f"nodata {self.nodata} does not fit a {dtype} band ({limits.min}..{limits.max})"
            )
        return self


class CogOptions(BaseModel):
    """Cloud-Optimised GeoTIFF settings shared by every band of a product."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    compression: Compression = "DEFLATE"
    level: int = Field(default=6, ge=1, le=22, description="DEFLATE 1-9, ZSTD 1-22")
    blocksize: int = Field(default=512, ge=16, description="Tile edge in pixels, a multiple of 16")

    @field_validator("blocksize")
    @classmethod
    def _multiple_of_16(cls, value: int) -> int:
        if value % 16:
            raise ValueError(f"blocksize {value} is not a multiple of 16, as GeoTIFF tiles must be")
        return value

    @model_validator(mode="after")
    def _level_in_range(self) -> CogOptions:
        if self.compression == "DEFLATE" and self.level > 9:
            raise ValueError(f"DEFLATE level {self.level} is out of range (1-9)")
        return self


class OutputSpec(BaseModel):
    """One product dataset: a tile and period of a product, written under `prefix`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    product_name: str = Field(
        pattern=r"^[a-z_][a-z0-9_]*$", description="Output product, e.g. ls8_geomedian"
    )
    job_code: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    source_product: str = Field(description="The ODC product read, e.g. ls8_usgs_sr_scene")
    version: str = DEFAULT_VERSION
    tile: str = Field(
        pattern=r"^[A-Za-z0-9_-]+$", description="Tile id on the output grid, e.g. x022y036"
    )
    crs: str = Field(description="Output CRS, e.g. EPSG:3460")
    bounds: tuple[float, float, float, float] = Field(
        description="(left, bottom, right, top) of the tile in `crs`"
    )
    period: Period
    sources: tuple[str, ...] = Field(description="ids of the source datasets")
    source_locations: dict[str, str] = Field(
        default_factory=dict, description="Where a source dataset's metadata lives, by id"
    )
    prefix: str = Field(min_length=1, max_length=1024)
    naming: NamingMode = "odc"
    legacy_bounds: tuple[float, float, float, float] | None = Field(
        default=None,
        description="(x_from, y_from, x_to, y_to) for legacy names; the tile's bounds when unset. "
        "The original worker named files after the request's box, so a one-tile request "
        "passes the request's bounds here.",
    )
    epsg4326_naming: bool = Field(
        default=False, description="Legacy names carry the corners as longitude/latitude"
    )
    bands: dict[str, BandSpec] = Field(default_factory=dict)
    platform: str | None = None
    instrument: str | None = None
    product_family: str | None = None
    producer: str | None = Field(default=None, description="A domain name, e.g. example.org")
    properties: dict[str, Any] = Field(
        default_factory=dict, description="Extra eo3/STAC properties, e.g. odc:collection_number"
    )
    cog: CogOptions = Field(default_factory=CogOptions)

    @field_validator("prefix")
    @classmethod
    def _relative_prefix(cls, value: str) -> str:
        return relative_path(value, what="a relative output path")

    @field_validator("bands")
    @classmethod
    def _band_names(cls, value: dict[str, BandSpec]) -> dict[str, BandSpec]:
        for name in value:
            if not name or not name.replace("_", "").isalnum():
                raise ValueError(f"band name {name!r} must be letters, digits and underscores")
        return value
