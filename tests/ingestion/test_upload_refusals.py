"""Refused uploads, told the same way by the API, the dashboard form and `addsource --file`:
the file's kind in words, the supported kinds, and, for a batch, that nothing was stored."""

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from ingestion.extraction import SUPPORTED_KINDS
from ingestion.models import IngestionJob
from knowledge.models import Source
from knowledge.storage import get_object_store, object_key_for, sha256_hex

pytestmark = pytest.mark.django_db(transaction=True)

SUPPORTED = f"the supported kinds are {SUPPORTED_KINDS}."


def fresh_markdown() -> bytes:
    """Bytes no other test stored, so their absence from the object store means something."""
    return f"# Notes\n\nA note numbered {uuid.uuid4().hex}.".encode()


def assert_nothing_stored(kb, data: bytes) -> None:
    assert not Source.objects.filter(kb=kb).exists()
    assert not IngestionJob.objects.filter(kb=kb).exists()
    assert not get_object_store().exists(object_key_for(sha256_hex(data)))


def test_api_refuses_an_old_word_document_naming_its_kind_and_the_supported_ones(staff_api, kb):
    upload = SimpleUploadedFile("report.doc", b"\xd0\xcf\x11\xe0 not really", content_type="application/msword")
    response = staff_api.post(f"/api/v1/kbs/{kb.slug}/uploads/", {"file": [upload]})
    assert response.status_code == 415
    body = response.json()
    assert body["error"] == "unsupported_media_type"
    assert body["detail"] == "Nothing was stored: the file was refused (report.doc)."
    assert body["fields"] == {"file": [f"report.doc: Word 97-2003 document (.doc) cannot be read; {SUPPORTED}"]}
    assert "application/vnd" not in response.content.decode()


def test_api_refuses_a_mixed_batch_whole_and_lists_each_refused_file(staff_api, kb):
    notes = fresh_markdown()
    files = [
        SimpleUploadedFile("notes.md", notes, content_type="text/markdown"),
        SimpleUploadedFile("notes.rar", b"Rar!\x1a\x07", content_type="application/octet-stream"),
        SimpleUploadedFile("logo.svg", b"<svg/>", content_type="image/svg+xml"),
    ]
    response = staff_api.post(f"/api/v1/kbs/{kb.slug}/uploads/", {"file": files})
    assert response.status_code == 415
    body = response.json()
    assert body["detail"] == "Nothing was stored: 2 of 3 files were refused (notes.rar, logo.svg)."
    assert body["fields"]["file"] == [
        f"notes.rar: RAR archive cannot be read; {SUPPORTED}",
        f"logo.svg: SVG image cannot be read; {SUPPORTED}",
    ]
    assert_nothing_stored(kb, notes)


def test_api_refuses_a_batch_with_a_file_over_the_limit_as_too_large(staff_api, kb, settings):
    settings.KB_MAX_UPLOAD_BYTES = 1000
    notes = fresh_markdown()
    files = [
        SimpleUploadedFile("notes.md", notes, content_type="text/markdown"),
        SimpleUploadedFile("big.txt", b"x" * 1001, content_type="text/plain"),
    ]
    response = staff_api.post(f"/api/v1/kbs/{kb.slug}/uploads/", {"file": files})
    assert response.status_code == 413
    assert response.json()["fields"]["file"] == ["big.txt: it is 1,001 bytes, over the limit of 1,000 bytes."]
    assert_nothing_stored(kb, notes)


def test_dashboard_form_refuses_a_mixed_batch_saying_nothing_was_stored(client, kb):
    client.force_login(get_user_model().objects.create_user("operator", password="pw", is_staff=True))
    notes = fresh_markdown()
    files = [
        SimpleUploadedFile("notes.md", notes, content_type="text/markdown"),
        SimpleUploadedFile("notes.rar", b"Rar!\x1a\x07", content_type="application/octet-stream"),
    ]
    response = client.post(reverse("dashboard:source-new", args=[kb.slug, "file"]), {"file-files": files})
    assert response.status_code == 400
    page = response.content.decode()
    assert "Nothing was stored: 1 of 2 files were refused (notes.rar)." in page
    assert "notes.rar: RAR archive cannot be read" in page
    assert_nothing_stored(kb, notes)


def test_addsource_refuses_what_the_api_refuses_with_the_same_words(kb, tmp_path):
    image = tmp_path / "x.rar"
    image.write_bytes(b"Rar!\x1a\x07" + uuid.uuid4().bytes)
    with pytest.raises(CommandError) as refused:
        call_command("addsource", kb.slug, "--file", str(image))
    assert str(refused.value) == (
        f"Nothing was stored: the file was refused (x.rar). x.rar: RAR archive cannot be read; {SUPPORTED}"
    )
    assert_nothing_stored(kb, image.read_bytes())


def test_addsource_refuses_a_file_over_the_upload_limit(kb, tmp_path, settings):
    settings.KB_MAX_UPLOAD_BYTES = 10
    text = tmp_path / "long.txt"
    text.write_text("eleven char")
    with pytest.raises(CommandError, match=r"long.txt: it is 11 bytes, over the limit of 10 bytes"):
        call_command("addsource", kb.slug, "--file", str(text))
    assert not Source.objects.filter(kb=kb).exists()
