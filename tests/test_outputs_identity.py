"""Dataset ids: deterministic, blind to source order, and different whenever the inputs differ."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.worker.outputs.identity import ODC_NAMESPACE, dataset_id, derived_dataset_id
from shared.jobs import Period
from tests.test_outputs_support import SOURCES, geomedian_spec


def test_the_same_job_always_gets_the_same_dataset_id() -> None:
    assert dataset_id(geomedian_spec()) == dataset_id(geomedian_spec())
    assert dataset_id(geomedian_spec()).version == 5


def test_the_id_follows_odc_stats_scheme() -> None:
    # Lines: algorithm, version, deployment, sorted key=value tags, sorted source ids; lower case.
    tags = ["product=ls8_geomedian", "tile=x022y036", "time=2019--p1y"]
    text = "\n".join(["geomedian", "1.0.0", "", *tags, *sorted(SOURCES)])
    assert dataset_id(geomedian_spec()) == uuid.uuid5(ODC_NAMESPACE, text)


@pytest.mark.parametrize(
    "change",
    [
        {"job_code": "ndvi"},
        {"version": "1.0.1"},
        {"tile": "x023y036"},
        {"period": Period(start=date(2020, 1, 1), end=date(2020, 12, 31))},
        {"sources": SOURCES[:2]},
        {"product_name": "s2_geomedian"},
    ],
)
def test_any_change_of_inputs_gives_another_id(change: dict[str, object]) -> None:
    assert dataset_id(geomedian_spec(**change)) != dataset_id(geomedian_spec())


def test_a_source_id_that_is_not_a_uuid_is_refused() -> None:
    with pytest.raises(ValueError, match="not a UUID"):
        derived_dataset_id("geomedian", "1", ["scene-1"])


@given(st.lists(st.uuids(), min_size=1, max_size=20, unique=True), st.randoms())
def test_the_order_and_spelling_of_source_ids_does_not_matter(
    sources: list[uuid.UUID], shuffler: object
) -> None:
    shuffled = list(sources)
    shuffler.shuffle(shuffled)  # type: ignore[attr-defined]
    spelled = [str(source).upper() for source in shuffled]

    assert derived_dataset_id("geomedian", "1", sources, tile="x1y1") == derived_dataset_id(
        "geomedian", "1", spelled, tile="x1y1"
    )
