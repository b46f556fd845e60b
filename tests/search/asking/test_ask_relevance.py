"""An answer below the relevance thresholds says it found nothing, cites nothing, calls no model."""

import pytest

from kbportal.claiming import JobStatus
from search.asking.relevance import question_terms, term_share
from tests.search.asking.ask_support import answer, llm, space_kb  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def test_question_matching_nothing_is_answered_plainly_without_calling_the_model(llm, space_kb):  # noqa: F811
    task = answer(space_kb, "How do penguins breed in Antarctica?")
    assert task.status == JobStatus.SUCCEEDED, task.error
    assert task.answer == f"I found nothing relevant in {space_kb.name} for this question."
    assert task.citations == [] and task.model == ""
    assert llm.requests_for(f"answer-{task.pk}") == []


def test_question_the_documents_answer_goes_to_the_model_with_its_sources(llm, space_kb):  # noqa: F811
    task = answer(space_kb, "How is bread baked?")
    assert task.status == JobStatus.SUCCEEDED, task.error
    assert "nothing relevant" not in task.answer and task.citations
    assert len(llm.requests_for(f"answer-{task.pk}")) == 1


def test_extractive_answers_say_nothing_relevant_in_every_mode(space_kb):  # noqa: F811
    for mode in ("hybrid", "keyword", "semantic"):
        task = answer(space_kb, "Who won the football world cup in 1998?", mode=mode)
        assert task.answer == f"I found nothing relevant in {space_kb.name} for this question.", mode
        assert task.citations == []


def test_a_lower_similarity_threshold_lets_weak_passages_through(settings, space_kb):  # noqa: F811
    settings.KB_ASK_MIN_SIMILARITY = -1.0  # every passage counts as similar enough
    task = answer(space_kb, "How do penguins breed in Antarctica?")
    assert "nothing relevant" not in task.answer


def test_question_words_are_not_terms_of_the_question():
    assert question_terms("How do penguins breed in Antarctica?", language="english") == {
        "penguin", "breed", "antarctica"
    }
    terms = question_terms("How is bread baked?", language="english")
    assert term_share(terms, "Bake the bread in a hot oven.", language="english") == 1.0
    assert term_share(terms, "How do we know what is true?", language="english") == 0.0
