"""The answer task's scheduled work: the sweeper covers answer tasks, expired answers are purged."""

from datetime import timedelta

import django_rq
import pytest
from django.core.management import call_command
from django.utils import timezone

from ingestion.tasks import sweep_jobs
from kbportal.claiming import JobStatus, rq_job_waiting
from search.asking.tasks import purge_answers
from search.models import AnswerTask
from tests.search.asking.ask_support import answer, space_kb, submit  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def test_sweep_requeues_a_queued_answer_that_redis_forgot(space_kb, clean_redis):  # noqa: F811
    task = submit(space_kb, "How is bread baked?")
    assert rq_job_waiting(task)
    clean_redis.flushdb()
    assert sweep_jobs()["requeued"] == 1
    assert rq_job_waiting(task)
    assert django_rq.get_queue("answers").job_ids == [task.rq_job_id]


def test_sweep_hands_on_an_answer_whose_worker_died(space_kb):  # noqa: F811
    task = submit(space_kb, "How is bread baked?")
    expired = timezone.now() - timedelta(seconds=1)
    AnswerTask.objects.filter(pk=task.pk).update(
        status=JobStatus.RUNNING, attempts=1, lease_owner="dead:1", lease_expires_at=expired
    )
    assert sweep_jobs()["expired"] == 1
    assert "requeued 0 queued job(s), 0 expired lease(s)" in _command_output("sweep_jobs")


def test_purge_deletes_finished_answers_past_their_expiry_only(space_kb):  # noqa: F811
    old = answer(space_kb, "How is bread baked?")
    fresh = answer(space_kb, "How do rocket engines work?")
    waiting = submit(space_kb, "Why mulch the beds?")
    AnswerTask.objects.filter(pk__in=[old.pk, waiting.pk]).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert purge_answers() == 1
    assert set(AnswerTask.objects.values_list("pk", flat=True)) == {fresh.pk, waiting.pk}


def test_expired_answer_is_not_reused(space_kb):  # noqa: F811
    first = answer(space_kb, "How is bread baked?")
    AnswerTask.objects.filter(pk=first.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    again = submit(space_kb, "How is bread baked?")
    assert again.status == JobStatus.QUEUED and again.reused_from_id is None


def _command_output(name: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command(name, stdout=out)
    return out.getvalue()
