"""Routes of the knowledge API (mounted under /api/v1/); URLs that also start ingestion jobs are in ingestion.urls."""

from django.urls import path

from kbportal.slashes import with_slash_twins
from knowledge import api

# Every route also answers at its twin, with the final slash added or removed (kbportal.slashes).
urlpatterns = with_slash_twins([
    path("kbs/", api.KnowledgeBaseListApi.as_view(), name="kb-list"),
    path("kbs/<slug:slug>/documents/", api.DocumentListApi.as_view(), name="document-list"),
])
