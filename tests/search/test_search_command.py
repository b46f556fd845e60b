"""`manage.py search KB QUERY`: ranked hits with titles and plain-text snippets."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tests.search.search_kbs import ingest, make_kb

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def kb(search_index):
    kb = make_kb("cmd")
    ingest(kb, {
        "Bee keeping": "Bees make honey & wax; the keeper smokes the hive before opening it.",
        "Cheese making": "Rennet curdles milk into curds and whey.",
    })
    return kb


def run(*args) -> str:
    out = StringIO()
    call_command("search", *args, stdout=out)
    return out.getvalue()


def test_prints_ranked_hits_with_titles_and_plain_snippets(kb):
    output = run(kb.slug, "honey hive", "--mode", "keyword")
    lines = output.splitlines()
    assert lines[0].startswith("1 of 1 hits, keyword")
    assert "1. Bee keeping" in lines[1]
    assert "Bees make honey & wax" in lines[2]
    assert "<mark>" not in output and "&amp;" not in output


def test_size_limits_the_hits_shown(kb):
    output = run(kb.slug, "honey curds milk", "--size", "1")
    assert output.splitlines()[0].startswith("1 of 2 hits, hybrid")
    assert "2. " not in output


def test_unknown_knowledge_base_is_a_clear_error(kb):
    with pytest.raises(CommandError, match="No knowledge base 'nope'"):
        run("nope", "honey")


def test_empty_query_is_a_clear_error(kb):
    with pytest.raises(CommandError, match="q: The query must not be empty"):
        run(kb.slug, "   ")


def test_no_knowledge_base_is_a_clear_error(kb):
    with pytest.raises(CommandError, match="Name at least one knowledge base"):
        run(",", "honey")
