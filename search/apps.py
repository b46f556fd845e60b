from django.apps import AppConfig


class SearchConfig(AppConfig):
    name = "search"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from kbportal.health import register
        from search.services import search_health

        register("search", search_health)  # the search server, its index and the search breaker's state
