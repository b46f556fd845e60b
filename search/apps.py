"""The search app: the index, queries, fusion, the search API and asking."""

from django.apps import AppConfig

from kbportal.health import register


class SearchConfig(AppConfig):
    name = "search"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # search.services imports models: importable only once the app registry is ready.
        from search.services import search_health

        register("search", search_health)  # the search server, its index and the search breaker's state
