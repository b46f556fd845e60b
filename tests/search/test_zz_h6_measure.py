import statistics
import time

import pytest
from django.core.cache import cache as dcache
from django.db import connection

from knowledge.authentication import authenticate_key
from search import cache
from search.services import knowledge_base_states, search_knowledge
from tests.search.search_kbs import SEARCH_URL, bearer, ingest, make_kb

pytestmark = pytest.mark.django_db(transaction=True)


def timeit(fn, n=1000):
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 3)


def test_measure(client, search_index):
    kb = make_kb("m")
    ingest(kb, {f"Doc {n}": f"text about topic {n} and rockets {n}" for n in range(20)})
    headers = bearer([kb.slug], rate="100000/s")
    raw = headers["HTTP_AUTHORIZATION"].split()[1]
    key = authenticate_key(raw)
    params = {"q": "rockets topic", "kb": kb.slug}
    client.get(SEARCH_URL, params, **headers)
    fp = cache.fingerprint({"a": 1})
    print("api", timeit(lambda: client.get(SEARCH_URL, params, **headers)))
    print("health live", timeit(lambda: client.get("/health/live")))
    print("service hit", timeit(lambda: search_knowledge(kb_slugs=[kb.slug], query="rockets topic", api_key=key)))
    print("auth", timeit(lambda: authenticate_key(raw)))
    print("states", timeit(lambda: knowledge_base_states([kb.slug], api_key=key)))
    print("redis get", timeit(lambda: dcache.get(fp)))
    def select1():
        with connection.cursor() as c:
            c.execute("SELECT 1")
    print("select 1", timeit(select1))


def test_pieces(rf):
    from search.api import SearchInput, input_data
    from django.http import QueryDict
    qd = QueryDict("q=rockets+topic&kb=abc")
    print("serializer", timeit(lambda: SearchInput(data=input_data(qd)).is_valid(raise_exception=True)))
    from django_ratelimit.core import get_usage
    req = rf.get("/")
    print("ratelimit", timeit(lambda: get_usage(req, group="g", key="ip", rate="100000/s", increment=True)))
    from rest_framework.renderers import JSONRenderer
    body = {"hits": [{"document_id": 1, "title": "x" * 30, "snippet": "y" * 240, "ranks": {"keyword": 1}}] * 10,
            "total": 10}
    print("render", timeit(lambda: JSONRenderer().render(body)))
