"""From a validated request to the jobs it needs: pure, no I/O."""

from __future__ import annotations

from collections.abc import Callable

from shared.jobs import Job, product_job, scene_job, split_periods
from shared.messages import ProductRequest, Request, SceneRequest
from shared.tiling import grid_anchor, tile_areas, whole_area

RequestCheck = Callable[[ProductRequest], None]


def plan_jobs(
    request: Request,
    *,
    tile_size: float | None,
    tile_size_pixels: int,
    check: RequestCheck | None = None,
) -> list[Job]:
    """Tile jobs for a product request (cells x periods), or the one job of a scene request.

    A product request becomes the whole cells of its output grid that its area meets (see
    `shared.tiling`: one product, one grid); a request with `naming: legacy` is one job over its
    whole box, as the original made it.

    `check` raises `InvalidRequest` when no product plugin can serve the request.
    """
    if isinstance(request, SceneRequest):
        return [scene_job(request)]
    if check is not None:
        check(request)
    resolution = request.output_resolution
    size = tile_size if tile_size is not None else tile_size_pixels * resolution
    anchor = grid_anchor(request.product, request.output_crs)
    if request.naming == "legacy":
        # The original names carry the request's box, so the original made one output per box.
        areas = [
            whole_area(
                request.area_bounds, request.area_crs, request.output_crs, resolution, anchor=anchor
            )
        ]
    else:
        areas = tile_areas(
            request.area_bounds, request.area_crs, request.output_crs, resolution, size,
            anchor=anchor,
        )  # fmt: skip
    periods = split_periods(request.time_from, request.time_to, request.time_step)
    return [product_job(request, area, period) for area in areas for period in periods]
