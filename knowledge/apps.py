from django.apps import AppConfig


class KnowledgeConfig(AppConfig):
    name = "knowledge"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from kbportal import health
        from knowledge import schema  # noqa: F401  (registers the OpenAPI auth extension)
        from knowledge.keycache import connect_signals
        from knowledge.storage import get_object_store

        connect_signals()
        health.register("object_store", lambda: get_object_store().ping())
