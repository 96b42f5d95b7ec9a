"""Morphological filters for cloud and shadow masks, as odc-stats buffers them, and their options.

A filter is a sequence of (operation, radius in pixels) applied in order to a boolean mask, e.g.
`opening 2` (drop specks narrower than about 2 pixels) then `dilation 5` (grow what is left by
5 pixels), which is odc-stats' default for Sentinel-2 cloud classes. Requests spell them as
strings in `options`:

    {"cloud_filter": "opening:3,dilation:6", "shadow_filter": "dilation:6"}
    {"cloud_filter": "none"}                      # the mask as the scene says, unbuffered

Defaults (`DEFAULT_FILTERS`) follow the reference products:

* Landsat: dilation by 6 pixels of cloud and of cloud shadow, as Digital Earth Australia's
  Collection 3 water observation summary (`ga_ls_wo_fq_cyear_3`) and fractional cover
  percentiles (`ga_ls_fc_pc_cyear_3`) configure odc-stats;
* Sentinel-2: opening 2 then dilation 5 of the cloud and shadow classes, odc-stats' `gm-s2`
  default.

This module is pure: it parses and checks. The worker applies filters (`odc.algo`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from shared.errors import InvalidRequest

Operation = Literal["opening", "closing", "dilation", "erosion"]
OPERATIONS: tuple[str, ...] = get_args(Operation)
#: A filter: morphological operations applied in order, each with its radius in pixels.
Filter = tuple[tuple[Operation, int], ...]

CLOUD_FILTER = "cloud_filter"
SHADOW_FILTER = "shadow_filter"
MASK_FILTER_OPTIONS: frozenset[str] = frozenset({CLOUD_FILTER, SHADOW_FILTER})

#: Largest radius of one operation, and how far one filter may reach in all: a tile is read
#: with that many pixels of context around each chunk.
MAX_RADIUS = 32
MAX_REACH = 64
NO_FILTER: Filter = ()


@dataclass(frozen=True)
class MaskFilters:
    """How the cloud mask and the cloud-shadow mask are cleaned up before use."""

    cloud: Filter = NO_FILTER
    shadow: Filter = NO_FILTER


LANDSAT_FILTERS = MaskFilters(cloud=(("dilation", 6),), shadow=(("dilation", 6),))
SENTINEL2_FILTERS = MaskFilters(
    cloud=(("opening", 2), ("dilation", 5)), shadow=(("opening", 2), ("dilation", 5))
)
UNBUFFERED = MaskFilters()

#: By sensor family (`shared.catalogue.Family`).
DEFAULT_FILTERS: Mapping[str, MaskFilters] = {
    "landsat": LANDSAT_FILTERS,
    "sentinel2": SENTINEL2_FILTERS,
}


def reach(mask_filter: Filter) -> int:
    """How many pixels away a pixel's result can depend on: an opening or closing of radius r
    looks 2r away (erosion then dilation), a dilation or erosion r."""
    return sum(2 * radius if operation in ("opening", "closing") else radius
               for operation, radius in mask_filter)  # fmt: skip


def format_filter(mask_filter: Filter) -> str:
    """The option text of a filter: `opening:2,dilation:5`, or `none`."""
    if not mask_filter:
        return "none"
    return ",".join(f"{operation}:{radius}" for operation, radius in mask_filter)


def parse_filter(name: str, text: str) -> Filter:
    """`opening:2,dilation:5` (operations applied in order) or `none`; InvalidRequest otherwise."""
    cleaned = text.strip().lower()
    if cleaned in ("none", ""):
        return NO_FILTER
    steps: list[tuple[Operation, int]] = []
    for part in cleaned.split(","):
        operation, separator, radius_text = part.strip().partition(":")
        operation = operation.strip()
        if not separator or operation not in OPERATIONS:
            raise InvalidRequest(
                f"{name} {text!r} is not a mask filter (expected operation:radius pairs "
                f"separated by commas, operations {', '.join(OPERATIONS)}, "
                "e.g. 'opening:2,dilation:5', or 'none')"
            )
        try:
            radius = int(radius_text.strip())
        except ValueError:
            raise InvalidRequest(
                f"{name} {text!r}: the radius of {operation} must be a whole number of pixels"
            ) from None
        if not 0 <= radius <= MAX_RADIUS:
            raise InvalidRequest(
                f"{name} {text!r}: radius {radius} of {operation} is out of range "
                f"(0 to {MAX_RADIUS} pixels)"
            )
        steps.append((operation, radius))  # type: ignore[arg-type]
    parsed = tuple(steps)
    if reach(parsed) > MAX_REACH:
        raise InvalidRequest(
            f"{name} {text!r} reaches {reach(parsed)} pixels (an opening or closing counts "
            f"twice its radius); at most {MAX_REACH} are allowed"
        )
    return parsed


def mask_filters(options: Mapping[str, str], default: MaskFilters) -> MaskFilters:
    """The filters a request asks for, each falling back to `default` when not given."""
    cloud = options.get(CLOUD_FILTER)
    shadow = options.get(SHADOW_FILTER)
    return MaskFilters(
        cloud=default.cloud if cloud is None else parse_filter(CLOUD_FILTER, cloud),
        shadow=default.shadow if shadow is None else parse_filter(SHADOW_FILTER, shadow),
    )


def check_mask_filters(options: Mapping[str, str]) -> None:
    """InvalidRequest with the reason when a filter option is malformed."""
    mask_filters(options, UNBUFFERED)
