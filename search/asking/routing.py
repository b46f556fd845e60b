"""The asking WebSocket route."""

from django.urls import path

from search.asking.consumers import AnswerConsumer

websocket_urlpatterns = [path("ws/answers/<int:task_id>/", AnswerConsumer.as_asgi())]
