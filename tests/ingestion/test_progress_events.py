"""An ingestion job's progress reaches its WebSocket groups, ending with the final state."""

import pytest
from asgiref.sync import async_to_sync

from ingestion.pipeline import IngestionRunner
from ingestion.services import source_add
from tests.kbportal.test_progress import drain, subscribe


@pytest.mark.django_db(transaction=True)
def test_an_ingestion_job_publishes_its_final_state_to_its_groups(kb):
    channel = async_to_sync(subscribe)(f"kb-{kb.slug}")
    _, job = source_add(kb=kb, kind="text", name="t", config={"text": "progress events please"})
    IngestionRunner.execute(job.pk)
    events = async_to_sync(drain)(channel)
    assert events, "no progress event reached the knowledge base group"
    final = events[-1]
    assert (final["id"], final["status"], final["done"], final["percent"]) == (job.pk, "succeeded", 1, 100.0)
    assert [e["done"] for e in events] == sorted(e["done"] for e in events)
