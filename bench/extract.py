"""`manage.py bench_extract`: how fast each kind of document is read, and OCR's share of a sync.

Every figure is measured in the same run as its reference: pages per second by kind (text PDF,
Word, PowerPoint, Excel, OCR'd scans) through `extract()`, and the wall time of a whole sync of
the same text files with and without scanned pages added, run inline as a worker runs it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from bench import samples
from bench.ingest import fresh_kb
from ingestion.extraction import extract
from ingestion.services import store_upload, upload_add
from ingestion.tasks import run_ingestion_job

#: Words per "page" of a Word document, which has no pages until a word processor lays it out.
WORDS_PER_PAGE = 500
_SENTENCE = "The quarterly review covers revenue, hiring and the migration of the data centre to the new site."


@dataclass
class KindRow:
    kind: str
    pages: int
    seconds: float  # median of the rounds

    @property
    def pages_per_second(self) -> float:
        return self.pages / self.seconds if self.seconds else 0.0


def _page_lines(page: int) -> list[str]:
    return [f"Page {page} line {line}: {_SENTENCE}" for line in range(40)]


def _table_rows(count: int) -> list[list]:
    return [[n, 10 * n, _SENTENCE] for n in range(count)]


def sample_documents(pages: int, scans: int) -> dict[str, tuple[bytes, str, str, int]]:
    """kind -> (bytes, content type, file name, pages) of each benchmarked kind."""
    words_per_sentence = len(_SENTENCE.split())
    paragraphs = [_SENTENCE] * (WORDS_PER_PAGE // words_per_sentence)
    return {
        "text PDF": (samples.text_pdf([_page_lines(page) for page in range(pages)]), "application/pdf", "t.pdf", pages),
        "Word (500 words a page)": (
            samples.word_report(title="Review", sections={f"Part {page}": paragraphs for page in range(pages)}),
            "", "r.docx", pages,
        ),
        "PowerPoint (slides)": (
            samples.slide_deck([(f"Slide {page}", _SENTENCE, _SENTENCE) for page in range(pages)]), "", "d.pptx", pages,
        ),
        "Excel (100 rows a page)": (
            samples.workbook({"Data": [["Item", "Cost", "Note"], *_table_rows(100 * pages)]}),
            "", "w.xlsx", pages,
        ),
        "scanned PDF, OCR (A4, 200 dpi)": (
            samples.scanned_pdf([_page_lines(page)[:25] for page in range(scans)]), "application/pdf", "s.pdf", scans,
        ),
    }


def bench_kinds(*, pages: int, scans: int, rounds: int) -> list[KindRow]:
    rows = []
    for kind, (data, content_type, name, count) in sample_documents(pages, scans).items():
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            extract(data, content_type, name)
            times.append(time.perf_counter() - started)
        rows.append(KindRow(kind, count, statistics.median(times)))
    return rows


def bench_ocr_share(*, texts: int, scans: int, rounds: int) -> tuple[float, float]:
    """Median seconds of an inline sync of `texts` text files, and of the same plus `scans` scanned pages."""
    text_files = [(f"Note {n}\n\n" + " ".join([_SENTENCE] * 30)).encode() for n in range(texts)]
    scan = samples.scanned_pdf([_page_lines(page)[:25] for page in range(scans)])
    medians = []
    for with_scans in (False, True):
        times = []
        for round_number in range(rounds):
            kb = fresh_kb("hashing", f"extract{round_number}")
            files = [store_upload(data=data, filename=f"note-{n}.txt", content_type="text/plain")
                     for n, data in enumerate(text_files)]
            if with_scans:
                files.append(store_upload(data=scan, filename="scan.pdf", content_type="application/pdf"))
            started = time.perf_counter()
            _, job = upload_add(kb=kb, files=files)
            run_ingestion_job(job.pk)
            times.append(time.perf_counter() - started)
        medians.append(statistics.median(times))
    return medians[0], medians[1]
