"""Request ids (X-Request-ID in, out, in error bodies and in log lines) and job ids in worker logs."""

import io
import json
import logging
import re
import subprocess
import sys

import pytest

from ingestion.models import IngestionJob, JobKind
from ingestion.tasks import run_ingestion_job
from kbportal.claiming import JobStatus
from kbportal.logging import ContextFilter, JsonFormatter
from tests.support import ROOT, worker_env


@pytest.fixture
def json_log():
    """Root-logger records as the JSON lines KB_LOG_JSON=1 writes."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)


def test_request_id_is_generated_when_absent(client, db):
    response = client.get("/health/live")
    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])
    assert client.get("/health/live")["X-Request-ID"] != response["X-Request-ID"]


def test_sane_incoming_request_id_is_kept(client, db):
    response = client.get("/health/live", HTTP_X_REQUEST_ID="edge-7f3a.42:abc")
    assert response["X-Request-ID"] == "edge-7f3a.42:abc"


@pytest.mark.parametrize("bad", ["has space", "x" * 200, "quote\"s", "<script>", "-leading-dash"])
def test_unsafe_incoming_request_id_is_replaced(client, db, bad):
    response = client.get("/health/live", HTTP_X_REQUEST_ID=bad)
    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])


def test_api_error_body_carries_the_request_id(client, db):
    response = client.get("/api/v1/search", {"q": "x"}, HTTP_X_REQUEST_ID="req-401")
    assert response.status_code == 401
    assert response.json()["request_id"] == "req-401"
    assert response.json()["error"] == "not_authenticated"


def test_django_request_log_of_a_4xx_carries_the_request_id(client, db, json_log):
    client.get("/api/v1/search", {"q": "x"}, HTTP_X_REQUEST_ID="req-logged")
    (line,) = [line for line in json_log() if line["logger"] == "django.request"]
    assert line["message"] == "Unauthorized: /api/v1/search"
    assert line["request_id"] == "req-logged"


def test_unknown_api_url_answers_json_404_with_request_id(client, db):
    response = client.get("/api/v1/no-such-thing", HTTP_X_REQUEST_ID="req-404")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "Not found.", "request_id": "req-404"}


@pytest.mark.urls("tests.ops.urls")
def test_unhandled_api_error_is_json_500_logged_with_its_request_id(db, json_log):
    from django.test import Client

    response = Client(raise_request_exception=False).get("/api/v1/boom", HTTP_X_REQUEST_ID="req-500")
    assert response.status_code == 500
    assert response.json()["error"] == "server_error"
    assert response.json()["request_id"] == "req-500"
    lines = json_log()
    assert {"logger": "tests.ops", "message": "about to fail", "request_id": "req-500"}.items() <= lines[0].items()
    failure = next(line for line in lines if line["logger"] == "django.request")
    assert failure["request_id"] == "req-500"
    assert failure["level"] == "ERROR"
    assert "RuntimeError: boom" in failure["exc"]


def test_worker_log_lines_carry_the_job_id(kb, json_log):
    # A delete job without its source id fails inside run(): JobRunner logs the failure.
    job = IngestionJob.objects.create(kb=kb, kind=JobKind.DELETE_SOURCE, payload={})
    assert run_ingestion_job(job.pk) == JobStatus.FAILED
    failure = next(line for line in json_log() if line["message"] == f"job {job.pk} failed")
    assert failure["job_id"] == f"ingestion.ingestionjob:{job.pk}"
    assert failure["request_id"] is None
    assert "KeyError" in failure["exc"]


def test_log_json_setting_makes_every_line_json(db):
    code = "import django, logging; django.setup(); logging.getLogger('probe').warning('hello %s', 'there')"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=worker_env(KB_LOG_JSON="1"),
                            capture_output=True, text=True, timeout=60)
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["logger"] == "probe"
    assert line["message"] == "hello there"
    assert line["level"] == "WARNING"
    assert line["request_id"] is None and line["job_id"] is None
