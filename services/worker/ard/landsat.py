"""Landsat: USGS surface-reflectance downloads to `lsN_usgs_sr_scene` and `lsN_c2l2_sr` ARD.

Items name a scene as USGS does (`LC08_L2SP_072074_20190214_20200829_02_T1`, `LE07_...`,
`LT05_...`, `LC09_...`); the scene is found as `{name}.tar`, `{name}.tar.gz` or a `{name}/`
folder in the archive. Two plugins share this module, one per collection:

* `landsat-c1-sr`: Collection 1 surface reflectance as ESPA delivered it (`sr_band1..7`,
  `pixel_qa`, `radsat_qa`, `sr_aerosol`, the Level-1 `_MTL.txt` and ESPA's `.xml`; the name
  keeps its Level-1 processing level, `L1TP`) -> `ls5/ls7/ls8_usgs_sr_scene`;
* `landsat-c2-l2`: Collection 2 Level-2 (`SR_B1..7`, `QA_PIXEL`, `QA_RADSAT`, `SR_QA_AEROSOL`,
  `_MTL.txt`) -> `ls5/ls7/ls8/ls9_c2l2_sr`, stored as USGS stores it.

Output, in one folder named after the scene::

    {scene}_sr_band2.tif ... {scene}_pixel_qa.tif   Collection 1: int16 x 10000, nodata -9999
    {scene}_SR_B2.tif ... {scene}_QA_PIXEL.tif      Collection 2: uint16 DN, nodata 0
    {scene}_MTL.txt (and ESPA's {scene}.xml)         USGS's metadata, as delivered
    {scene}.stac-item.json
    {scene}.odc-metadata.yaml                        eo3, written last

What cannot be made is refused with its own reason: a Level-1-only download (`L1TP`, `L1GT`,
`L1GS` without surface reflectance) is `unsupported_collection` naming what to send instead, as
no atmospheric correction is configured for Landsat (Sen2Cor's counterpart would be LaSRC or
LEDAPS); so is a mission with no product here (MSS, Landsat 4, TIRS-only scenes).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from services.worker.ard.bands import band_file_name
from services.worker.ard.errors import BadSceneRequest, CorruptScene, UnsupportedCollection
from services.worker.ard.landsat_bands import (
    MISSIONS,
    BandSource,
    Mission,
    collection1_bands,
    collection2_bands,
    convert_bands,
    default_file,
    plain_file_name,
    reflectance_rescale,
)
from services.worker.ard.landsat_espa import read_espa
from services.worker.ard.landsat_metadata import (
    Accessory,
    LandsatDocuments,
    eo3_document,
    stac_item,
)
from services.worker.ard.landsat_mtl import LandsatMetadata, read_mtl
from services.worker.ard.metadata import XML_MEDIA_TYPE, ard_dataset_id
from services.worker.ard.plugin import (
    ArdContext,
    ArdFile,
    ArdProduct,
    ScenePlugin,
    metadata_file_name,
    register_scene_plugin,
    stac_file_name,
)
from services.worker.outputs.cog import COG_MEDIA_TYPE
from services.worker.settings import WorkerSettings
from shared.messages import LANDSAT_SCENE, SceneRequest

TEXT_MEDIA_TYPE = "text/plain"
LEVEL1 = ("L1TP", "L1GT", "L1GS")
_SUPPORTED = "Landsat 5, 7 and 8 (Collections 1 and 2) and Landsat 9 (Collection 2)"


@dataclass(frozen=True)
class SceneName:
    """A USGS product id taken apart."""

    name: str
    sensor: str
    satellite: str
    level: str
    collection: int
    path: int
    row: int
    acquired: str

    @classmethod
    def parse(cls, name: str) -> SceneName:
        match = LANDSAT_SCENE.fullmatch(name)
        if match is None:
            raise BadSceneRequest(
                f"{name!r} is not a USGS Landsat product name (expected e.g. "
                "LC08_L2SP_072074_20190214_20200829_02_T1)"
            )
        return cls(
            name=name,
            sensor=match.group("sensor"),
            satellite=match.group("satellite"),
            level=match.group("level"),
            collection=int(match.group("collection")),
            path=int(match.group("path")),
            row=int(match.group("row")),
            acquired=match.group("acquired"),
        )

    @property
    def level2_name(self) -> str:
        """The Collection 2 Level-2 product of the same scene (its processing date unknown)."""
        prefix = f"L{self.sensor}{self.satellite}_L2SP_{self.path:03d}{self.row:03d}"
        return f"{prefix}_{self.acquired}_<processing date>_02_<category>"


@dataclass(frozen=True)
class LandsatInputs:
    """A fetched product, read: its metadata, band files and the files kept beside the COGs."""

    metadata: LandsatMetadata
    sources: tuple[BandSource, ...]
    accessories: dict[str, Path]
    algorithm: str | None


def mission_of(scene: SceneName) -> Mission:
    """The mission of a scene this pool has a product for, or why not (`unsupported_collection`)."""
    mission = MISSIONS.get(scene.satellite)
    if scene.sensor == "M":
        raise UnsupportedCollection(
            f"{scene.name} is an MSS scene, which has no surface reflectance; this pool makes "
            f"surface reflectance of {_SUPPORTED}"
        )
    if mission is None or scene.collection not in mission.products:
        raise UnsupportedCollection(
            f"{scene.name}: there is no surface-reflectance product here for Landsat "
            f"{int(scene.satellite)} Collection {scene.collection}; this pool makes "
            f"{_SUPPORTED}"
        )
    if scene.sensor not in mission.sensor_letters:
        if scene.sensor == "T" and mission.family == "oli":
            raise UnsupportedCollection(
                f"{scene.name} is a TIRS-only scene (thermal bands): it has no reflectance to "
                "make surface reflectance of; send the scene's OLI or combined (LC) product"
            )
        raise BadSceneRequest(
            f"{scene.name!r} names sensor {scene.sensor} on Landsat {int(scene.satellite)}, "
            "which never flew together (expected e.g. LC08, LE07, LT05)"
        )
    return mission


def _level1_only(scene: SceneName, what: str) -> UnsupportedCollection:
    return UnsupportedCollection(
        f"{scene.name} is a Level-1 download ({what}): this pool makes surface reflectance, and "
        "no atmospheric correction is configured for Landsat. Send the scene's Collection 2 "
        f"Level-2 product instead ({scene.level2_name}, USGS's 'Collection 2 Level-2 Science "
        "Products'), or for Collection 1 its ESPA surface-reflectance order (sr_band*, "
        "pixel_qa and ESPA's .xml)"
    )


def product_root(folder: Path, name: str) -> Path:
    """Where the files are: USGS tarballs hold them at the top, a fetched folder is `{name}/`."""
    nested = folder / name
    return nested if nested.is_dir() else folder


def _has_level1_bands(root: Path, name: str) -> bool:
    return any((root / f"{name}_B1{suffix}").is_file() for suffix in (".TIF", ".tif"))


def read_collection1(root: Path, scene: SceneName, mission: Mission) -> LandsatInputs:
    """An ESPA surface-reflectance order: the ESPA XML lists the bands, the MTL the scene."""
    name = scene.name
    mtl_path, espa_path = root / f"{name}_MTL.txt", root / f"{name}.xml"
    if not espa_path.is_file():
        if _has_level1_bands(root, name) or mtl_path.is_file():
            raise _level1_only(scene, f"{name}_MTL.txt and no ESPA {name}.xml or sr_band files")
        raise CorruptScene(f"the product has neither {name}_MTL.txt nor ESPA's {name}.xml ({root})")
    espa = read_espa(espa_path)
    if not espa.surface_reflectance:
        raise _level1_only(scene, f"its ESPA order {espa_path.name} has no sr_band files")
    if espa.product_id and espa.product_id != name:
        raise CorruptScene(
            f"the archive's ESPA order for {name} says it is {espa.product_id} ({espa_path.name})"
        )
    metadata = read_mtl(mtl_path)
    sources: list[BandSource] = []
    for band in collection1_bands(mission.family):
        entry = espa.bands.get(band.source)
        if entry is None:
            if band.required:
                raise CorruptScene(f"{espa_path.name} lists no {band.source} band")
            continue
        path = root / plain_file_name(entry.file_name, espa_path.name)
        if not path.is_file():
            raise CorruptScene(f"band file {path.name} is missing from the product ({root})")
        if (
            band.scale is not None
            and entry.scale_factor is not None
            and not math.isclose(entry.scale_factor, band.scale, rel_tol=1e-6)
        ):
            raise CorruptScene(
                f"{espa_path.name} gives {band.source} scale_factor {entry.scale_factor}, not "
                f"{band.scale}: this is not ESPA surface reflectance x 10000"
            )
        fill = entry.fill_value
        sources.append(
            BandSource(
                band, path, fill=fill if fill is not None and fill != band.spec.nodata else None
            )
        )
    return LandsatInputs(
        metadata=metadata,
        sources=tuple(sources),
        accessories={"metadata:mtl": mtl_path, "metadata:espa": espa_path},
        algorithm=espa.algorithm,
    )


def read_collection2(root: Path, scene: SceneName, mission: Mission) -> LandsatInputs:
    """A Collection 2 Level-2 product: the MTL lists the files and the reflectance scaling."""
    name = scene.name
    mtl_path = root / f"{name}_MTL.txt"
    if not mtl_path.is_file() and _has_level1_bands(root, name):
        raise _level1_only(scene, f"{name}_B1.TIF and no {name}_MTL.txt of a Level-2 product")
    metadata = read_mtl(mtl_path)
    if metadata.processing_level in LEVEL1:
        raise _level1_only(scene, f"its MTL says PROCESSING_LEVEL {metadata.processing_level}")
    sources: list[BandSource] = []
    for band in collection2_bands(mission.family):
        listed = metadata.file_names.get(band.mtl_key or "")
        if listed:
            path = root / plain_file_name(listed, mtl_path.name)
        else:
            path = default_file(root, name, band)
        if not path.is_file():
            raise CorruptScene(f"band file {path.name} is missing from the product ({root})")
        rescale = reflectance_rescale(band, metadata.reflectance_rescaling, mtl_path.name)
        sources.append(BandSource(band, path, rescale=rescale))
    return LandsatInputs(
        metadata=metadata,
        sources=tuple(sources),
        accessories={"metadata:mtl": mtl_path},
        algorithm=metadata.reflectance_algorithm,
    )


def _check_metadata(scene: SceneName, mission: Mission, inputs: LandsatInputs) -> None:
    metadata = inputs.metadata
    mtl = inputs.accessories["metadata:mtl"].name
    if metadata.product_id != scene.name:
        raise CorruptScene(
            f"the archive's product for {scene.name} says it is {metadata.product_id} ({mtl})"
        )
    if metadata.platform != mission.platform:
        raise CorruptScene(
            f"{mtl} says SPACECRAFT_ID {metadata.spacecraft}, but {scene.name} is "
            f"{mission.platform}"
        )


def _accessory_name(scene: str, path: Path) -> str:
    return path.name if path.name.startswith(scene) else f"{scene}_{path.name}"


class LandsatScenes(ScenePlugin):
    """USGS Landsat products of one collection; the product follows the satellite."""

    collection: ClassVar[int]

    def accepts(self, scene: str) -> bool:
        match = LANDSAT_SCENE.fullmatch(scene)
        return match is not None and int(match.group("collection")) == self.collection

    def check(self, request: SceneRequest, settings: WorkerSettings) -> None:
        scene = SceneName.parse(request.in_scene)
        mission_of(scene)
        if scene.collection == 2 and scene.level in LEVEL1:
            raise _level1_only(scene, f"processing level {scene.level}")
        if scene.collection == 1 and scene.level not in LEVEL1:
            raise BadSceneRequest(
                f"{scene.name!r} is no USGS product: Collection 1 names carry their Level-1 "
                f"processing level (L1TP, L1GT, L1GS), Level-2 ({scene.level}) is Collection 2 "
                "(_02_)"
            )

    def output_name(self, request: SceneRequest) -> str:
        return request.in_scene

    def archive_candidates(self, request: SceneRequest) -> tuple[str, ...]:
        name = request.in_scene
        return (f"{name}.tar", f"{name}.tar.gz", f"{name}.tgz", f"{name}/")

    def product_for(self, scene: SceneName) -> str:
        return mission_of(scene).products[scene.collection]

    def make_ard(
        self, folder: Path, request: SceneRequest, out_dir: Path, context: ArdContext
    ) -> ArdProduct:
        scene = SceneName.parse(request.in_scene)
        mission = mission_of(scene)
        root = product_root(folder, scene.name)
        read = read_collection1 if scene.collection == 1 else read_collection2
        inputs = read(root, scene, mission)
        _check_metadata(scene, mission, inputs)
        name = context.output_name
        metadata = inputs.metadata
        converted = convert_bands(
            inputs.sources, metadata.geobox, out_dir, name, threads=context.threads,
            cog=context.cog,
        )  # fmt: skip
        files = [ArdFile(c.path.name, c.path, COG_MEDIA_TYPE) for c in converted]
        accessories: dict[str, Accessory] = {}
        for kind, original in inputs.accessories.items():
            copy = out_dir / _accessory_name(name, original)
            shutil.copyfile(original, copy)
            media_type = XML_MEDIA_TYPE if copy.suffix == ".xml" else TEXT_MEDIA_TYPE
            files.append(ArdFile(copy.name, copy, media_type))
            accessories[kind] = Accessory(copy.name, media_type)
        product = self.product_for(scene)
        dataset_id = ard_dataset_id(product, name)
        facts = LandsatDocuments(
            product=product,
            scene=name,
            dataset_id=dataset_id,
            metadata=metadata,
            bands=converted,
            sources={source.band.measurement: source.band for source in inputs.sources},
            file_names={c.band.measurement: band_file_name(name, c.band) for c in converted},
            accessories=accessories,
            processed=context.processed,
            source_url=context.source_url,
            algorithm=inputs.algorithm,
        )
        return ArdProduct(
            dataset_id=dataset_id,
            files=tuple(files),
            stac_item=stac_item(
                facts, context.url_of(stac_file_name(name)), metadata_file_name(name)
            ),
            eo3_document=eo3_document(facts),
        )


@register_scene_plugin
class LandsatCollection1(LandsatScenes):
    name = "landsat-c1-sr"
    # The product of Landsat 8; Landsat 5 and 7 scenes go to ls5/ls7_usgs_sr_scene.
    product = "ls8_usgs_sr_scene"
    collection = 1


@register_scene_plugin
class LandsatCollection2(LandsatScenes):
    name = "landsat-c2-l2"
    # The product of Landsat 8; other satellites' scenes go to their own lsN_c2l2_sr.
    product = "ls8_c2l2_sr"
    collection = 2
