"""WebSocket routes of every app."""

from ingestion.routing import websocket_urlpatterns as ingestion_routes
from search.routing import websocket_urlpatterns as search_routes

websocket_urlpatterns = [*ingestion_routes, *search_routes]
