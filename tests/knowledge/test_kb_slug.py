"""A knowledge base's slug is lowercase letters, digits and hyphens, as documented; the form, the
API and `createkb` refuse anything else with the same message."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse
from rest_framework.test import APIClient

from knowledge.models import KnowledgeBase
from knowledge.services import kb_slug_error, knowledge_base_create

pytestmark = pytest.mark.django_db

UPPERCASE = "Use lowercase letters: “team-docs”, not “Team-Docs”."


@pytest.mark.parametrize("slug", ["docs", "team-docs", "kb-2026", "42"])
def test_documented_slugs_are_accepted(slug):
    assert kb_slug_error(slug) == ""


@pytest.mark.parametrize(
    ("slug", "message"),
    [
        ("Team-Docs", UPPERCASE),
        ("team_docs", "Use only lowercase letters, digits and hyphens (such as “team-docs”)."),
        ("team docs", "Use only lowercase letters, digits and hyphens (such as “team-docs”)."),
        ("", "Use only lowercase letters, digits and hyphens (such as “team-docs”)."),
    ],
)
def test_service_refuses_other_slugs_with_a_message_saying_what_to_use(slug, message):
    with pytest.raises(ValidationError) as refused:
        knowledge_base_create(slug=slug, name="Team docs")
    assert refused.value.message_dict == {"slug": [message]}
    assert not KnowledgeBase.objects.exists()


def test_dashboard_form_refuses_uppercase_and_keeps_what_was_typed(client):
    client.force_login(get_user_model().objects.create_user("operator", password="pw", is_staff=True))
    form = {"name": "Team docs", "slug": "Team-Docs", "embedder": "hashing"}
    response = client.post(reverse("dashboard:kb-new"), form)
    assert response.status_code == 400
    assert response.context["kb_form"].errors["slug"] == [UPPERCASE]
    assert 'value="Team-Docs"' in response.content.decode()
    assert not KnowledgeBase.objects.exists()


def test_dashboard_form_documents_the_slug_rule_and_suggests_it_from_the_name(client):
    client.force_login(get_user_model().objects.create_user("operator", password="pw", is_staff=True))
    page = client.get(reverse("dashboard:overview")).content.decode()
    assert "Lowercase letters, digits and hyphens; used in URLs and the API." in page
    assert "js/kb_form.js" in page and "data-kb-form" in page


def test_api_refuses_uppercase_with_400_on_the_slug_field():
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("ops", password="pw", is_staff=True))
    response = client.post("/api/v1/kbs/", {"slug": "Team-Docs", "name": "Team docs", "embedder": "hashing"})
    assert response.status_code == 400
    assert response.json()["fields"] == {"slug": [UPPERCASE]}


def test_createkb_refuses_uppercase():
    with pytest.raises(CommandError, match="slug: Use lowercase letters"):
        call_command("createkb", "Team-Docs", "--embedder", "hashing", stdout=StringIO())
    assert not KnowledgeBase.objects.exists()
