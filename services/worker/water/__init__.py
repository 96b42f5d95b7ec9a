"""Per-scene water classification on the `ard` pool (`jobWater`): scenes already in the
datacube index become WOfS water observation layers, indexed as `lsN_water_classification`.

`layer` is the classification itself (pure), `sources` finds and describes the scenes in the
index, `documents` writes a classification's eo3 document and STAC item, `expansion` turns a
search into a job per scene exactly once, and `runner` is the pool's job runner.
"""
