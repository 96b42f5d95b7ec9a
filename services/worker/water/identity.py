"""The id of a scene's water classification, known from the scene's id alone.

A uuid5 (odc-stats' scheme, `outputs.identity`) over the algorithm, its version, the product and
the source dataset: the same scene classified into the same product is the same dataset, so a
rerun, or another request naming the scene, finds it committed and indexed already; and a water
summary that counts classifications can tell which of its scenes have one.
"""

from __future__ import annotations

from uuid import UUID

from services.worker.outputs.identity import derived_dataset_id
from shared.catalogue import WATER_CLASSIFICATION

#: Bump when what is written changes: the datasets' ids change with it.
VERSION = "1.0.0"


def classification_dataset_id(source_id: str | UUID, product: str) -> UUID:
    return derived_dataset_id(WATER_CLASSIFICATION, VERSION, [source_id], product=product)
