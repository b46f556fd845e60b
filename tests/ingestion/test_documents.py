"""Office files, spreadsheets and scans from upload to search hit: each hit says where it is
(page, slide, sheet and rows), OCR runs on its own queue with per-page progress, and a hostile
file fails alone with its reason."""

import io
import zipfile

import django_rq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from bench import samples
from ingestion.models import IngestionJob
from ingestion.services import source_sync
from ingestion.tasks import run_ingestion_job
from kbportal.claiming import JobStatus
from knowledge.models import Document, DocumentStatus, KnowledgeBase
from tests.support import start_worker

pytestmark = pytest.mark.django_db(transaction=True)

WORD = samples.word_report(
    title="Annual report",
    sections={"Results": ["Revenue grew in every region."], "Outlook": ["The zeppelin fleet expands next spring."]},
    table=[["Region", "Lead"], ["North", "Ingrid"], ["South", "Matteo"]],
)
DECK = samples.slide_deck([
    ("Kickoff", "Welcome to the planning day.", ""),
    ("Roadmap", "The quokka release ships in May.", "Speaker notes mention the harbour office."),
])
BUDGET_ROWS = [["Item", "Cost"], *[[f"line item {n}", n] for n in range(1, 30)], ["marzipan", 99]]
BOOK = samples.workbook({"Budget": BUDGET_ROWS})
SCAN = samples.scanned_png(["Invoice from Okapi Logistics", "Payment due in thirty days"])
SCANNED_PDF = samples.scanned_pdf([["Cover page of the contract"], ["The tenant keeps a pelican on the roof"]])


def upload(client, kb, files: dict[str, bytes]):
    uploads = [SimpleUploadedFile(name, data, content_type="application/octet-stream") for name, data in files.items()]
    return client.post(f"/api/v1/kbs/{kb.slug}/uploads/", {"file": uploads})


def search(client, kb, query: str) -> list[dict]:
    response = client.get("/api/v1/search", {"kb": kb.slug, "q": query, "mode": "keyword"})
    assert response.status_code == 200, response.content
    return response.json()["hits"]


def test_office_files_and_a_photo_are_searchable_and_each_hit_says_where_it_is(staff_api, kb):
    response = upload(staff_api, kb, {"report.docx": WORD, "deck.pptx": DECK, "budget.xlsx": BOOK, "photo.png": SCAN})
    assert response.status_code == 202, response.content
    job_id = response.json()["job"]["id"]
    run_ingestion_job(job_id)
    job = IngestionJob.objects.get(pk=job_id)
    assert (job.status, job.done, job.failed) == (JobStatus.SUCCEEDED, 4, 0), job.recent_errors

    (hit,) = search(staff_api, kb, "zeppelin")
    assert (hit["title"], hit["section"], hit["location"]) == ("Annual report", "Outlook", {})
    (hit,) = search(staff_api, kb, "Matteo")
    assert "Region | Lead" in hit["snippet"]  # the table's header travels with its rows
    (hit,) = search(staff_api, kb, "quokka")
    assert (hit["location"], hit["where"]) == ({"slide": 2}, "slide 2")
    (hit,) = search(staff_api, kb, "harbour")  # speaker notes are read too
    assert hit["where"] == "slide 2"
    (hit,) = search(staff_api, kb, "marzipan")
    assert hit["location"] == {"sheet": "Budget", "rows": [hit["location"]["rows"][0], 31]}
    assert hit["where"].startswith("sheet Budget, rows ") and hit["where"].endswith("-31")
    (hit,) = search(staff_api, kb, "okapi")
    assert hit["url"] == "photo.png"


def test_a_scanned_pdf_is_read_page_by_page_and_cited_by_page(staff_api, kb):
    response = upload(staff_api, kb, {"contract.pdf": SCANNED_PDF})
    job_id = response.json()["job"]["id"]
    run_ingestion_job(job_id)
    job = IngestionJob.objects.get(pk=job_id)
    assert job.status == JobStatus.SUCCEEDED, job.recent_errors
    assert job.payload["ocr_progress"] == {"document": "contract.pdf", "page": 2, "pages": 2}
    (hit,) = search(staff_api, kb, "pelican roof")
    assert (hit["location"], hit["where"]) == ({"page": 2}, "page 2")


def test_a_sync_of_unchanged_scans_ocrs_nothing(staff_api, kb):
    response = upload(staff_api, kb, {"photo.png": SCAN})
    run_ingestion_job(response.json()["job"]["id"])
    again = source_sync(source=Document.objects.get(key="photo.png").source)
    run_ingestion_job(again.pk)
    again.refresh_from_db()
    assert (again.status, again.skipped, again.done) == (JobStatus.SUCCEEDED, 1, 0)
    assert "ocr_progress" not in again.payload


def test_a_page_whose_ocr_times_out_is_reported_and_the_rest_is_indexed(staff_api, kb, settings):
    settings.KB_OCR_PAGE_TIMEOUT = 0.001
    mixed = samples.text_pdf([["A typed page about walruses and their tusks."], []])
    scanned_tail = samples.scanned_pdf([["never read"]])
    response = upload(staff_api, kb, {"mixed.pdf": mixed, "scan.pdf": scanned_tail})
    run_ingestion_job(response.json()["job"]["id"])
    typed = Document.objects.get(key="mixed.pdf")
    assert typed.status == DocumentStatus.INDEXED
    (problem,) = typed.metadata["problems"]  # its blank second page was sent to OCR
    assert problem.startswith("page 2: ") and "timed out" in problem
    scan = Document.objects.get(key="scan.pdf")
    assert scan.status == DocumentStatus.FAILED
    assert "timed out" in scan.error
    (hit,) = search(staff_api, kb, "walruses")
    assert hit["where"] == "page 1"


def test_ocr_syncs_go_to_the_ocr_queue_and_a_worker_takes_them(staff_api, kb):
    text_job = upload(staff_api, kb, {"notes.md": b"# Notes\n\nplain words"}).json()["job"]["id"]
    scan_job = upload(staff_api, kb, {"photo.png": SCAN}).json()["job"]["id"]
    assert IngestionJob.objects.get(pk=text_job).queue_name == "high"
    assert IngestionJob.objects.get(pk=scan_job).queue_name == "ocr"
    assert django_rq.get_queue("ocr").count == 1
    start_worker(burst=True).wait(timeout=300)
    assert IngestionJob.objects.get(pk=scan_job).status == JobStatus.SUCCEEDED
    assert search(staff_api, kb, "okapi")


def zip_bomb() -> bytes:
    """A .docx-shaped ZIP whose one member unpacks to 300 MB of zeros (about 300 KB packed)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w") as member:
            for _ in range(300):
                member.write(bytes(1024 * 1024))
    return out.getvalue()


def test_hostile_files_fail_alone_with_their_reasons_and_leave_nothing_indexed(staff_api, kb, settings):
    settings.KB_MAX_PAGES = 3
    files = {
        "bomb.docx": zip_bomb(),
        "broken.xlsx": b"PK\x03\x04" + bytes(200),
        "long.pdf": samples.text_pdf([[f"page {n}"] for n in range(5)]),
        "fake.pdf": b"Just words in a file named like a PDF.",
        "fine.md": b"# Fine\n\nThe only albatross here.",
    }
    response = upload(staff_api, kb, files)
    assert response.status_code == 202, response.content
    run_ingestion_job(response.json()["job"]["id"])
    errors = dict(Document.objects.filter(source__kb=kb, status=DocumentStatus.FAILED).values_list("key", "error"))
    assert set(errors) == {"bomb.docx", "broken.xlsx", "long.pdf", "fake.pdf"}
    assert "KB_MAX_UNZIPPED_BYTES" in errors["bomb.docx"]
    assert "damaged" in errors["broken.xlsx"].lower() or "zip" in errors["broken.xlsx"].lower()
    assert "KB_MAX_PAGES" in errors["long.pdf"]
    assert "not a PDF" in errors["fake.pdf"]
    assert Document.objects.get(key="fine.md").status == DocumentStatus.INDEXED
    assert [hit["url"] for hit in search(staff_api, kb, "albatross")] == ["fine.md"]
    assert search(staff_api, kb, "page") == []


def test_each_knowledge_base_reads_scans_in_its_own_languages(staff_api):
    response = staff_api.post("/api/v1/kbs/", {"slug": "klingon", "name": "K", "embedder": "hashing",
                                                "ocr_languages": "tlh"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["ocr_languages"] == "tlh"
    kb = KnowledgeBase.objects.get(slug="klingon")
    run_ingestion_job(upload(staff_api, kb, {"photo.png": SCAN}).json()["job"]["id"])
    error = Document.objects.get(source__kb=kb).error
    assert "tlh" in error and "KB_OCR_LANGS" in error


def test_malformed_ocr_languages_are_refused_with_the_field_named(staff_api):
    response = staff_api.post("/api/v1/kbs/", {"slug": "bad-ocr", "name": "B", "ocr_languages": "eng; rm -rf"},
                              format="json")
    assert response.status_code == 400
    assert "ocr_languages" in response.json()["fields"]


def test_a_re_upload_of_the_same_scan_is_not_ocrd_again(staff_api, kb, settings):
    first = upload(staff_api, kb, {"photo.png": SCAN}).json()["job"]["id"]
    run_ingestion_job(first)
    settings.KB_OCR_PAGE_TIMEOUT = 0.001  # any OCR now would fail the document
    again = upload(staff_api, kb, {"photo-again.png": SCAN}).json()["job"]["id"]
    run_ingestion_job(again)
    job = IngestionJob.objects.get(pk=again)
    assert (job.status, job.done, job.failed) == (JobStatus.SUCCEEDED, 1, 0), job.recent_errors
    assert "ocr_progress" not in job.payload
    assert sorted(hit["url"] for hit in search(staff_api, kb, "okapi")) == ["photo-again.png", "photo.png"]
