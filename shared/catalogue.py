"""The product contract: the ODC products read and the job codes served, stated once.

Every service reads this table and nothing else for these facts:

- the dispatcher validates a request against it (`check_request`) without importing a plugin;
- the worker's product plugins are checked against their job code's entry when they register;
- output naming takes the sensor's short name from it (`ls8_geomedian`, legacy `ls8_…`);
- the synthetic archive generator writes scenes with these bands, dtypes, nodata and masks.

Adding a sensor is one `InputProduct` here plus its ODC product definition under
`shared/odc_products/` (docs/adding-a-sensor.md); adding a product is one `JobCode` here plus its
plugin module.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal

from shared.errors import InvalidRequest
from shared.mask_filters import (
    DEFAULT_FILTERS,
    MASK_FILTER_OPTIONS,
    UNBUFFERED,
    MaskFilters,
    check_mask_filters,
    mask_filters,
)
from shared.options import TIDE_OPTIONS, check_known_options, parse_tide_range
from shared.shoreline_options import SHORELINE_OPTIONS, check_shoreline_options

Family = Literal["landsat", "sentinel2"]

#: The reflectance bands every product speaks of, whatever the sensor calls them.
CANONICAL_BANDS: tuple[str, ...] = ("blue", "green", "red", "nir", "swir1", "swir2")


@dataclass(frozen=True)
class BitFlagRule:
    """Good pixels of a bit-flag mask band, such as USGS Collection 2 `QA_PIXEL`.

    An observation is *clear* when one of `clear_bits` is set and none of `excluded_bits` is;
    it is clear *water* when, besides, `water_bit` is set. Bits are numbered from 0 (least
    significant).
    """

    clear_bits: tuple[int, ...]
    water_bit: int
    excluded_bits: tuple[int, ...]

    @staticmethod
    def _mask(bits: tuple[int, ...]) -> int:
        return sum(1 << bit for bit in bits)

    def clear(self, mask: Any) -> Any:
        """True where the (integer) mask says clear, land or water."""
        return ((mask & self._mask(self.clear_bits)) != 0) & (
            (mask & self._mask(self.excluded_bits)) == 0
        )

    def water(self, mask: Any) -> Any:
        """True where the mask says clear water."""
        return self.clear(mask) & ((mask & (1 << self.water_bit)) != 0)


#: USGS Collection 2 Level-2 `QA_PIXEL` bits (Landsat 4-9; LSDS-1619 / LSDS-1618): 0 fill,
#: 1 dilated cloud, 2 cirrus (OLI only), 3 cloud, 4 cloud shadow, 5 snow, 6 clear (cloud and
#: dilated cloud both unset), 7 water; two-bit confidences (0 none, 1 low, 2 medium, 3 high):
#: 8-9 cloud, 10-11 cloud shadow, 12-13 snow/ice, 14-15 cirrus (OLI only).
QA_PIXEL_BITS: Mapping[str, int] = MappingProxyType(
    {
        "fill": 0,
        "dilated_cloud": 1,
        "cirrus": 2,
        "cloud": 3,
        "cloud_shadow": 4,
        "snow": 5,
        "clear": 6,
        "water": 7,
    }
)
QA_PIXEL_CONFIDENCE_BITS: Mapping[str, tuple[int, int]] = MappingProxyType(
    {
        "cloud_confidence": (8, 9),
        "cloud_shadow_confidence": (10, 11),
        "snow_ice_confidence": (12, 13),
        "cirrus_confidence": (14, 15),
    }
)
#: Clear (bit 6) or water (bit 7), and none of fill, dilated cloud, cirrus, cloud, shadow, snow:
#: USGS's clear bit is set on shadow and snow too, so those are excluded by their own bits.
QA_PIXEL_GOOD = BitFlagRule(
    clear_bits=(QA_PIXEL_BITS["clear"], QA_PIXEL_BITS["water"]),
    water_bit=QA_PIXEL_BITS["water"],
    excluded_bits=tuple(
        QA_PIXEL_BITS[name]
        for name in ("fill", "dilated_cloud", "cirrus", "cloud", "cloud_shadow", "snow")
    ),
)


@dataclass(frozen=True)
class MaskRule:
    """Which values of a mask band flag a condition: any of `classes` (an enumerated band such as
    Sentinel-2's SCL), or any value with every bit of one of `bit_patterns` set (a bit-flag band
    such as Landsat's pixel_qa). A rule with neither flags nothing."""

    classes: frozenset[int] = frozenset()
    bit_patterns: tuple[int, ...] = ()

    def flags(self, mask: Any) -> Any:
        """True where `mask` (an xarray DataArray of the mask band) has the condition."""
        flagged = mask.isin(sorted(self.classes)) if self.classes else mask < 0
        for pattern in self.bit_patterns:
            flagged = flagged | ((mask & pattern) == pattern)
        return flagged


NEVER = MaskRule()


@dataclass(frozen=True)
class InputProduct:
    """One ODC product a product job reads: bands, reflectance encoding, mask and platform.

    Masks follow the original worker's choice of good pixels: a *clear* observation is one
    whose mask value is in `land_values` or `water_values`; every other value (fill, cloud,
    shadow, snow, cirrus, saturation) is not. A product whose mask is a set of bit flags
    (Collection 2 `QA_PIXEL`) states its rule as `mask_flags` instead, and has no value sets.
    """

    product: str
    family: Family
    #: Names outputs after the sensor: `ls8_geomedian`, and the legacy `ls8_geomedian_…` files.
    short_name: str
    #: eo:platform values (comma-joined in eo3 when several) and eo:instrument.
    platforms: tuple[str, ...]
    instrument: str
    #: (canonical band name, measurement name in the datacube product) pairs; see `bands`
    band_names: tuple[tuple[str, str], ...]
    #: Native pixel size in metres, and the default output resolution of its jobs.
    resolution: float
    mask_band: str
    mask_dtype: str
    mask_nodata: int
    land_values: frozenset[int]
    water_values: frozenset[int]
    #: How reflectance is stored: reflectance = value * scale + offset; `nodata` where missing.
    reflectance_dtype: str
    reflectance_nodata: int
    reflectance_scale: float = 0.0001
    reflectance_offset: float = 0.0
    #: The good-pixel rule of a bit-flag mask; None for an enumerated one (the value sets).
    mask_flags: BitFlagRule | None = None
    #: What the mask band says beyond clear/water, for masks that are buffered or flag-coded
    #: (WOfS): no observation at all, cloud, cloud shadow, saturated, terrain shadow.
    nodata_rule: MaskRule = NEVER
    cloud_rule: MaskRule = NEVER
    shadow_rule: MaskRule = NEVER
    saturation_rule: MaskRule = NEVER
    terrain_rule: MaskRule = NEVER

    @property
    def bands(self) -> dict[str, str]:
        """canonical band name -> measurement name in the datacube product."""
        return dict(self.band_names)

    @property
    def clear_values(self) -> frozenset[int]:
        """Mask codes of a clear observation, land or water: the pixels a composite may use."""
        return self.land_values | self.water_values

    @property
    def platform(self) -> str:
        return ",".join(self.platforms)

    def measurement(self, band: str) -> str:
        """The datacube measurement name of canonical `band` (e.g. `red`)."""
        try:
            return self.bands[band]
        except KeyError:
            raise InvalidRequest(
                f"{self.product} has no {band} band (it has {', '.join(self.bands)})"
            ) from None

    def clear(self, mask: Any) -> Any:
        """True where the mask band (an xarray DataArray) calls the observation clear."""
        if self.mask_flags is not None:
            return self.mask_flags.clear(mask).rename(f"{self.short_name}_clear")
        return mask.isin(sorted(self.clear_values)).rename(f"{self.short_name}_clear")

    def water(self, mask: Any) -> Any:
        """True where the mask band calls the observation clear water."""
        if self.mask_flags is not None:
            return self.mask_flags.water(mask).rename(f"{self.short_name}_water")
        return mask.isin(sorted(self.water_values)).rename(f"{self.short_name}_water")

    def no_observation(self, mask: Any) -> Any:
        """True where the mask band says nothing was observed (fill)."""
        return self.nodata_rule.flags(mask)

    def cloud(self, mask: Any) -> Any:
        """True where the mask band flags cloud (before any buffering)."""
        return self.cloud_rule.flags(mask)

    def shadow(self, mask: Any) -> Any:
        """True where the mask band flags cloud shadow (before any buffering)."""
        return self.shadow_rule.flags(mask)


def _same_names() -> tuple[tuple[str, str], ...]:
    # Both the USGS Landsat and the ESA Sentinel-2 product definitions use the canonical names.
    return tuple((band, band) for band in CANONICAL_BANDS)


# USGS Collection-1 pixel_qa bits: 0 fill, 3 cloud shadow, 5 cloud, 10 terrain occlusion (OLI).
# The cirrus confidence bits (8-9) are not cloud: USGS calls 834 and 898 (high cirrus
# confidence) clear, and so did the original worker.
_QA_FILL = 1 << 0
_QA_SHADOW = 1 << 3
_QA_CLOUD = 1 << 5
_QA_TERRAIN = 1 << 10


def _landsat(
    product: str,
    short_name: str,
    platform: str,
    instrument: str,
    land: frozenset[int],
    water: frozenset[int],
    *,
    oli: bool = False,
) -> InputProduct:
    return InputProduct(
        product=product,
        family="landsat",
        short_name=short_name,
        platforms=(platform,),
        instrument=instrument,
        band_names=_same_names(),
        resolution=30.0,
        mask_band="pixel_qa",
        mask_dtype="uint16",
        mask_nodata=1,
        land_values=land,
        water_values=water,
        reflectance_dtype="int16",
        reflectance_nodata=-9999,
        nodata_rule=MaskRule(bit_patterns=(_QA_FILL,)),
        cloud_rule=MaskRule(bit_patterns=(_QA_CLOUD,)),
        shadow_rule=MaskRule(bit_patterns=(_QA_SHADOW,)),
        terrain_rule=MaskRule(bit_patterns=(_QA_TERRAIN,)) if oli else NEVER,
    )


#: Collection 2 Level-2 measurement names (as other Open Data Cubes name `ls8_c2l2_sr`, with
#: STAC's common names), by canonical band; USGS's `SR_Bn` names are aliases in the definitions.
C2_BAND_NAMES: tuple[tuple[str, str], ...] = (
    ("blue", "blue"),
    ("green", "green"),
    ("red", "red"),
    ("nir", "nir08"),
    ("swir1", "swir16"),
    ("swir2", "swir22"),
)
#: USGS Collection 2 Level-2 surface reflectance: uint16, reflectance = DN x 0.0000275 - 0.2,
#: fill 0 (`REFLECTANCE_MULT_BAND_n` / `REFLECTANCE_ADD_BAND_n` in the MTL).
C2_REFLECTANCE_SCALE = 2.75e-05
C2_REFLECTANCE_OFFSET = -0.2


def _landsat_c2(product: str, short_name: str, platform: str, instrument: str) -> InputProduct:
    """A USGS Collection 2 Level-2 product, declared as USGS delivers it (no rescaling)."""
    return InputProduct(
        product=product,
        family="landsat",
        short_name=short_name,
        platforms=(platform,),
        instrument=instrument,
        band_names=C2_BAND_NAMES,
        resolution=30.0,
        mask_band="qa_pixel",
        mask_dtype="uint16",
        mask_nodata=1,
        land_values=frozenset(),
        water_values=frozenset(),
        reflectance_dtype="uint16",
        reflectance_nodata=0,
        reflectance_scale=C2_REFLECTANCE_SCALE,
        reflectance_offset=C2_REFLECTANCE_OFFSET,
        mask_flags=QA_PIXEL_GOOD,
        nodata_rule=MaskRule(bit_patterns=(1 << QA_PIXEL_BITS["fill"],)),
        # Cloud and USGS's own dilation of it; cirrus stays out, as for Collection 1's OLI.
        cloud_rule=MaskRule(
            bit_patterns=(1 << QA_PIXEL_BITS["cloud"], 1 << QA_PIXEL_BITS["dilated_cloud"])
        ),
        shadow_rule=MaskRule(bit_patterns=(1 << QA_PIXEL_BITS["cloud_shadow"],)),
    )


# USGS Collection-1 pixel_qa values of a clear pixel, as the original worker chose them.
_LANDSAT_5_7_LAND = frozenset({66, 130})
_LANDSAT_5_7_WATER = frozenset({68, 132})
_LANDSAT_8_LAND = frozenset({322, 386, 834, 898, 1346})
_LANDSAT_8_WATER = frozenset({324, 388, 836, 900, 1348})

INPUT_PRODUCTS: Mapping[str, InputProduct] = MappingProxyType(
    {
        "ls5_usgs_sr_scene": _landsat(
            "ls5_usgs_sr_scene", "ls5", "landsat-5", "TM", _LANDSAT_5_7_LAND, _LANDSAT_5_7_WATER
        ),
        "ls7_usgs_sr_scene": _landsat(
            "ls7_usgs_sr_scene", "ls7", "landsat-7", "ETM", _LANDSAT_5_7_LAND, _LANDSAT_5_7_WATER
        ),
        "ls8_usgs_sr_scene": _landsat(
            "ls8_usgs_sr_scene",
            "ls8",
            "landsat-8",
            "OLI_TIRS",
            _LANDSAT_8_LAND,
            _LANDSAT_8_WATER,
            oli=True,
        ),
        "s2_esa_sr_granule": InputProduct(
            product="s2_esa_sr_granule",
            family="sentinel2",
            short_name="s2",
            platforms=("sentinel-2a", "sentinel-2b"),
            instrument="MSI",
            band_names=_same_names(),
            resolution=10.0,
            mask_band="scene_classification",
            mask_dtype="uint8",
            mask_nodata=0,
            # ESA SCL: 2 dark area, 4 vegetation, 5 not vegetated, 7 unclassified; 6 water.
            land_values=frozenset({2, 4, 5, 7}),
            water_values=frozenset({6}),
            reflectance_dtype="uint16",
            reflectance_nodata=0,
            # SCL 0 no data, 1 saturated or defective, 3 cloud shadow, 8/9 cloud medium/high
            # probability, 10 thin cirrus (odc-stats' S2 cloud classes).
            nodata_rule=MaskRule(classes=frozenset({0})),
            saturation_rule=MaskRule(classes=frozenset({1})),
            cloud_rule=MaskRule(classes=frozenset({8, 9, 10})),
            shadow_rule=MaskRule(classes=frozenset({3})),
        ),
        # Collection 2 Level-2 as USGS ships it (SR_B*, QA_PIXEL); see `_landsat_c2`.
        "ls5_c2l2_sr": _landsat_c2("ls5_c2l2_sr", "ls5c2", "landsat-5", "TM"),
        "ls7_c2l2_sr": _landsat_c2("ls7_c2l2_sr", "ls7c2", "landsat-7", "ETM"),
        "ls8_c2l2_sr": _landsat_c2("ls8_c2l2_sr", "ls8c2", "landsat-8", "OLI_TIRS"),
        "ls9_c2l2_sr": _landsat_c2("ls9_c2l2_sr", "ls9c2", "landsat-9", "OLI_TIRS"),
    }
)

#: Kept by name for code that reads it as "the sensors".
SENSORS = INPUT_PRODUCTS
Sensor = InputProduct


def input_product(product: str) -> InputProduct:
    """The input product called `product`, or InvalidRequest naming the known ones."""
    try:
        return INPUT_PRODUCTS[product]
    except KeyError:
        raise InvalidRequest(
            f"{product!r} is not a known product (expected one of {', '.join(INPUT_PRODUCTS)})"
        ) from None


sensor_for = input_product


def short_name(product: str) -> str:
    """`ls8_usgs_sr_scene` -> `ls8`; an unknown product's first word."""
    known = INPUT_PRODUCTS.get(product)
    return known.short_name if known is not None else product.split("_")[0]


OptionsCheck = Callable[[Mapping[str, str]], object]


@dataclass(frozen=True)
class JobCode:
    """What a `job_code` needs and takes; its plugin must declare the same inputs and options."""

    name: str
    #: Canonical reflectance bands read (the mask band is always read too).
    inputs: tuple[str, ...]
    #: Options taken besides `time_step`, which every job code takes.
    options: frozenset[str] = frozenset()
    #: Checks of the option values, each raising InvalidRequest with a reason.
    option_checks: tuple[OptionsCheck, ...] = ()
    families: frozenset[Family] = frozenset({"landsat", "sentinel2"})
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: Whether cloud and shadow masks are buffered by default (`shared.mask_filters`); either
    #: way a request may set `cloud_filter` and `shadow_filter`.
    buffer_masks: bool = True

    def check(self, product: InputProduct, options: Mapping[str, str]) -> None:
        """Raise InvalidRequest, with a reason, if this job code cannot serve the request."""
        if product.family not in self.families:
            raise InvalidRequest(
                f"{self.name} does not serve {product.family} products such as {product.product}"
            )
        missing = [band for band in self.inputs if band not in product.bands]
        if missing:
            raise InvalidRequest(
                f"{self.name} needs {', '.join(missing)}, which {product.product} does not have"
            )
        check_known_options(self.name, options, self.options)
        for check in self.option_checks:
            check(options)

    def mask_filters(self, product: InputProduct, options: Mapping[str, str]) -> MaskFilters:
        """The cloud and shadow filters of a request: its options, else this job code's default."""
        default = DEFAULT_FILTERS[product.family] if self.buffer_masks else UNBUFFERED
        return mask_filters(options, default)


#: The geomedian's band order, as odc-stats writes it.
_COMPOSITE_BANDS: tuple[str, ...] = ("red", "green", "blue", "nir", "swir1", "swir2")
#: The WOfS classifier's bands, in the order of its inputs (Landsat TM bands 1-5 and 7).
_WOFS_BANDS: tuple[str, ...] = ("blue", "green", "red", "nir", "swir1", "swir2")

WATER_METHOD = "method"
WATER_METHODS: tuple[str, ...] = ("wofs", "qa", "classification")


def water_method(options: Mapping[str, str]) -> str:
    """`wofs` (default: Mueller et al.'s classifier on reflectance), `qa` (the mask band's water
    flags, as the original worker counted them) or `classification` (the per-scene water
    classifications already indexed, `lsN_water_classification`: counted, not classified again)."""
    method = options.get(WATER_METHOD, "wofs").strip().lower()
    if method not in WATER_METHODS:
        raise InvalidRequest(
            f"method {options[WATER_METHOD]!r} is not a water method "
            f"(expected {' or '.join(WATER_METHODS)})"
        )
    return method


_MASKED = MASK_FILTER_OPTIONS
_MASK_CHECKS: tuple[OptionsCheck, ...] = (check_mask_filters,)

_JOB_CODES: dict[str, JobCode] = dict(
    {
        "geomedian": JobCode(
            "geomedian",
            _COMPOSITE_BANDS,
            options=_MASKED,
            option_checks=_MASK_CHECKS,
            description="geometric median and MADs (geomad)",
            buffer_masks=False,
        ),
        "fractional_cover": JobCode(
            "fractional_cover",
            _COMPOSITE_BANDS,
            options=_MASKED,
            option_checks=_MASK_CHECKS,
            description="bare soil, green and dry vegetation of the period's geomedian",
            buffer_masks=False,
        ),
        "fc_percentiles": JobCode(
            "fc_percentiles",
            _WOFS_BANDS,
            options=_MASKED,
            option_checks=_MASK_CHECKS,
            description="10th, 50th and 90th percentiles of fractional cover of clear dry days",
        ),
        "water": JobCode(
            "water",
            _WOFS_BANDS,
            options=_MASKED | {WATER_METHOD},
            option_checks=(*_MASK_CHECKS, water_method),
            description="WOfS summary: clear and wet observations and their frequency",
        ),
        "shoreline": JobCode(
            "shoreline",
            ("green", "swir1"),
            options=TIDE_OPTIONS | SHORELINE_OPTIONS | _MASKED,
            option_checks=(parse_tide_range, check_shoreline_options, *_MASK_CHECKS),
            description="median MNDWI and its zero contour",
        ),
        "ndvi": JobCode(
            "ndvi",
            ("red", "nir"),
            options=_MASKED,
            option_checks=_MASK_CHECKS,
            description="NDVI statistics of clear days",
        ),
    }
)
#: Read-only view; `add_job_code` extends it with an operator's own products.
JOB_CODES: Mapping[str, JobCode] = MappingProxyType(_JOB_CODES)


def add_job_code(entry: JobCode) -> None:
    """Add an operator's own job code (a module named in `CONVEYOR_PLUGIN_MODULES` calls this).

    The dispatcher imports the same modules, so it accepts the job code without loading the
    worker; keep such a module's heavy imports inside its computation.
    """
    existing = _JOB_CODES.get(entry.name)
    if existing is not None and existing != entry:
        raise ValueError(f"job_code {entry.name!r} is in the catalogue already, differently")
    _JOB_CODES[entry.name] = entry


def import_plugin_modules(modules: Collection[str]) -> None:
    """Import the operator's plugin modules (`CONVEYOR_PLUGIN_MODULES`), which register there."""
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ValueError(
                f"CONVEYOR_PLUGIN_MODULES names {module!r}, which cannot be imported: {error}"
            ) from error


def job_code(name: str) -> JobCode:
    """The entry of `name`, or InvalidRequest naming the known job codes."""
    try:
        return JOB_CODES[name]
    except KeyError:
        raise InvalidRequest(
            f"no product is registered for job_code {name!r}; known job codes: "
            f"{', '.join(sorted(JOB_CODES))}"
        ) from None


def check_request(job_code_name: str, product: str, options: Mapping[str, str]) -> None:
    """InvalidRequest with the reason when no product plugin can serve this combination."""
    job_code(job_code_name).check(input_product(product), options)


def check_plugin(
    job_code_name: str, inputs: Collection[str], accepted_options: Collection[str]
) -> None:
    """A plugin registering for `job_code_name` must match its entry here (ValueError if not)."""
    entry = JOB_CODES.get(job_code_name)
    if entry is None:
        # An operator's own plugin (CONVEYOR_PLUGIN_MODULES) is its own contract.
        add_job_code(JobCode(job_code_name, tuple(inputs), frozenset(accepted_options)))
        return
    if tuple(inputs) != entry.inputs or frozenset(accepted_options) != entry.options:
        raise ValueError(
            f"the {job_code_name} plugin declares inputs {tuple(inputs)} and options "
            f"{sorted(accepted_options)}, but the catalogue says {entry.inputs} and "
            f"{sorted(entry.options)}: change shared/catalogue.py and the plugin together"
        )


#: The per-scene water classification (`jobWater`): each scene of an input product classified
#: with WOfS into one uint8 layer of bit flags, indexed as a product of its own.
WATER_CLASSIFICATION = "water_classification"
#: What it reads: the WOfS classifier's bands (the mask band is always read too).
WATER_CLASSIFICATION_INPUTS: tuple[str, ...] = _WOFS_BANDS
#: Its one band: uint8 WOfS bit flags, nodata 1.
WATER_CLASSIFICATION_BAND = "water"


def water_classification_product(product: str) -> str:
    """The product a scene of input `product` is classified into, named as the original named
    them: `ls8_usgs_sr_scene` -> `ls8_water_classification`, `s2_esa_sr_granule` ->
    `s2_water_classification`, Collection 2 `ls8_c2l2_sr` -> `ls8c2_water_classification`
    (a product per input product, so the two collections of one scene never count twice)."""
    source = input_product(product)
    missing = [band for band in WATER_CLASSIFICATION_INPUTS if band not in source.bands]
    if missing:
        raise InvalidRequest(
            f"{WATER_CLASSIFICATION} needs {', '.join(missing)}, which {product} does not have"
        )
    return f"{source.short_name}_{WATER_CLASSIFICATION}"


#: Output product -> the input product its scenes come from, for every input product.
WATER_CLASSIFICATION_PRODUCTS: Mapping[str, str] = MappingProxyType(
    {water_classification_product(name): name for name in INPUT_PRODUCTS}
)


def water_classification_source(product: str) -> str:
    """The input product whose scenes `product` (e.g. `ls8_water_classification`) classifies."""
    try:
        return WATER_CLASSIFICATION_PRODUCTS[product]
    except KeyError:
        raise InvalidRequest(
            f"{product!r} is not a water classification product (expected one of "
            f"{', '.join(WATER_CLASSIFICATION_PRODUCTS)})"
        ) from None


def water_classification_definition(product: str) -> dict[str, Any]:
    """The eo3 ODC product definition of a water classification product (a fresh copy): one
    definition for every input product, named and described after it."""
    import yaml

    source = water_classification_source(product)
    document = yaml.safe_load(_definition_text(WATER_CLASSIFICATION))
    assert isinstance(document, dict)
    described = str(product_definition(source).get("description", source)).rstrip(".")
    document["name"] = product
    document["metadata"]["product"]["name"] = product
    document["description"] = (
        f"WOfS water classification of each scene of {described} ({source}), uint8 bit flags."
    )
    return document


@cache
def _definition_text(product: str) -> str:
    return (resources.files("shared.odc_products") / f"{product}.yaml").read_text("utf-8")


def product_definition(product: str) -> dict[str, Any]:
    """The eo3 ODC product definition of an input product (a fresh copy each call)."""
    import yaml

    input_product(product)
    document = yaml.safe_load(_definition_text(product))
    assert isinstance(document, dict)
    return document


def product_definitions(products: list[str] | None = None) -> list[dict[str, Any]]:
    return [product_definition(name) for name in (products or sorted(INPUT_PRODUCTS))]
