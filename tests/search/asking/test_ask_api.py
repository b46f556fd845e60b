"""POST /api/v1/ask, GET /api/v1/ask/<id> (long-poll), cancel, and GET /api/v1/queues."""

import time

import django_rq
import pytest
from django.contrib.auth import get_user_model

from kbportal.claiming import JobStatus
from search.models import AnswerTask
from tests.search.asking.ask_support import ASK_URL, ask_headers, run_in_thread, space_kb  # noqa: F401
from tests.search.search_kbs import bearer, ingest, make_kb

pytestmark = pytest.mark.django_db(transaction=True)


def post(client, kb, question, headers, **extra):
    return client.post(ASK_URL, {"kb": kb.slug, "question": question, **extra}, content_type="application/json",
                       **headers)


def test_ask_accepts_with_task_id_status_url_and_websocket_url(client, space_kb):  # noqa: F811
    response = post(client, space_kb, "How do rocket engines work?", ask_headers(space_kb))
    assert response.status_code == 202
    body = response.json()
    task = AnswerTask.objects.get(pk=body["id"])
    assert (task.status, task.question, task.kb_id) == (JobStatus.QUEUED, "How do rocket engines work?", space_kb.pk)
    assert body["status_url"] == f"http://testserver/api/v1/ask/{task.pk}"
    assert body["websocket_url"] == f"ws://testserver/ws/answers/{task.pk}/"
    assert body["status"] == "queued" and body["reused"] is False


def test_accepting_a_question_is_two_queries_and_one_doorbell(client, space_kb, django_assert_num_queries):  # noqa: F811
    headers = ask_headers(space_kb)
    post(client, space_kb, "What is a nozzle?", headers)  # loads the key and notes its use
    with django_assert_num_queries(2):  # the stored-answer lookup and the insert (the key is kept)
        response = post(client, space_kb, "How do rocket engines work?", headers)
    assert response.status_code == 202 and response.json()["kb"] == space_kb.slug
    assert django_rq.get_queue("answers").count == 2


def test_identical_question_on_unchanged_kb_is_answered_at_once_from_the_stored_answer(client, space_kb):  # noqa: F811
    headers = ask_headers(space_kb)
    first = post(client, space_kb, "How do rocket engines work?", headers).json()
    run_in_thread(first["id"]).join(30)
    stored = AnswerTask.objects.get(pk=first["id"])
    assert stored.status == JobStatus.SUCCEEDED
    again = post(client, space_kb, "  how do ROCKET engines   work? ", ask_headers(space_kb))
    assert again.status_code == 200
    body = again.json()
    assert body["reused"] is True and body["status"] == "succeeded" and body["id"] != stored.pk
    assert (body["answer"], body["citations"]) == (stored.answer, stored.citations)


def test_changed_knowledge_base_answers_the_same_question_anew(client, space_kb):  # noqa: F811
    headers = ask_headers(space_kb)
    first = post(client, space_kb, "How do rocket engines work?", headers).json()
    run_in_thread(first["id"]).join(30)
    ingest(space_kb, {"Rocket nozzles": "Rocket engines shape the exhaust with a bell nozzle."}, name="more")
    assert post(client, space_kb, "How do rocket engines work?", headers).status_code == 202


def test_key_without_ask_scope_is_forbidden(client, space_kb):  # noqa: F811
    response = post(client, space_kb, "How do rocket engines work?", ask_headers(space_kb, scopes=("search",)))
    assert response.status_code == 403
    assert not AnswerTask.objects.exists()


def test_key_asking_a_knowledge_base_it_lacks_is_forbidden(client, space_kb):  # noqa: F811
    other = make_kb("other")
    response = post(client, other, "anything?", ask_headers(space_kb))
    assert response.status_code == 403


def test_ask_is_rate_limited_per_key(client, space_kb):  # noqa: F811
    headers = ask_headers(space_kb, rate="2/m")
    codes = [post(client, space_kb, f"question {n}?", headers).status_code for n in range(3)]
    assert codes == [202, 202, 429]


def test_another_keys_task_is_not_found(client, space_kb):  # noqa: F811
    task_id = post(client, space_kb, "How do rocket engines work?", ask_headers(space_kb)).json()["id"]
    assert client.get(f"{ASK_URL}/{task_id}", **ask_headers(space_kb)).status_code == 404


def test_wait_long_polls_until_the_answer_is_final(client, space_kb):  # noqa: F811
    headers = ask_headers(space_kb)
    task_id = post(client, space_kb, "How is bread baked?", headers).json()["id"]
    assert client.get(f"{ASK_URL}/{task_id}", **headers).json()["status"] == "queued"
    thread = run_in_thread(task_id)
    started = time.monotonic()
    body = client.get(f"{ASK_URL}/{task_id}", {"wait": 20}, **headers).json()
    thread.join(10)
    assert body["status"] == "succeeded" and body["citations"]
    assert time.monotonic() - started < 15


def test_wait_returns_the_unfinished_task_after_the_timeout(client, space_kb):  # noqa: F811
    headers = ask_headers(space_kb)
    task_id = post(client, space_kb, "How is bread baked?", headers).json()["id"]
    started = time.monotonic()
    body = client.get(f"{ASK_URL}/{task_id}", {"wait": 1}, **headers).json()
    assert body["status"] == "queued" and 0.9 < time.monotonic() - started < 5


def test_cancel_of_a_queued_task_cancels_it_at_once(client, space_kb):  # noqa: F811
    headers = ask_headers(space_kb)
    task_id = post(client, space_kb, "How is bread baked?", headers).json()["id"]
    response = client.post(f"{ASK_URL}/{task_id}/cancel", **headers)
    assert response.status_code == 202 and response.json()["status"] == "canceled"


def test_queues_lists_counts_per_queue_for_an_ops_key(client, space_kb):  # noqa: F811
    post(client, space_kb, "How is bread baked?", ask_headers(space_kb))
    response = client.get("/api/v1/queues", **bearer([space_kb.slug], scopes=("ops",)))
    assert response.status_code == 200
    queues = {queue["name"]: queue for queue in response.json()["queues"]}
    assert set(queues) >= {"high", "default", "ocr", "low", "answers"}
    assert queues["answers"]["queued"] == 1
    assert set(queues["answers"]) >= {"started", "finished", "failed", "scheduled", "workers"}


def test_queues_refuses_keys_without_ops_and_allows_staff(client, space_kb):  # noqa: F811
    assert client.get("/api/v1/queues", **ask_headers(space_kb)).status_code == 403
    staff = get_user_model().objects.create_user("ops-person", password="pw-ops-1", is_staff=True)
    client.force_login(staff)
    assert client.get("/api/v1/queues").status_code == 200


def test_invalid_questions_are_400_with_every_field_error(client, space_kb):  # noqa: F811
    headers = ask_headers(space_kb)
    assert post(client, space_kb, "What are rockets made of?", headers).status_code == 202
    too_long = post(client, space_kb, "x" * 1001, headers)  # same other fields as the accepted one
    assert too_long.status_code == 400 and set(too_long.json()["fields"]) == {"question"}
    both = post(client, space_kb, "", headers, mode="fuzzy", passages=0)
    assert both.status_code == 400 and set(both.json()["fields"]) == {"question", "mode", "passages"}
    listed = client.post(ASK_URL, ["not", "an", "object"], content_type="application/json", **headers)
    assert listed.status_code == 400 and "non_field_errors" in listed.json()["fields"]
