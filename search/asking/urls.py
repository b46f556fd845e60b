"""Routes of the asking API (mounted under /api/v1/ with the search API)."""

from django.urls import path

from kbportal.slashes import with_slash_twins
from search.asking import api

# Every route also answers at its twin, with the final slash added or removed (kbportal.slashes).
urlpatterns = with_slash_twins([
    path("ask", api.AskApi.as_view(), name="ask"),
    path("ask/<int:task_id>", api.AnswerApi.as_view(), name="ask-status"),
    path("ask/<int:task_id>/cancel", api.AnswerCancelApi.as_view(), name="ask-cancel"),
    path("queues", api.QueuesApi.as_view(), name="queues"),
])
