from django.urls import path

from kbportal.slashes import with_slash_twins
from search import api, ask_api

# Every route also answers at its twin, with the final slash added or removed (kbportal.slashes).
urlpatterns = with_slash_twins([
    path("search", api.SearchApi.as_view(), name="search"),
    path("ask", ask_api.AskApi.as_view(), name="ask"),
    path("ask/<int:task_id>", ask_api.AnswerApi.as_view(), name="ask-status"),
    path("ask/<int:task_id>/cancel", ask_api.AnswerCancelApi.as_view(), name="ask-cancel"),
    path("queues", ask_api.QueuesApi.as_view(), name="queues"),
])
