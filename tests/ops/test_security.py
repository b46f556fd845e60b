"""Hostile and careless input: key scope and isolation, revoked keys, key comparison timing, CSRF,
security headers, path traversal in upload names, oversized and malformed bodies, login throttling."""

import json
import re
import secrets
import socket
import statistics
import time

import httpx
import pytest
from django.conf import settings
from django.test import Client, override_settings
from rest_framework.exceptions import AuthenticationFailed

from ingestion.models import IngestionJob
from ingestion.services import source_add
from kbportal.middleware import STRICT_CSP
from knowledge.authentication import authenticate_key
from knowledge.models import ApiKey, KnowledgeBase, Source
from knowledge.services import api_key_create
from tests.ops.conftest import bearer, scrape, value
from tests.support import WebServer, worker_env

# --- API keys -------------------------------------------------------------------------------------


def test_key_without_ingest_scope_cannot_use_ingest_api(client, kb):
    headers = bearer([kb], scopes=("search",))
    response = client.get(f"/api/v1/kbs/{kb.slug}/documents/", **headers)
    assert response.status_code == 403
    assert response.json()["error"] == "permission_denied"


def test_key_cannot_read_another_knowledge_base(client, kb, other_kb):
    headers = bearer([kb])
    assert client.get(f"/api/v1/kbs/{kb.slug}/", **headers).status_code == 200
    assert client.get(f"/api/v1/kbs/{other_kb.slug}/", **headers).status_code == 403
    assert client.get(f"/api/v1/kbs/{other_kb.slug}/sources/", **headers).status_code == 403
    assert client.get("/api/v1/search", {"q": "x", "kb": other_kb.slug}, **headers).status_code == 403
    listed = client.get("/api/v1/kbs/", **headers).json()["results"]
    assert [item["slug"] for item in listed] == [kb.slug]


def test_key_cannot_see_jobs_of_another_knowledge_base(client, kb, other_kb):
    _, job = source_add(kb=other_kb, kind="text", name="secret", config={"text": "other tenant"})
    headers = bearer([kb])
    assert client.get(f"/api/v1/jobs/{job.pk}/", **headers).status_code == 404
    assert client.post(f"/api/v1/jobs/{job.pk}/cancel/", **headers).status_code == 404
    assert client.get("/api/v1/jobs/", **headers).json()["results"] == []
    assert IngestionJob.objects.get(pk=job.pk).cancel_requested is False


def test_revoked_key_is_refused(client, kb):
    key, raw = api_key_create(name="gone", kb_slugs=[kb.slug], scopes=["search", "ingest"])
    headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    assert client.get(f"/api/v1/kbs/{kb.slug}/", **headers).status_code == 200
    ApiKey.objects.filter(pk=key.pk).update(revoked=True)
    response = client.get(f"/api/v1/kbs/{kb.slug}/", **headers)
    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"


def test_unknown_prefix_still_compares_a_secret(kb, monkeypatch):
    """The unknown-prefix path runs the same constant-time comparison as a wrong secret."""
    key, _ = api_key_create(name="real", kb_slugs=[kb.slug], scopes=["search"])
    compared = []
    real_compare = secrets.compare_digest

    def spy(a, b):
        compared.append((len(a), len(b)))
        return real_compare(a, b)

    monkeypatch.setattr(secrets, "compare_digest", spy)
    for raw in (f"kb_{key.prefix}_wrong-secret", "kb_ffffffff_wrong-secret"):
        with pytest.raises(AuthenticationFailed):
            authenticate_key(raw)
    assert compared == [(64, 64), (64, 64)]


def test_unknown_prefix_and_wrong_secret_take_the_same_time(kb):
    key, _ = api_key_create(name="real", kb_slugs=[kb.slug], scopes=["search"])
    attempts = {"unknown": "kb_0badc0de_{}", "wrong": f"kb_{key.prefix}_{{}}"}
    timings: dict[str, list[float]] = {"unknown": [], "wrong": []}
    for _ in range(300):  # interleaved, so drift in the machine's load hits both alike
        for kind, template in attempts.items():
            started = time.perf_counter()
            with pytest.raises(AuthenticationFailed):
                authenticate_key(template.format(secrets.token_urlsafe(32)))
            timings[kind].append(time.perf_counter() - started)
    ratio = statistics.median(timings["unknown"]) / statistics.median(timings["wrong"])
    assert 0.5 < ratio < 2.0, ratio


# --- CSRF and headers -------------------------------------------------------------------------------


def test_dashboard_form_post_without_csrf_token_is_refused(staff_user, db):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(staff_user)
    form = {"slug": "csrf-kb", "name": "CSRF", "embedder": "hashing"}
    response = browser.post("/dashboard/kbs/new/", form)
    assert response.status_code == 403
    assert not KnowledgeBase.objects.filter(slug="csrf-kb").exists()
    page = browser.get("/dashboard/")
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content).group(1).decode()
    accepted = browser.post("/dashboard/kbs/new/", {**form, "csrfmiddlewaretoken": token})
    assert accepted.status_code == 302
    assert KnowledgeBase.objects.filter(slug="csrf-kb").exists()


def test_login_post_without_csrf_token_is_refused(staff_user, db):
    response = Client(enforce_csrf_checks=True).post(
        "/accounts/login/", {"username": "operator", "password": "pw-operator-1"})
    assert response.status_code == 403


@pytest.mark.parametrize("url", ["/accounts/login/", "/api/v1/search", "/health/live"])
def test_security_headers_on_our_pages(client, db, url):
    response = client.get(url)
    assert response["Content-Security-Policy"] == STRICT_CSP
    assert "script-src 'self';" in STRICT_CSP and "unsafe-inline" not in STRICT_CSP
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "camera=()" in response["Permissions-Policy"]
    assert "Strict-Transport-Security" not in response  # plain HTTP: no HSTS


def test_admin_pages_keep_frame_denial_under_their_policy(client, db):
    response = client.get("/admin/login/")
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
    assert response["X-Frame-Options"] == "DENY"


@override_settings(SECURE_HSTS_SECONDS=31536000, SECURE_HSTS_INCLUDE_SUBDOMAINS=True,
                   SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"))
def test_hsts_is_sent_behind_tls(client, db):
    secure = client.get("/health/live", HTTP_X_FORWARDED_PROTO="https")
    assert secure["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert "Strict-Transport-Security" not in client.get("/health/live")


def test_templates_have_no_inline_script_or_style():
    """The strict CSP allows no inline code: our templates must not rely on any."""
    inline = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=", re.IGNORECASE)
    offenders = [
        f"{path.relative_to(settings.BASE_DIR)}: {match.group(0)}"
        for path in (settings.BASE_DIR / "templates").rglob("*.html")
        for match in inline.finditer(path.read_text())
    ]
    assert offenders == []


# --- uploads and bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "stored"), [
    ("../../../etc/passwd.txt", "passwd.txt"),
    ("..\\..\\windows\\win.ini.txt", "win.ini.txt"),
    ("/absolute/path/notes.md", "notes.md"),
    ("....txt", "txt"),
])
def test_upload_names_cannot_traverse_paths(client, kb, name, stored):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile(name, b"plain text body", content_type="text/plain")
    response = client.post(f"/api/v1/kbs/{kb.slug}/uploads/", {"file": upload}, **bearer([kb]))
    assert response.status_code == 202, response.content
    source = Source.objects.get(pk=response.json()["source"]["id"])
    (entry,) = source.config["files"]
    assert entry["filename"] == stored
    assert ".." not in entry["object_key"] and "/" not in entry["filename"]


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_oversized_json_body_is_413(client, kb):
    body = json.dumps({"q": "x" * 2000})
    response = client.post("/api/v1/search", body, content_type="application/json",
                           HTTP_X_REQUEST_ID="big-1", **bearer([kb]))
    assert response.status_code == 413
    assert response.json() == {
        "error": "payload_too_large",
        "detail": f"The request body is {len(body)} bytes; the limit is 1000 bytes.",
        "request_id": "big-1",
    }


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_oversized_form_body_is_413(client, kb):
    response = client.post("/api/v1/search", "q=" + "x" * 2000, content_type="application/x-www-form-urlencoded",
                           **bearer([kb]))
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


@pytest.mark.parametrize("body", ['{"q": "unterminated', "[1, 2", "\x00\x01binary", '{"q": NaN}x'])
def test_malformed_json_is_400_with_a_clear_error(client, kb, body):
    response = client.post("/api/v1/search", body, content_type="application/json", **bearer([kb]))
    assert response.status_code == 400
    payload = response.json()
    assert payload["error"] == "parse_error"
    assert payload["detail"].startswith("JSON parse error")
    assert payload["request_id"] == response["X-Request-ID"]


@pytest.mark.parametrize("body", ["[]", '"reset password"', "42", "null"])
def test_json_body_that_is_not_an_object_is_400(client, kb, body):
    response = client.post("/api/v1/search", body, content_type="application/json", **bearer([kb]))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"


# --- the whole request body, at the ASGI edge of a real server ------------------------------------------

#: Each file may be 8,000 bytes; one request carries at most 20,000.
CAPPED_ENV = {"KB_MAX_UPLOAD_BYTES": "8000", "KB_MAX_REQUEST_BYTES": "20000", "KB_PRELOAD": ""}


@pytest.fixture
def capped_server():
    server = WebServer(worker_env(**CAPPED_ENV))
    server.start()
    yield server
    server.stop()


def raw_exchange(port: int, head: bytes, *body_parts: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send a request as raw bytes, read the answer until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        for part in body_parts:
            sock.sendall(part)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_and_headers, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = status_and_headers.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body


def request_head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.django_db(transaction=True)
def test_upload_of_many_files_over_the_request_cap_is_413_before_its_body_is_sent(capped_server, kb):
    _, key = api_key_create(name="cap", kb_slugs=[kb.slug], scopes=["ingest"], rate="100/s")
    path = f"/api/v1/kbs/{kb.slug}/uploads/"
    files = [("file", (f"part-{n}.txt", b"x" * 7000, "text/plain")) for n in range(3)]  # each under 8,000
    request = httpx.Request("POST", capped_server.url + path, files=files)
    body = request.read()
    # Only the head is sent, as a client waiting for `100 Continue` does: the answer comes without the body.
    status, headers, answer = raw_exchange(capped_server.port, request_head(path, {
        "Authorization": f"Bearer {key}", "Content-Type": request.headers["Content-Type"],
        "Content-Length": str(len(body)), "Expect": "100-continue", "X-Request-ID": "cap-1",
    }))
    assert (status, headers["connection"]) == (413, "close")
    assert json.loads(answer) == {
        "error": "payload_too_large",
        "detail": f"The request body is {len(body)} bytes; the limit is 20000 bytes.",
        "request_id": "cap-1",
    }
    # The dashboard's upload form is behind the same edge.
    dashboard = request_head(f"/dashboard/kbs/{kb.slug}/sources/new/file/", {"Content-Length": str(10**12)})
    assert raw_exchange(capped_server.port, dashboard)[0] == 413
    assert not Source.objects.filter(kb=kb).exists()

    two_files = httpx.post(capped_server.url + path, files=files[:2], headers={"Authorization": f"Bearer {key}"})
    assert two_files.status_code == 202, two_files.text


@pytest.mark.django_db(transaction=True)
def test_chunked_body_is_counted_and_refused_once_over_the_request_cap(capped_server, kb):
    _, key = api_key_create(name="cap", kb_slugs=[kb.slug], scopes=["ingest"], rate="100/s")
    path = f"/api/v1/kbs/{kb.slug}/uploads/"
    head = request_head(path, {
        "Authorization": f"Bearer {key}", "Content-Type": "multipart/form-data; boundary=b0undary",
        "Transfer-Encoding": "chunked",
    })
    # 24,000 bytes in three chunks and no final chunk: without the cap the server would wait for more.
    chunk = b"1f40\r\n" + b"y" * 8000 + b"\r\n"
    status, _, answer = raw_exchange(capped_server.port, head, chunk, chunk, chunk)
    assert status == 413
    assert json.loads(answer)["detail"] == "The request body is over 20000 bytes; the limit is 20000 bytes."
    assert not Source.objects.filter(kb=kb).exists()


# --- login throttling ----------------------------------------------------------------------------------


def fail_login(client, url: str, username: str):
    return client.post(url, {"username": username, "password": "wrong-password"})


@pytest.mark.parametrize("url", ["/accounts/login/", "/admin/login/"])
@override_settings(KB_LOGIN_RATE_USER="3/15m", KB_LOGIN_RATE_IP="100/15m")
def test_login_refused_after_failures_for_a_username(client, staff_user, url):
    for _ in range(3):
        assert fail_login(client, url, "Operator").status_code == 200  # the form, with an error
    refused = client.post(url, {"username": "operator", "password": "pw-operator-1"})
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert b"Too many sign-in attempts" in refused.content
    assert "_auth_user_id" not in client.session
    # Another user from the same address is not locked out by this user's failures.
    assert fail_login(client, url, "someone-else").status_code == 200


@override_settings(KB_LOGIN_RATE_USER="100/15m", KB_LOGIN_RATE_IP="4/15m")
def test_login_refused_after_failures_from_one_address(client, staff_user):
    for n in range(4):
        assert fail_login(client, "/accounts/login/", f"guess-{n}").status_code == 200
    assert fail_login(client, "/accounts/login/", "guess-x").status_code == 429
    other_address = client.post("/accounts/login/", {"username": "operator", "password": "pw-operator-1"},
                                REMOTE_ADDR="10.9.8.7")
    assert other_address.status_code == 302


@override_settings(KB_LOGIN_RATE_USER="2/15m", KB_LOGIN_RATE_IP="2/15m")
def test_successful_logins_are_not_counted(client, staff_user):
    for _ in range(4):
        response = client.post("/accounts/login/", {"username": "operator", "password": "pw-operator-1"})
        assert response.status_code == 302
        client.logout()


@override_settings(KB_LOGIN_RATE_USER="1/15m")
def test_login_throttling_is_counted_in_metrics(client, staff_user):
    before = value(scrape(client), "kb_rate_limited_total", limit="login")
    fail_login(client, "/accounts/login/", "operator")
    assert fail_login(client, "/accounts/login/", "operator").status_code == 429
    assert value(scrape(client), "kb_rate_limited_total", limit="login") == before + 1


@pytest.mark.parametrize("path", [
    "/api/v1/ask", "/api/v1/kbs/", "/api/v1/kbs/{kb}/sources/", "/api/v1/kbs/{kb}/uploads/", "/api/v1/jobs/1/cancel/",
])
@pytest.mark.parametrize("body", ["[]", "null", '"text"'])
def test_no_write_endpoint_fails_on_a_non_object_body(client, kb, staff_user, path, body):
    client.force_login(staff_user)
    response = client.post(path.format(kb=kb.slug), body, content_type="application/json")
    assert 400 <= response.status_code < 500, response.content
