"""WebSocket routes of every app."""

from ingestion.routing import websocket_urlpatterns as ingestion_routes

websocket_urlpatterns = [*ingestion_routes]
