"""Answer tasks run by real worker processes on the `answers` queue, racing for the same rows."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.db import connection

from bench.processes import wait_until
from kbportal.claiming import JobStatus
from search.models import AnswerTask
from tests.search.asking.ask_support import llm, space_kb, submit  # noqa: F401
from tests.support import start_worker, stop_worker

pytestmark = pytest.mark.django_db(transaction=True)


def answer_workers(llm, count: int):  # noqa: F811
    env = {"KB_GENERATOR": "openai", "KB_LLM_URL": llm.url, "KB_LLM_MODEL": "standin-1",
           "KB_ES_TIMEOUT": str(max(settings.KB_ES_TIMEOUT, 10))}
    return [start_worker("answers", burst=True, **env) for _ in range(count)]


def test_fifty_concurrent_questions_with_two_workers_each_finish_exactly_once(llm, space_kb):  # noqa: F811
    llm.answer_seconds = 0.1

    def ask(n: int) -> int:
        try:
            return submit(space_kb, f"Question {n}: how is bread baked?").pk
        finally:
            connection.close()

    with ThreadPoolExecutor(10) as pool:
        task_ids = list(pool.map(ask, range(50)))
    workers = answer_workers(llm, 2)
    try:
        wait_until(lambda: all(w.poll() is not None for w in workers), timeout=240, message="burst workers to drain")
    finally:
        for worker in workers:
            stop_worker(worker)
    tasks = list(AnswerTask.objects.filter(pk__in=task_ids))
    assert {task.status for task in tasks} == {JobStatus.SUCCEEDED}
    assert {task.attempts for task in tasks} == {1}
    completed = llm.completed_by_request()
    assert {completed[f"answer-{pk}"] for pk in task_ids} == {1}
    assert len(llm.requests) == 50
    assert len({task.lease_owner for task in tasks}) == 2  # both workers took a share
