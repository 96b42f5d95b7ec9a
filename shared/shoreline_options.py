"""The shoreline's tide filter as DEA Coastlines applies it, and its options.

DEA Coastlines keeps, for each pixel, the observations taken at a tide height within a band
around mean sea level: centre ± share x (highest - lowest tide observed), with share 0.25
(Bishop-Taylor et al. 2021, `coastlines.raster.tide_cutoffs`). Requests may set:

* `tide_filter`: `dea` (the default when the worker has a tide table) or `none`;
* `tide_centre`: the height the band is centred on, in the tide table's units, or `mean` (the
  default: the table's mean height stands for mean sea level, since a gauge's table need not be
  relative to it; give `0` for heights that are, as DEA's tide model's are);
* `tide_band`: the share of the observed range on each side of the centre (0 < share <= 0.5,
  default 0.25).

`tide_range_from`/`tide_range_to` (`shared.options`) give a fixed range instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.errors import InvalidRequest
from shared.options import parse_number

TIDE_FILTER = "tide_filter"
TIDE_CENTRE = "tide_centre"
TIDE_BAND = "tide_band"
SHORELINE_OPTIONS: frozenset[str] = frozenset({TIDE_FILTER, TIDE_CENTRE, TIDE_BAND})

#: DEA Coastlines' share of the observed tide range kept on each side of mean sea level.
DEFAULT_TIDE_BAND = 0.25
MEAN = "mean"


@dataclass(frozen=True)
class TideBand:
    """Keep observations within centre ± share x observed range; `centre` None means the
    tide table's mean height."""

    centre: float | None = None
    share: float = DEFAULT_TIDE_BAND


def parse_tide_band(options: Mapping[str, str]) -> TideBand | None:
    """The DEA tide filter a request asks for, or None when it turns it off (`tide_filter: none`)
    or gives a fixed `tide_range_from`/`tide_range_to` instead."""
    method = options.get(TIDE_FILTER, "dea").strip().lower()
    if method not in ("dea", "none"):
        raise InvalidRequest(f"tide_filter {options[TIDE_FILTER]!r} is not dea or none")
    fixed_range = "tide_range_from" in options or "tide_range_to" in options
    band_options = sorted(name for name in (TIDE_CENTRE, TIDE_BAND) if name in options)
    if fixed_range and (band_options or TIDE_FILTER in options):
        raise InvalidRequest(
            "give either tide_range_from/tide_range_to (a fixed range) or the DEA tide filter's "
            f"{', '.join(band_options or [TIDE_FILTER])}, not both"
        )
    if method == "none":
        if band_options:
            raise InvalidRequest(
                f"tide_filter is none, so {', '.join(band_options)} would be ignored: remove it"
            )
        return None
    if fixed_range:
        return None
    centre_text = options.get(TIDE_CENTRE, MEAN).strip()
    centre = None if centre_text.lower() == MEAN else parse_number(TIDE_CENTRE, centre_text)
    share = DEFAULT_TIDE_BAND
    if TIDE_BAND in options:
        share = parse_number(TIDE_BAND, options[TIDE_BAND])
        if not 0 < share <= 0.5:
            raise InvalidRequest(
                f"tide_band {options[TIDE_BAND]!r} is out of range (a share of the observed "
                "tide range on each side of the centre: more than 0, at most 0.5)"
            )
    return TideBand(centre=centre, share=share)


def check_shoreline_options(options: Mapping[str, str]) -> None:
    parse_tide_band(options)
