"""Revoking an API key from the dashboard asks first: GET shows what revoking does, POST revokes."""

import pytest
from django.urls import reverse

from knowledge.models import ApiKey
from knowledge.services import api_key_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def key(kb) -> ApiKey:
    return api_key_create(name="intranet search", kb_slugs=[kb.slug], scopes=["search"])[0]


def test_keys_page_links_to_the_confirmation_instead_of_revoking(staff_client, key):
    page = staff_client.get(reverse("dashboard:api-keys")).content.decode()
    url = reverse("dashboard:api-key-revoke", args=[key.pk])
    assert f'href="{url}"' in page and f'action="{url}"' not in page


def test_confirmation_page_names_the_key_and_its_knowledge_bases_and_revokes_nothing(staff_client, key, kb):
    response = staff_client.get(reverse("dashboard:api-key-revoke", args=[key.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert f"Revoke the key “intranet search” (<code>kb_{key.prefix}_…</code>)?" in page
    assert kb.slug in page and "It has never been used." in page
    assert 'name="csrfmiddlewaretoken"' in page and "Keep it" in page
    key.refresh_from_db()
    assert not key.revoked


def test_confirming_revokes_the_key(staff_client, key):
    response = staff_client.post(reverse("dashboard:api-key-revoke", args=[key.pk]))
    assert (response.status_code, response["Location"]) == (302, reverse("dashboard:api-keys"))
    key.refresh_from_db()
    assert key.revoked


def test_non_staff_can_neither_see_nor_confirm(client, plain_user, key):
    client.force_login(plain_user)
    url = reverse("dashboard:api-key-revoke", args=[key.pk])
    assert client.get(url).status_code == 403
    assert client.post(url).status_code == 403
    key.refresh_from_db()
    assert not key.revoked
