"""The openai generator against the stand-in model server: retries, timeouts, cancel, citations."""

import time

import pytest

from bench.processes import wait_until
from kbportal.claiming import JobStatus
from search.asking.generators import NOT_FOUND
from search.asking.services import answer_cancel
from search.models import AnswerTask
from tests.search.asking.ask_support import answer, llm, run_in_thread, space_kb, submit  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def test_streamed_answer_cites_the_numbered_source_it_names(llm, space_kb):  # noqa: F811
    task = answer(space_kb, "How do rocket engines work?")
    assert task.status == JobStatus.SUCCEEDED, task.error
    assert (task.generator, task.model) == ("openai", "standin-1")
    assert task.answer.endswith("[1].")
    (citation,) = task.citations
    assert citation["number"] == 1 and citation["title"] in task.answer
    assert task.completion_tokens == len(task.answer.split()) and task.prompt_tokens > 0
    (request,) = llm.requests_for(f"answer-{task.pk}")
    prompt = request.body["messages"][1]["content"]
    assert "[1] " + citation["title"] in prompt and "Question: How do rocket engines work?" in prompt
    assert NOT_FOUND in request.body["messages"][0]["content"]


def test_rate_limited_model_is_retried_and_the_answer_succeeds(llm, space_kb):  # noqa: F811
    llm.fail_next = [429, 503]
    task = answer(space_kb, "How is bread baked?")
    assert task.status == JobStatus.SUCCEEDED, task.error
    assert [r.status for r in llm.requests_for(f"answer-{task.pk}")] == [429, 503, 200]


def test_model_failing_past_the_retries_fails_the_task_with_the_reason(llm, space_kb, settings):  # noqa: F811
    settings.KB_LLM_RETRIES = 1
    llm.fail_next = [500, 500]
    task = answer(space_kb, "How is bread baked?")
    assert task.status == JobStatus.FAILED
    assert "failed 2 times" in task.error and "HTTP 500" in task.error


def test_hanging_model_times_out_and_the_task_fails_with_the_reason(llm, space_kb, settings):  # noqa: F811
    settings.KB_LLM_TIMEOUT = 1.0
    llm.hang = True
    started = time.monotonic()
    task = answer(space_kb, "How is bread baked?")
    assert task.status == JobStatus.FAILED
    assert "did not answer within 1s" in task.error
    assert time.monotonic() - started < 10
    assert len(llm.requests_for(f"answer-{task.pk}")) == 1  # a silent model is not asked again


def test_cancel_stops_generation_midway(llm, space_kb, settings):  # noqa: F811
    settings.KB_ANSWER_LEASE_SECONDS = 3  # renewed (and cancel noticed) every second
    llm.reply = " ".join(f"w{n:02d}" for n in range(40))
    llm.answer_seconds = 8
    task = submit(space_kb, "How is bread baked?")
    thread = run_in_thread(task.pk)
    request = wait_until(lambda: next(iter(llm.requests_for(f"answer-{task.pk}")), None), timeout=20,
                         message="the model request")
    wait_until(lambda: request.tokens_sent >= 3, timeout=10, message="first tokens")
    answer_cancel(AnswerTask.objects.get(pk=task.pk))
    thread.join(10)
    task.refresh_from_db()
    assert task.status == JobStatus.CANCELED
    assert task.answer.startswith("w00") and len(task.answer.split()) < 40
    wait_until(lambda: request.finished is not None, timeout=10, message="the stand-in to notice")
    assert not request.completed and request.tokens_sent < 40


def test_model_not_asked_when_retrieval_finds_nothing(llm, space_kb):  # noqa: F811
    task = answer(space_kb, "zyxwv qwerty", mode="keyword")
    nothing = f"I found nothing relevant in {space_kb.name} for this question."
    assert (task.status, task.answer, task.citations) == (JobStatus.SUCCEEDED, nothing, [])
    assert llm.requests_for(f"answer-{task.pk}") == []
