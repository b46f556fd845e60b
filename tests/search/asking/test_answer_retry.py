"""`answer_retry`: a failed (or canceled) answer's question asked again as a new task, answered
this time once the model answers; an active or succeeded answer has nothing to retry."""

import pytest
from django.core.exceptions import ValidationError

from kbportal.claiming import JobStatus
from search.asking.answering import AnswerRunner, answer_state
from search.asking.services import answer_cancel, answer_retry
from search.models import AnswerTask
from tests.search.asking.ask_support import answer, llm, space_kb, submit  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_failed_answer_asked_again_is_answered_by_a_new_task(llm, space_kb, settings):  # noqa: F811
    settings.KB_LLM_RETRIES = 1
    llm.fail_next = [500, 500]
    failed = answer(space_kb, "How is bread baked?", mode="keyword", passages=3)
    assert failed.status == JobStatus.FAILED
    state = answer_state(failed)
    assert state["reason"] and "\n" not in state["reason"] and state["retry_reason"] == ""

    retried, reused = answer_retry(task=failed)
    assert not reused and retried.pk != failed.pk
    assert (retried.question, retried.mode, retried.passages, retried.status) == (
        "How is bread baked?", "keyword", 3, JobStatus.QUEUED,
    )
    AnswerRunner.execute(retried.pk)
    retried = AnswerTask.objects.get(pk=retried.pk)
    assert retried.status == JobStatus.SUCCEEDED and retried.answer and retried.reason == ""
    assert AnswerTask.objects.get(pk=failed.pk).status == JobStatus.FAILED  # the failed one stays as it was


def test_a_canceled_answer_can_be_asked_again(space_kb):  # noqa: F811
    canceled = answer_cancel(submit(space_kb, "How is bread baked?"))
    assert canceled.status == JobStatus.CANCELED and canceled.reason == "canceled before it started"
    retried, _ = answer_retry(task=canceled)
    assert retried.status == JobStatus.QUEUED and retried.question == canceled.question


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED])
def test_an_active_or_succeeded_answer_is_not_retried(space_kb, status):  # noqa: F811
    task = submit(space_kb, "How is bread baked?")
    AnswerTask.objects.filter(pk=task.pk).update(status=status)
    task.refresh_from_db()
    with pytest.raises(ValidationError, match="Only a failed or canceled answer"):
        answer_retry(task=task)
    assert AnswerTask.objects.count() == 1
