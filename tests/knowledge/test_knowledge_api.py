"""The knowledge REST API: reads of knowledge bases, sources and documents, with their errors."""

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_unknown_knowledge_base_is_404(staff_api):
    assert staff_api.get("/api/v1/kbs/nope/documents/").status_code == 404


def test_anonymous_requests_are_401(kb):
    assert APIClient().get(f"/api/v1/kbs/{kb.slug}/sources/").status_code == 401
