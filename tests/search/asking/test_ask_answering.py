"""Answering in-process with the extractive generator: quotes, citations, isolation, budgets."""

import pytest

from kbportal.claiming import JobStatus
from knowledge.models import Document
from search.asking.answering import build_context, chunk_sources
from search.asking.generators import Passage
from tests.search.asking.ask_support import SPACE, answer, space_kb  # noqa: F401
from tests.search.search_kbs import ingest, make_kb

pytestmark = pytest.mark.django_db(transaction=True)


def test_extractive_answer_quotes_sentences_of_the_documents_it_cites(space_kb):  # noqa: F811
    task = answer(space_kb, "How do liquid rocket engines burn propellant?")
    assert task.status == JobStatus.SUCCEEDED, task.error
    assert task.generator == "extractive" and task.model == "extractive:hashing"
    assert task.citations, task.answer
    sources = chunk_sources([citation["chunk_id"] for citation in task.citations])
    contents = {chunk_id: source["content"] for chunk_id, source in sources.items()}
    for citation in task.citations:
        assert f"[{citation['number']}]" in task.answer
        assert citation["quote"] and citation["quote"].split(". ")[0] in contents[citation["chunk_id"]]
        assert citation["quote"].split(". ")[0] in task.answer
        document = Document.objects.get(pk=citation["document_id"])
        assert document.title == citation["title"] and document.source.kb_id == space_kb.pk
    assert "Rocket engines" in {citation["title"] for citation in task.citations}
    assert "propellant" in task.answer
    assert task.retrieval_ms > 0 and task.generation_ms is not None


def test_extractive_answer_never_cites_another_knowledge_base(space_kb):  # noqa: F811
    other = make_kb("other")
    ingest(other, {"Secret rockets": "Secret rocket engines burn a propellant only the other base knows."})
    task = answer(space_kb, "Which rocket engines burn propellant?", passages=10)
    assert task.status == JobStatus.SUCCEEDED
    documents = Document.objects.filter(pk__in=[c["document_id"] for c in task.citations])
    assert {document.source.kb_id for document in documents} == {space_kb.pk}
    assert "only the other base" not in task.answer


def test_question_nothing_answers_says_nothing_relevant_was_found(space_kb):  # noqa: F811
    task = answer(space_kb, "quantum chromodynamics lattice gauge", mode="keyword")
    assert task.status == JobStatus.SUCCEEDED
    assert (task.answer, task.citations) == (f"I found nothing relevant in {space_kb.name} for this question.", [])


def test_identical_sentences_are_quoted_once(search_index):
    kb = make_kb("dup")
    repeated = "Solar panels convert sunlight into electricity for the house."
    ingest(kb, {"Panels one": f"{repeated} They sit on the roof.", "Panels two": f"{repeated} They face south."})
    task = answer(kb, "How do solar panels convert sunlight into electricity?")
    assert task.answer.count(repeated) == 1


def passage(number: int, words: int) -> Passage:
    return Passage(number, f"c{number}", number, 1, "kb", f"T{number}", "", 0, " ".join(["word"] * words))


def test_context_keeps_the_best_passages_that_fit_the_budget_and_cuts_the_last():
    passages = [passage(n, 100) for n in (1, 2, 3, 4)]  # about 130 tokens each
    context = build_context(passages, budget_tokens=330)
    assert [p.number for p in context] == [1, 2, 3]
    assert [p.content for p in context[:2]] == [p.content for p in passages[:2]]
    assert context[2].content.endswith(" …") and len(context[2].content) < len(passages[2].content)
    assert [p.number for p in build_context(passages, budget_tokens=290)] == [1, 2]  # too little left to cut


def test_a_document_title_heading_its_text_is_never_quoted_as_an_answer(search_index):
    kb = make_kb("titles")
    title = "How solar panels turn sunlight into electricity"
    ingest(kb, {title: "Solar panels turn sunlight into electricity on the roof."})
    task = answer(kb, "How do solar panels turn sunlight into electricity?")
    assert "Solar panels turn sunlight into electricity on the roof." in task.answer
    assert title not in task.answer
