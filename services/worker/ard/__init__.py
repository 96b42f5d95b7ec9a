"""The `ard` pool: one scene per job made into analysis-ready data and indexed.

`runner.SceneRunner` runs the jobs; `plugin.ScenePlugin` is the interface one mission implements
(`sentinel2.Sentinel2` for ESA L2A, or L1C through Sen2Cor; `landsat.LandsatCollection1` and
`landsat.LandsatCollection2` for USGS Landsat downloads, with `landsat_mtl`, `landsat_espa`,
`landsat_bands` and `landsat_metadata` beside them). Modules, each with one job:
`safe` reads ESA's SAFE metadata, `fetch` finds and copies (or unpacks) scenes from the archive,
`bands` writes COGs (offsets applied, NDVI, cloud mask), `metadata` the eo3 and STAC documents,
`sen2cor` runs atmospheric correction, `scratch` guards the working directory, `index` adds
committed scenes to the datacube. See docs/scene-plugins.md.
"""
