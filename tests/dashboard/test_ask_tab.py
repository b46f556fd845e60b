"""The playground's Ask tab without JavaScript: the form, the services' messages, the answer page
(status while pending, then the answer with its [n] markers linked to the cited documents), cancel."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from kbportal.claiming import JobStatus
from search.asking.answering import AnswerRunner
from search.models import AnswerTask
from tests.search.search_kbs import document_id, ingest, make_kb

pytestmark = pytest.mark.django_db

ASK = reverse("dashboard:ask")
POLICY = {
    "Vacation policy": "Every employee has 25 days of paid vacation a year. "
                       "Unused vacation days carry over until the end of March.",
    "Expenses": "Submit receipts within thirty days. Travel is booked through the travel desk.",
}


def ask(client, kb, question="How many vacation days do employees have?", **extra):
    data = {"kb": kb.slug, "question": question, "mode": "hybrid", "passages": "4", **extra}
    return client.post(ASK, data)


def make_task(kb, **fields) -> AnswerTask:
    values = {"kb": kb, "question": "Q?", "fingerprint": "f" * 64, "generator": "extractive",
              "expires_at": timezone.now() + timedelta(hours=1), **fields}
    return AnswerTask.objects.create(**values)


def test_ask_tab_labels_every_control_and_marks_its_tab_current(staff_client, kb):
    content = staff_client.get(ASK, {"kb": kb.slug}).content.decode()
    for name in ("kb", "question", "mode", "passages"):
        assert f'<label for="id_{name}">' in content
    assert re.search(r'<a href="/dashboard/search/ask/"\s+aria-current="page">Ask</a>', content)
    assert f'<option value="{kb.slug}" selected>' in content
    assert 'src="/static/js/ask.js"' in content and "<script>" not in content and "style=" not in content


def test_anonymous_and_non_staff_users_cannot_ask(client, plain_user, kb):
    assert client.post(ASK, {"kb": kb.slug, "question": "x"})["Location"].startswith("/accounts/login/")
    client.force_login(plain_user)
    assert ask(client, kb).status_code == 403
    assert not AnswerTask.objects.exists()


def test_empty_question_shows_the_services_message(staff_client, kb):
    response = ask(staff_client, kb, question="   ")
    assert response.status_code == 400
    assert response.context["form"].errors["question"] == ["The question must not be empty."]
    assert b"The question must not be empty." in response.content
    assert not AnswerTask.objects.exists()


def test_passages_out_of_range_shows_the_services_message(staff_client, kb):
    response = ask(staff_client, kb, passages="99")
    assert response.status_code == 400
    assert response.context["form"].errors["passages"] == ["Ensure this value is between 1 and 20."]


def test_unknown_knowledge_base_is_refused(staff_client, kb):
    response = staff_client.post(ASK, {"kb": "nope", "question": "Why?", "mode": "hybrid"})
    assert response.status_code == 400 and "kb" in response.context["form"].errors


def test_asking_queues_a_task_and_opens_its_answer_page_showing_the_status(staff_client, staff_user, kb):
    response = ask(staff_client, kb)
    task = AnswerTask.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("dashboard:answer", args=[task.pk])
    assert (task.status, task.passages, task.mode, task.requester_user) == (JobStatus.QUEUED, 4, "hybrid", staff_user)
    page = staff_client.get(response["Location"]).content.decode()
    assert 'data-field="status" class="badge badge-queued">queued<' in page
    assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in page
    assert f'action="{reverse("dashboard:answer-cancel", args=[task.pk])}"' in page
    assert "How many vacation days do employees have?" in page


def test_cancel_button_cancels_a_queued_answer(staff_client, kb):
    ask(staff_client, kb)
    task = AnswerTask.objects.get()
    response = staff_client.post(reverse("dashboard:answer-cancel", args=[task.pk]))
    assert response.status_code == 302
    task.refresh_from_db()
    assert task.status == JobStatus.CANCELED
    assert b"canceled" in staff_client.get(response["Location"]).content


def test_answer_text_is_escaped_and_only_cited_markers_become_links(staff_client, kb):
    citation = {"number": 1, "document_id": 7, "title": "Doc", "position": 0, "chunk_id": "c", "source_id": 1,
                "url": "javascript:alert(1)", "snippet": "a &lt;b&gt;", "quote": ""}
    task = make_task(kb, status=JobStatus.SUCCEEDED, answer="<b>bold</b> claim [1] and [7].", citations=[citation])
    page = staff_client.get(reverse("dashboard:answer", args=[task.pk])).content.decode()
    assert "&lt;b&gt;bold&lt;/b&gt; claim " in page
    assert f'<a href="#cite-{task.pk}-1" class="cite-ref" aria-label="Source 1">[1]</a> and [7].' in page
    assert "javascript:alert" not in page  # only http(s) source URLs are linked
    assert "<blockquote class=\"cite-quote\">a &lt;b&gt;</blockquote>" in page
    assert "http-equiv" not in page


def test_unknown_answer_is_404(staff_client):
    assert staff_client.get(reverse("dashboard:answer", args=[999999])).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_finished_answer_shows_the_text_with_citations_linking_to_the_documents(
    staff_client, search_index
):
    kb = make_kb("ask")
    ingest(kb, POLICY)
    ask(staff_client, kb)
    task = AnswerTask.objects.get()
    assert AnswerRunner.execute(task.pk) == JobStatus.SUCCEEDED
    page = staff_client.get(reverse("dashboard:answer", args=[task.pk])).content.decode()
    task.refresh_from_db()
    assert task.citations and "vacation" in task.answer
    vacation = document_id(kb, "Vacation policy")
    (cited,) = [c for c in task.citations if c["document_id"] == vacation]
    n = cited["number"]
    assert f'<a href="#cite-{task.pk}-{n}" class="cite-ref" aria-label="Source {n}">[{n}]</a>' in page
    assert f'<li id="cite-{task.pk}-{n}" value="{n}">' in page
    link = f"/dashboard/kbs/{kb.slug}/?q=Vacation+policy#doc-{vacation}"
    assert f'href="{link}"' in page
    assert 'data-field="extractive" class="badge badge-extractive">extractive<' in page
    assert "http-equiv" not in page and 'data-cancel-form hidden' in page
    # The link lands on the document's row of its knowledge base page.
    kb_page = staff_client.get(link.split("#")[0]).content.decode()
    assert f'<tr id="doc-{vacation}">' in kb_page
