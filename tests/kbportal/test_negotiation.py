"""The remembered content negotiation answers as DRF's own does, with this request's renderers."""

import pytest
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from kbportal.negotiation import RememberingContentNegotiation

ACCEPTS = ["", "*/*", "application/json", "text/html", "text/html,application/xhtml+xml,*/*;q=0.8",
           "application/json; indent=4", "application/*"]


def choose(negotiation, accept: str, query: str = ""):
    request = Request(APIRequestFactory().get(f"/x{query}", HTTP_ACCEPT=accept))
    renderers = [JSONRenderer(), BrowsableAPIRenderer()]
    try:
        renderer, media_type = negotiation.select_renderer(request, renderers)
    except NotAcceptable:
        return "not acceptable"
    assert any(renderer is candidate for candidate in renderers)  # this request's own instance
    return type(renderer), media_type


@pytest.mark.parametrize("query", ["", "?format=api", "?format=json"])
def test_same_choice_as_drf_first_time_and_remembered(query):
    for _ in range(2):
        for accept in ACCEPTS:
            expected = choose(DefaultContentNegotiation(), accept, query)
            assert choose(RememberingContentNegotiation(), accept, query) == expected


def test_unacceptable_stays_unacceptable():
    for _ in range(2):
        assert choose(RememberingContentNegotiation(), "image/png") == "not acceptable"


def test_no_accept_header_is_not_an_empty_one():
    request = Request(APIRequestFactory().get("/x"))
    request.META.pop("HTTP_ACCEPT", None)
    renderers = [JSONRenderer(), BrowsableAPIRenderer()]
    renderer, _ = RememberingContentNegotiation().select_renderer(request, renderers)
    assert renderer is renderers[0]
    assert choose(RememberingContentNegotiation(), "") == choose(DefaultContentNegotiation(), "")
