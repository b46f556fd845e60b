"""The knowledge-base pickers (search playground, Ask) start on the knowledge base in use: the one
in the URL, else the one this operator used last, else the one with the most documents."""

import re

import pytest
from django.urls import reverse

from knowledge.models import Document, DocumentStatus
from knowledge.services import knowledge_base_create, source_create

pytestmark = pytest.mark.django_db

PICKERS = [reverse("dashboard:playground"), reverse("dashboard:ask")]


def selected(page: str) -> str:
    """The knowledge base the page's picker (`<select name="kb">`) starts on."""
    picker = re.search(r'<select name="kb".*?</select>', page, re.DOTALL).group(0)
    (slug,) = re.findall(r'<option value="([^"]+)" selected>', picker)
    return slug


def with_documents(slug: str, count: int):
    kb = knowledge_base_create(slug=slug, name=slug.title(), embedder="hashing")
    source = source_create(kb=kb, kind="text", name="notes", config={"text": "x"})
    for n in range(count):
        Document.objects.create(source=source, key=f"doc-{n}", title=f"Doc {n}", status=DocumentStatus.INDEXED)
    return kb


@pytest.fixture
def kbs():
    return {"a-test": with_documents("a-test", 0), "handbook": with_documents("handbook", 3),
            "wiki": with_documents("wiki", 1)}


@pytest.mark.parametrize("url", PICKERS)
def test_without_a_choice_the_picker_starts_on_the_knowledge_base_with_most_documents(staff_client, kbs, url):
    assert selected(staff_client.get(url).content.decode()) == "handbook"


@pytest.mark.parametrize("url", PICKERS)
def test_the_knowledge_base_in_the_url_wins(staff_client, kbs, url):
    assert selected(staff_client.get(url, {"kb": "wiki"}).content.decode()) == "wiki"


@pytest.mark.parametrize("url", PICKERS)
def test_the_knowledge_base_last_opened_by_this_operator_comes_next(staff_client, kbs, url):
    staff_client.get(reverse("dashboard:kb", args=["a-test"]))
    assert selected(staff_client.get(url).content.decode()) == "a-test"
    assert selected(staff_client.get(url, {"kb": "wiki"}).content.decode()) == "wiki"


def test_a_playground_search_remembers_its_knowledge_base_for_the_ask_tab(staff_client, kbs, search_index):
    response = staff_client.get(reverse("dashboard:playground"), {"kb": "wiki", "q": "anything", "size": 5})
    assert response.status_code == 200
    assert selected(staff_client.get(reverse("dashboard:ask")).content.decode()) == "wiki"


def test_a_remembered_knowledge_base_that_was_deleted_falls_back_to_the_busiest(staff_client, kbs):
    staff_client.get(reverse("dashboard:kb", args=["wiki"]))
    kbs["wiki"].delete()
    assert selected(staff_client.get(reverse("dashboard:ask")).content.decode()) == "handbook"
