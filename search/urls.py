"""Routes of the search API and, under it, of asking (mounted under /api/v1/)."""

from django.urls import include, path

from kbportal.slashes import with_slash_twins
from search import api

# Every route also answers at its twin, with the final slash added or removed (kbportal.slashes).
urlpatterns = [
    *with_slash_twins([path("search", api.SearchApi.as_view(), name="search")]),
    path("", include("search.asking.urls")),
]
