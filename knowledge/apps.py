"""The knowledge app: knowledge bases, sources, documents, API keys and embedders."""

from django.apps import AppConfig

from kbportal import health
from knowledge import schema  # noqa: F401  (registers the OpenAPI auth extension)
from knowledge.storage import get_object_store


class KnowledgeConfig(AppConfig):
    name = "knowledge"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # knowledge.signals imports the models: importable only once the app registry is ready.
        from knowledge.signals import connect_signals

        connect_signals()
        health.register("object_store", lambda: get_object_store().ping())
