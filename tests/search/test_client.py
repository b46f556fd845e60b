"""The Elasticsearch client over several nodes (`KB_ES_URL` as a comma-separated list): a refused
connection is sent to the next node, a timeout is not."""

import socket

import pytest
from elasticsearch import ConnectionTimeout

from bench.processes import free_port
from search.client import get_client, node_urls, reset_client


@pytest.fixture
def nodes(settings):
    """Point the shared client at the given node URLs (the test node's URL is `live`)."""
    live = settings.KB_ES_URL

    def point(*urls: str) -> None:
        settings.KB_ES_URL = ",".join(url or live for url in urls)
        reset_client()

    yield point
    reset_client()


def test_kb_es_url_names_one_node_or_several(settings):
    settings.KB_ES_URL = "http://10.77.0.11:9200"
    assert node_urls() == ["http://10.77.0.11:9200"]
    settings.KB_ES_URL = "http://10.77.0.11:9200, http://10.77.0.12:9200,"
    assert node_urls() == ["http://10.77.0.11:9200", "http://10.77.0.12:9200"]


def test_a_refused_connection_goes_to_the_next_node(nodes):
    nodes(f"http://127.0.0.1:{free_port()}", "")
    # Round robin over both nodes: the closed one is met, and each call still answers.
    for _ in range(4):
        assert get_client().cluster.health()["status"] in ("green", "yellow")


def test_a_timeout_is_not_sent_to_another_node(nodes, settings):
    with socket.socket() as hanging:  # accepts connections, never answers
        hanging.bind(("127.0.0.1", 0))
        hanging.listen(8)
        settings.KB_ES_TIMEOUT = 0.3
        nodes(f"http://127.0.0.1:{hanging.getsockname()[1]}", "")
        outcomes = []
        for _ in range(2):  # round robin: one call goes to each node
            try:
                get_client().cluster.health()
                outcomes.append("answered")
            except ConnectionTimeout:
                outcomes.append("timed out")
        assert sorted(outcomes) == ["answered", "timed out"]
