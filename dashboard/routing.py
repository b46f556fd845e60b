"""The dashboard's WebSocket routes."""

from django.urls import path

from dashboard.consumers import JobProgressConsumer

websocket_urlpatterns = [path("ws/jobs/", JobProgressConsumer.as_asgi())]
