"""Indexing a committed ARD scene into the datacube, once.

Only a committed scene is indexed (its eo3 document is read back from the output), so a worker
killed mid-scene never leaves a half-made dataset in the index. Ids are deterministic, so a
second attempt finds the dataset there and adds nothing; two workers racing on the same scene
both end with the one dataset.

The ESA product in the eo3 lineage is not itself a datacube dataset, so lineage is kept in the
document and not resolved against the index.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import structlog
import yaml

from services.worker.settings import WorkerSettings
from shared.errors import Permanent

log = structlog.get_logger(__name__)


class SceneIndexer:
    """Adds eo3 documents to one datacube index; blocking, call it from a thread."""

    def __init__(self, open_datacube: Callable[[], Any]) -> None:
        self._open_datacube = open_datacube
        self._datacube: Any = None
        # Jobs running at once (--concurrency) open it from their threads: one for all.
        self._lock = threading.Lock()

    def datacube(self) -> Any:
        with self._lock:
            if self._datacube is None:
                self._datacube = self._open_datacube()
            return self._datacube

    def ensure_product(self, definition: Mapping[str, Any]) -> None:
        """Add the product `definition` names unless the index has it as defined."""
        from shared.datacube import add_product_definition

        add_product_definition(self.datacube(), definition)

    def ensure_indexed(self, document_text: str, uri: str) -> bool:
        """Index the document found at `uri` unless its id is there; True when it was added."""
        from datacube.index.hl import Doc2Dataset

        document = yaml.safe_load(document_text)
        index = self.datacube().index
        if index.datasets.has(document["id"]):
            return False
        product = document["product"]["name"]
        if index.products.get_by_name(product) is None:
            raise Permanent(
                f"the datacube has no product {product!r}: add it with "
                "`conveyor archive add-products` (or `datacube product add` with "
                f"shared/odc_products/{product}.yaml)"
            )
        resolver = Doc2Dataset(index, products=[product], skip_lineage=True, verify_lineage=False)
        dataset, error = resolver(document, uri)
        if dataset is None:
            raise Permanent(f"{uri} cannot be indexed as {product}: {error}")
        try:
            index.datasets.add(dataset, with_lineage=False)
        except Exception:
            # Another worker indexed the same scene a moment ago: that is the outcome we want.
            if index.datasets.has(document["id"]):
                return False
            raise
        return True

    def close(self) -> None:
        with self._lock:
            if self._datacube is not None:
                self._datacube.close()
                self._datacube = None


def open_configured_datacube() -> Any:
    from shared.datacube import DatacubeSettings, open_datacube

    return open_datacube(DatacubeSettings())


def indexing_enabled(settings: WorkerSettings) -> bool:
    """ARD is indexed unless `CONVEYOR_INDEX_OUTPUTS` is set to false: it is made to be used
    at once by product jobs, unlike derived products, which are indexed only when asked."""
    return settings.index_outputs or "index_outputs" not in settings.model_fields_set


def indexer_for(settings: WorkerSettings) -> SceneIndexer | None:
    """The datacube the environment names (`CONVEYOR_DB_URL`, or datacube's own `ODC_*`
    configuration and datacube.conf), or None when indexing is off."""
    if not indexing_enabled(settings):
        return None
    return SceneIndexer(open_configured_datacube)
