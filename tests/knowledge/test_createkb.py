"""`manage.py createkb`, as an operator runs it."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from knowledge.models import KnowledgeBase

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_createkb_uses_the_embedders_dimensions():
    run("createkb", "docs", "--name", "Docs", "--embedder", "hashing")
    kb = KnowledgeBase.objects.get(slug="docs")
    assert (kb.name, kb.embedder, kb.dimensions) == ("Docs", "hashing", 384)


def test_createkb_refuses_an_unknown_embedder():
    with pytest.raises(CommandError, match="embedder"):
        run("createkb", "docs", "--embedder", "nope")


def test_createkb_refuses_a_duplicate_slug(kb):
    with pytest.raises(CommandError, match="slug"):
        run("createkb", kb.slug)
