"""search.selectors.searchable_kb_slugs: the knowledge bases a search covers when it names none."""

import pytest

from knowledge.models import ApiKey, KnowledgeBase
from knowledge.services import api_key_create
from search.selectors import searchable_kb_slugs
from tests.search.search_kbs import make_kb

pytestmark = pytest.mark.django_db


def test_a_key_searches_the_knowledge_bases_granted_to_it():
    first, second, _other = make_kb(), make_kb(), make_kb()
    key, _ = api_key_create(name="k", kb_slugs=[second.slug, first.slug], scopes=["search"])
    assert searchable_kb_slugs(api_key=ApiKey.objects.get(pk=key.pk)) == sorted([first.slug, second.slug])


def test_a_key_whose_grants_were_withdrawn_searches_nothing():
    key, _ = api_key_create(name="k", kb_slugs=[make_kb().slug], scopes=["search"])
    key.knowledge_bases.clear()
    assert searchable_kb_slugs(api_key=ApiKey.objects.get(pk=key.pk)) == []


def test_staff_and_in_process_callers_search_every_knowledge_base():
    make_kb(), make_kb()
    assert searchable_kb_slugs(api_key=None) == sorted(KnowledgeBase.objects.values_list("slug", flat=True))
