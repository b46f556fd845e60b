"""The bench app: installed only by bench.settings, for its management commands."""

from django.apps import AppConfig


class BenchConfig(AppConfig):
    name = "bench"
