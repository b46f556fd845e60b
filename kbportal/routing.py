"""WebSocket routes of every app."""

from dashboard.routing import websocket_urlpatterns as dashboard_routes
from search.asking.routing import websocket_urlpatterns as search_routes

websocket_urlpatterns = [*dashboard_routes, *search_routes]
