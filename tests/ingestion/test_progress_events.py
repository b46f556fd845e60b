"""An ingestion job's progress reaches its WebSocket groups, ending with the final state."""

import pytest

from ingestion.services import source_add
from ingestion.tasks import run_ingestion_job
from tests.kbportal.test_progress import collect


@pytest.mark.django_db(transaction=True)
def test_an_ingestion_job_publishes_its_final_state_to_its_groups(kb):
    _, job = source_add(kb=kb, kind="text", name="t", config={"text": "progress events please"})
    events = collect(f"kb-{kb.slug}", lambda: run_ingestion_job(job.pk))
    assert events, "no progress event reached the knowledge base group"
    final = events[-1]
    assert (final["id"], final["status"], final["done"], final["percent"]) == (job.pk, "succeeded", 1, 100.0)
    assert [e["done"] for e in events] == sorted(e["done"] for e in events)
