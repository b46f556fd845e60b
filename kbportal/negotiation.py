"""DRF's content negotiation, remembered.

DRF parses the Accept header and matches it against every renderer on each request (about 7% of
a cached search's CPU). The choice depends only on the header, the format override and the
view's renderer classes, so it is remembered per combination: at most `MAX_REMEMBERED` of them,
since the header is the client's to choose; past that, DRF decides as before.
"""

from rest_framework.negotiation import DefaultContentNegotiation

MAX_REMEMBERED = 256
_chosen: dict[tuple, tuple[int, str]] = {}


class RememberingContentNegotiation(DefaultContentNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        key = (
            request.META.get("HTTP_ACCEPT", "*/*"),  # as DRF reads it: no header is not an empty one
            format_suffix or request.query_params.get(self.settings.URL_FORMAT_OVERRIDE),
            tuple(type(renderer) for renderer in renderers),
        )
        chosen = _chosen.get(key)
        if chosen is None:
            renderer, media_type = super().select_renderer(request, renderers, format_suffix)
            chosen = renderers.index(renderer), media_type  # NotAcceptable is raised, not remembered
            if len(_chosen) < MAX_REMEMBERED:
                _chosen[key] = chosen
        index, media_type = chosen
        return renderers[index], media_type
