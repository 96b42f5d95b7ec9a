"""From a validated request to the jobs it needs: pure, no I/O.

A `JobPlan` knows how many jobs a request makes and how large the largest is before any job
exists, so a request over a limit is refused by its figures (`check_limits`), and an allowed one
is made a batch at a time (`JobPlan.jobs(start)`), in the same order every time: a dispatcher
that takes over a half-dispatched request makes exactly the jobs that are missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice

from shared.errors import InvalidRequest
from shared.jobs import (
    Job,
    Period,
    TileArea,
    count_periods,
    iter_periods,
    product_job,
    scene_job,
    water_job,
)
from shared.limits import LimitExceeded, RequestLimits, check_limit, figure, setting_name
from shared.messages import ProductRequest, Request, SceneRequest, WaterClassificationRequest
from shared.tiling import CellPlan, area_pixels, grid_anchor, plan_tiles, whole_area

RequestCheck = Callable[[ProductRequest], None]


@dataclass(frozen=True)
class JobPlan:
    """The jobs of one request: tiles (or one whole-box area) x periods, or one scene, or one
    water classification job (a dataset, or the search the ard worker expands into a job per
    dataset: the dispatcher never queries the datacube index)."""

    request: Request
    tiles: CellPlan | None = None
    whole: TileArea | None = None
    periods: int = 1

    @property
    def areas(self) -> int:
        if self.tiles is not None:
            return self.tiles.count
        return 1

    @property
    def count(self) -> int:
        """How many jobs the request makes."""
        return self.areas * self.periods

    @property
    def largest_job_pixels(self) -> int:
        if self.tiles is not None:
            return self.tiles.largest_tile_pixels
        if self.whole is not None:
            return area_pixels(self.whole)
        return 0

    def jobs(self, start: int = 0) -> Iterator[Job]:
        """The jobs in their fixed order (area by area, each area's periods in turn), from the
        `start`-th on; each is made only when asked for."""
        request = self.request
        if isinstance(request, SceneRequest):
            if start == 0:
                yield scene_job(request)
            return
        if isinstance(request, WaterClassificationRequest):
            if start == 0:
                yield water_job(request)
            return
        periods = list(self._periods())
        area_skip, period_skip = divmod(start, len(periods))
        areas: Iterator[TileArea]
        if self.tiles is not None:
            areas = self.tiles.areas(area_skip)
        else:
            assert self.whole is not None
            areas = islice(iter([self.whole]), area_skip, None)
        for area in areas:
            for period in periods[period_skip:]:
                yield product_job(request, area, period)
            period_skip = 0

    def _periods(self) -> Iterator[Period]:
        request = self.request
        assert isinstance(request, ProductRequest)
        return iter_periods(request.time_from, request.time_to, request.time_step)


def plan_request(
    request: Request,
    *,
    tile_size: float | None,
    tile_size_pixels: int,
    check: RequestCheck | None = None,
) -> JobPlan:
    """The plan of a request, counted but not made.

    A product request becomes the whole cells of its output grid that its area meets (see
    `shared.tiling`: one product, one grid); a request with `naming: legacy` is one job over its
    whole box, as the original made it. `check` raises `InvalidRequest` when no product plugin
    can serve the request.
    """
    if isinstance(request, SceneRequest | WaterClassificationRequest):
        return JobPlan(request)
    if check is not None:
        check(request)
    resolution = request.output_resolution
    size = tile_size if tile_size is not None else tile_size_pixels * resolution
    periods = count_periods(request.time_from, request.time_to, request.time_step)
    anchor = grid_anchor(request.product, request.output_crs)
    if request.naming == "legacy":
        # The original names carry the request's box, so the original made one output per box.
        whole = whole_area(
            request.area_bounds, request.area_crs, request.output_crs, resolution, anchor=anchor
        )
        return JobPlan(request, whole=whole, periods=periods)
    tiles = plan_tiles(
        request.area_bounds, request.area_crs, request.output_crs, resolution, size, anchor=anchor
    )
    if tiles.count == 0:
        raise InvalidRequest(
            f"the area holds no whole pixel at resolution {resolution} in {request.output_crs}"
        )
    return JobPlan(request, tiles=tiles, periods=periods)


def check_limits(plan: JobPlan, limits: RequestLimits) -> None:
    """`LimitExceeded` naming the figure, the limit and its setting, for the first limit broken."""
    request = plan.request
    if not isinstance(request, ProductRequest):
        return
    check_limit(
        "the request makes {} jobs", plan.count, limits.max_jobs_per_request, "max_jobs_per_request"
    )
    check_limit(
        "the request splits into {} periods",
        plan.periods,
        limits.max_periods_per_request,
        "max_periods_per_request",
    )
    check_limit(
        # A legacy-named request is one job over its whole box, however large the box.
        "the request's legacy-named job covers its whole box, {} pixels"
        if plan.whole is not None
        else "a job of the request covers {} pixels",
        plan.largest_job_pixels,
        limits.max_pixels_per_job,
        "max_pixels_per_job",
    )
    for axis, chunk in request.dask_chunks().items():
        if axis in ("x", "y") and chunk < limits.min_dask_chunk:
            raise LimitExceeded(
                f"the request asks for Dask chunks of {figure(chunk)} pixels along {axis}; the "
                f"smallest allowed is {limits.min_dask_chunk:,} ({setting_name('min_dask_chunk')})"
            )


def plan_jobs(
    request: Request,
    *,
    tile_size: float | None,
    tile_size_pixels: int,
    check: RequestCheck | None = None,
) -> list[Job]:
    """Every job of a request known to be small (tests, benchmarks): `plan_request` as a list."""
    plan = plan_request(
        request, tile_size=tile_size, tile_size_pixels=tile_size_pixels, check=check
    )
    check_limits(plan, RequestLimits.model_construct())
    return list(plan.jobs())
