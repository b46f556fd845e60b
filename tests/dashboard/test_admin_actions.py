"""Operator actions in the Django admin: cancel and retry jobs, sync sources."""

import pytest
from django.urls import reverse

from ingestion.models import IngestionJob
from kbportal.claiming import JobStatus

pytestmark = pytest.mark.django_db


def run_action(client, url: str, action: str, pks: list[int]):
    return client.post(url, {"action": action, "_selected_action": [str(pk) for pk in pks]})


def test_cancel_action_cancels_queued_jobs(admin_client, make_job):
    jobs = [make_job(status=JobStatus.QUEUED), make_job(status=JobStatus.QUEUED)]
    url = reverse("admin:ingestion_ingestionjob_changelist")
    assert run_action(admin_client, url, "cancel_jobs", [job.pk for job in jobs]).status_code == 302
    assert set(IngestionJob.objects.values_list("status", flat=True)) == {JobStatus.CANCELED}


def test_retry_action_queues_a_new_job_per_finished_job(admin_client, make_job):
    failed = make_job(status=JobStatus.FAILED)
    url = reverse("admin:ingestion_ingestionjob_changelist")
    run_action(admin_client, url, "retry_jobs", [failed.pk])
    new = IngestionJob.objects.exclude(pk=failed.pk).get()
    assert (new.status, new.source_id, new.kind) == (JobStatus.QUEUED, failed.source_id, failed.kind)


def test_sync_action_queues_one_sync_per_enabled_source(admin_client, text_source):
    url = reverse("admin:knowledge_source_changelist")
    run_action(admin_client, url, "sync_sources", [text_source.pk])
    run_action(admin_client, url, "sync_sources", [text_source.pk])
    assert IngestionJob.objects.filter(source=text_source, status=JobStatus.QUEUED).count() == 1


def test_django_rq_dashboard_is_reachable_for_staff(admin_client):
    assert admin_client.get("/admin/django-rq/").status_code == 200
