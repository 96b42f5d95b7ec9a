"""Sentinel-2: ESA L2A products (or L1C through Sen2Cor) to `s2_esa_sr_granule` ARD.

Output, in one folder named after the scene (an L1C request's L2A twin, e.g. `S2A_MSIL2A_...`)::

    {scene}_B02_10m.tif ... {scene}_B12_20m.tif   reflectance x 10000, uint16, nodata 0
    {scene}_SCL_20m.tif                           scene classification, uint8, nodata 0
    {scene}_NDVI_10m.tif                          NDVI x 10000, int16, nodata -9999
    {scene}_CLOUD_MASK_20m.tif                    fmask codes from SCL, uint8, nodata 0
    {scene}_MTD_MSIL2A.xml, {scene}_MTD_TL.xml    ESA's metadata, as delivered
    {scene}.stac-item.json
    {scene}.odc-metadata.yaml                     eo3, written last
"""

from __future__ import annotations

import shutil
from pathlib import Path

from services.worker.ard.bands import OUTPUT_BY_NAME, band_file_name, convert_scene
from services.worker.ard.errors import BadSceneRequest, CorruptScene
from services.worker.ard.fetch import FetchedScene
from services.worker.ard.metadata import (
    XML_MEDIA_TYPE,
    SceneDocuments,
    ard_dataset_id,
    eo3_document,
    stac_item,
)
from services.worker.ard.plugin import (
    ArdContext,
    ArdFile,
    ArdProduct,
    ScenePlugin,
    metadata_file_name,
    register_scene_plugin,
    stac_file_name,
)
from services.worker.ard.safe import PRODUCT_METADATA, TILE_METADATA, read_safe
from services.worker.ard.sen2cor import run_sen2cor, sen2cor_command
from services.worker.outputs.cog import COG_MEDIA_TYPE
from services.worker.settings import WorkerSettings
from shared.messages import SENTINEL2_SCENE, SceneRequest


def scene_level(scene: str) -> str:
    match = SENTINEL2_SCENE.match(scene)
    if match is None:
        raise BadSceneRequest(
            f"{scene!r} is not a Sentinel-2 product name (expected e.g. "
            "S2A_MSIL2A_20190812T235741_N0213_R030_T56LRR_20190813T014708)"
        )
    return match.group("level")


@register_scene_plugin
class Sentinel2(ScenePlugin):
    name = "sentinel-2"
    product = "s2_esa_sr_granule"

    def accepts(self, scene: str) -> bool:
        return SENTINEL2_SCENE.match(scene) is not None

    def check(self, request: SceneRequest, settings: WorkerSettings) -> None:
        level = scene_level(request.in_scene)
        if level == "L1C" and request.prodlevel == "L2A":
            sen2cor_command(settings.sen2cor_command)
        elif level == "L1C":
            raise BadSceneRequest(
                f"prodlevel L1C asks for top-of-atmosphere COGs of {request.in_scene}, which this "
                f"pool does not make: it makes {self.product} surface reflectance; send prodlevel "
                "L2A (the default) with Sen2Cor configured (SEN2COR_8)"
            )

    def output_name(self, request: SceneRequest) -> str:
        # An L1C request delivers the L2A product, named as the original renamed Sen2Cor's output.
        return request.in_scene.replace("_MSIL1C_", "_MSIL2A_", 1)

    def archive_candidates(self, request: SceneRequest) -> tuple[str, ...]:
        name = request.in_scene
        return (f"{name}.SAFE/", f"{name}.zip", f"{name}.SAFE.zip")

    async def prepare(
        self, fetched: FetchedScene, request: SceneRequest, workdir: Path, settings: WorkerSettings
    ) -> Path:
        if scene_level(request.in_scene) != "L1C":
            return fetched.folder
        l1c = fetched.folder / f"{request.in_scene}.SAFE"
        if not (l1c / "MTD_MSIL1C.xml").is_file():
            raise CorruptScene(f"{request.in_scene} has no MTD_MSIL1C.xml in its .SAFE folder")
        command = sen2cor_command(settings.sen2cor_command)
        return await run_sen2cor(command, l1c, workdir / "sen2cor")

    def make_ard(
        self, folder: Path, request: SceneRequest, out_dir: Path, context: ArdContext
    ) -> ArdProduct:
        product = read_safe(folder, request.in_scene)
        metadata = product.metadata
        if scene_level(request.in_scene) == "L2A" and metadata.name != request.in_scene:
            raise CorruptScene(
                f"the archive's product for {request.in_scene} says it is {metadata.name} "
                f"({product.root / PRODUCT_METADATA})"
            )
        name = context.output_name
        converted = convert_scene(product, out_dir, name, threads=context.threads, cog=context.cog)
        files = [ArdFile(c.path.name, c.path, COG_MEDIA_TYPE) for c in converted]
        accessories: dict[str, str] = {}
        tile_metadata = next(product.root.glob(f"GRANULE/*/{TILE_METADATA}"))
        for kind, original in (
            ("esa", product.root / PRODUCT_METADATA),
            ("esa_tile", tile_metadata),
        ):
            copy = out_dir / f"{name}_{original.name}"
            shutil.copyfile(original, copy)
            files.append(ArdFile(copy.name, copy, XML_MEDIA_TYPE))
            accessories[f"metadata:{kind}"] = copy.name
        dataset_id = ard_dataset_id(self.product, name)
        facts = SceneDocuments(
            product=self.product,
            scene=name,
            dataset_id=dataset_id,
            metadata=metadata,
            bands=sorted(converted, key=lambda c: list(OUTPUT_BY_NAME).index(c.band.measurement)),
            file_names={c.band.measurement: band_file_name(name, c.band) for c in converted},
            accessories=accessories,
            processed=context.processed,
            source_url=context.source_url,
        )
        return ArdProduct(
            dataset_id=dataset_id,
            files=tuple(files),
            stac_item=stac_item(
                facts, context.url_of(stac_file_name(name)), metadata_file_name(name)
            ),
            eo3_document=eo3_document(facts),
        )
