"""The dashboard app: the staff console's pages and its live-progress WebSocket consumer."""

from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"
    default_auto_field = "django.db.models.BigAutoField"
