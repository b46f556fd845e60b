"""Where a hit is, on the dashboard: the playground says "slide 2", an answer's citation names its
page, and the Documents list links each document to its stored original, served safely."""

import pytest
from django.test import Client
from django.urls import reverse

from bench import samples
from ingestion.services import store_upload, upload_add
from ingestion.tasks import run_ingestion_job
from knowledge.models import Document
from knowledge.services import knowledge_base_create

pytestmark = pytest.mark.django_db(transaction=True)

DECK = samples.slide_deck([("Kickoff", "Welcome.", ""), ("Roadmap", "The quokka release ships in May.", "")])
PAGE = b"<html><body><p>A page about the narwhal.</p><script>alert(1)</script></body></html>"


@pytest.fixture
def documents(kb, search_index):
    files = [
        store_upload(data=DECK, filename="deck.pptx", content_type=""),
        store_upload(data=PAGE, filename="page.html", content_type="text/html"),
        store_upload(data=samples.text_pdf([["Cover"], ["The walrus clause."]]), filename="terms.pdf",
                     content_type="application/pdf"),
    ]
    _, job = upload_add(kb=kb, files=files)
    run_ingestion_job(job.pk)
    return {document.key: document for document in Document.objects.filter(source__kb=kb)}


def test_the_playground_says_which_slide_a_hit_is_on(staff_client, kb, documents):
    response = staff_client.get(reverse("dashboard:playground"), {"kb": kb.slug, "q": "quokka"})
    keyword = next(result for result in response.context["results"] if result.mode == "keyword")
    assert [hit.where for hit in keyword.hits] == ["slide 2"]
    assert "· slide 2" in response.content.decode()


def test_the_documents_list_links_the_stored_original(staff_client, kb, documents):
    page = staff_client.get(reverse("dashboard:kb", args=[kb.slug])).content.decode()
    pdf_url = reverse("dashboard:document-original", args=[kb.slug, documents["terms.pdf"].pk])
    assert f'href="{pdf_url}"' in page
    response = staff_client.get(pdf_url)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'inline; filename="terms.pdf"'
    assert response.content.startswith(b"%PDF-")


def test_an_uploaded_web_page_is_downloaded_never_run_in_the_dashboard(staff_client, kb, documents):
    response = staff_client.get(reverse("dashboard:document-original", args=[kb.slug, documents["page.html"].pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"].startswith("attachment")
    assert response["Content-Security-Policy"] == "sandbox"
    assert response.content == PAGE


def test_the_original_is_for_staff_and_for_its_own_knowledge_base(staff_client, kb, documents):
    url = reverse("dashboard:document-original", args=[kb.slug, documents["terms.pdf"].pk])
    assert Client().get(url).status_code == 302  # anonymous: to the sign-in page
    other = knowledge_base_create(slug=f"{kb.slug}-other", name="Other", embedder="hashing")
    wrong = reverse("dashboard:document-original", args=[other.slug, documents["terms.pdf"].pk])
    assert staff_client.get(wrong).status_code == 404
