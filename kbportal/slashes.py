"""API routes that answer with and without a trailing slash.

Each named route is the canonical path: `reverse` gives it and the OpenAPI schema lists it. Its
twin, the same path with the final slash added or removed, runs the same view. Both forms are
routed rather than redirected because a redirect turns a POST or DELETE into a GET.
"""

from functools import wraps

from django.urls import URLPattern, path


def twin_view(view):
    """The same view, marked so that the schema leaves it out (see `drop_twins`)."""

    @wraps(view)
    def twin(*args, **kwargs):
        return view(*args, **kwargs)

    twin.slash_twin = True
    return twin


def with_slash_twins(patterns: list[URLPattern]) -> list[URLPattern]:
    """`patterns`, each followed by its twin route (unnamed, so `reverse` keeps the canonical one)."""
    routes = []
    for pattern in patterns:
        route = str(pattern.pattern)
        twin = route.removesuffix("/") if route.endswith("/") else route + "/"
        routes += [pattern, path(twin, twin_view(pattern.callback), pattern.default_args)]
    return routes


def drop_twins(endpoints: list[tuple], **kwargs) -> list[tuple]:
    """drf-spectacular preprocessing hook: document each operation once, at its canonical path."""
    return [endpoint for endpoint in endpoints if not getattr(endpoint[3], "slash_twin", False)]
