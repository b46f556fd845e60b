"""Test support for the asking tests: the stand-in model server, small knowledge bases, keys."""

import threading

import pytest

from bench.standin_llm import StandinLLM
from knowledge.models import KnowledgeBase
from search.asking.answering import AnswerRunner
from search.asking.services import answer_submit
from search.models import AnswerTask
from tests.search.search_kbs import bearer, ingest, make_kb

ASK_URL = "/api/v1/ask"

SPACE = {
    "Rocket engines": "Liquid rocket engines burn propellant and oxidiser in a combustion chamber. "
                      "The exhaust leaves through a nozzle at high speed. Engineers test engines on stands.",
    "Bread baking": "Knead the dough for ten minutes. Let the dough rise until it doubles. "
                    "Bake the bread in a hot oven until the crust is brown.",
    "Garden care": "Water the tomatoes early in the morning. Mulch the beds to keep the soil moist.",
}


@pytest.fixture
def llm(settings):
    """The stand-in model (not a model: scripted SSE replies) with the openai generator pointed at it."""
    with StandinLLM().running() as standin:
        settings.KB_LLM_URL = standin.url
        settings.KB_LLM_MODEL = "standin-1"
        settings.KB_GENERATOR = "openai"
        settings.KB_LLM_RETRY_BASE_SECONDS = 0.05
        yield standin


@pytest.fixture
def space_kb(search_index) -> KnowledgeBase:
    kb = make_kb("ask")
    ingest(kb, SPACE)
    return kb


def ask_headers(kb: KnowledgeBase, scopes=("ask",), rate: str | None = None) -> dict:
    return bearer([kb.slug], scopes=scopes, rate=rate)


def submit(kb: KnowledgeBase, question: str, **kwargs) -> AnswerTask:
    task, _ = answer_submit(kb_slug=kb.slug, question=question, **kwargs)
    return task


def answer(kb: KnowledgeBase, question: str, **kwargs) -> AnswerTask:
    """Submit and run the task in this process (what a worker does); the task as finished."""
    task = submit(kb, question, **kwargs)
    AnswerRunner.execute(task.pk)
    return AnswerTask.objects.select_related("kb").get(pk=task.pk)


def run_in_thread(task_id: int) -> threading.Thread:
    from django.db import connection

    def body():
        try:
            AnswerRunner.execute(task_id)
        finally:
            connection.close()

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread
