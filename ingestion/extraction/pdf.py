"""PDF reader: each page's text layer (pypdf), and OCR (pypdfium2 renders, Tesseract reads) of the
pages whose text layer is missing or nearly empty: scanned pages.

A page is one section, `location={"page": n}` (1-based). A page with fewer than
`KB_OCR_MIN_TEXT_CHARS` non-space characters in its text layer is rendered at `KB_OCR_DPI` in
grayscale and OCR'd; a page that fails OCR is noted in the problems and the others are kept.
Encrypted PDFs (that an empty password does not open) and PDFs over `KB_MAX_PAGES` pages fail
before anything is read.

pypdf's text extraction is pure Python: a pathological page (huge content streams, deep form
XObjects) can take long, and nothing here interrupts it; the job's lease and the document's
place in its batch bound the harm.
"""

import io
import logging

import pypdf
import pypdfium2 as pdfium
from django.conf import settings

from ingestion.extraction.ocr import PageFailed, ocr_image
from ingestion.extraction.text import SPACES, TITLE_MAX, first_line, tidy
from ingestion.extraction.types import ExtractionError, OcrOptions, Section

logger = logging.getLogger(__name__)

_POINTS_PER_INCH = 72


def read_pdf(data: bytes, *, ocr_with: OcrOptions) -> tuple[str, list[Section], list[str]]:
    """Title, one section per page with text, and the problems of pages that could not be read."""
    reader, title = _open(data)
    texts = [_text_layer(reader, index) for index in range(len(reader.pages))]
    scanned = [index for index, text in enumerate(texts) if _visible(text) < settings.KB_OCR_MIN_TEXT_CHARS]
    problems = _ocr_pages(data, scanned, texts, ocr_with=ocr_with) if scanned else []
    sections = [Section(text, location={"page": number}) for number, text in enumerate(texts, start=1) if text]
    return title or next((first_line(text) for text in texts if text), ""), sections, problems


def _open(data: bytes) -> tuple[pypdf.PdfReader, str]:
    """The reader, decrypted and within the page limit, and the metadata title ("" when none)."""
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ExtractionError("The PDF is encrypted with a password.")
        pages = len(reader.pages)
        metadata = reader.metadata
        title = SPACES.sub(" ", str((metadata.title if metadata else None) or "")).strip()[:TITLE_MAX]
    except ExtractionError:
        raise
    except Exception as exc:  # pypdf raises many kinds (PdfReadError, ValueError, KeyError...) on corrupt files
        logger.info("PDF parse failure: %r", exc)
        raise ExtractionError(f"The PDF could not be parsed ({type(exc).__name__}: {exc}).")
    if pages > settings.KB_MAX_PAGES:
        raise ExtractionError(
            f"The PDF has {pages:,} pages, over the limit of {settings.KB_MAX_PAGES:,} (KB_MAX_PAGES)."
        )
    return reader, title


def _text_layer(reader: pypdf.PdfReader, index: int) -> str:
    """Page `index`'s text layer, tidied; "" when it has none or it cannot be read (OCR then tries)."""
    try:
        return tidy(reader.pages[index].extract_text() or "")
    except Exception as exc:  # a corrupt page (bad font, broken stream) spoils only itself
        logger.info("PDF page %d: text layer not read: %r", index + 1, exc)
        return ""


def _visible(text: str) -> int:
    return sum(not char.isspace() for char in text)


def _ocr_pages(data: bytes, indexes: list[int], texts: list[str], *, ocr_with: OcrOptions) -> list[str]:
    """OCR the pages at `indexes`, putting what it reads into `texts`; the problems of pages it could not."""
    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        pages = ", ".join(str(index + 1) for index in indexes)
        return [f"pages {pages}: could not be rendered for OCR ({exc})"]
    problems = []
    try:
        for done, index in enumerate(indexes, start=1):
            try:
                text = _ocr_page(document, index, ocr_with=ocr_with)
            except PageFailed as exc:
                problems.append(f"page {index + 1}: {exc}")
            else:
                if _visible(text) > _visible(texts[index]):  # a scan can carry a few real characters (a page number)
                    texts[index] = text
            if ocr_with.on_page:
                ocr_with.on_page(done, len(indexes))
    finally:
        document.close()
    return problems


def _ocr_page(document: pdfium.PdfDocument, index: int, *, ocr_with: OcrOptions) -> str:
    """Render page `index` at `KB_OCR_DPI` in grayscale and OCR it; raises `PageFailed`."""
    dpi = settings.KB_OCR_DPI
    scale = dpi / _POINTS_PER_INCH
    try:
        page = document[index]
    except pdfium.PdfiumError as exc:
        raise PageFailed(f"could not be rendered for OCR ({exc})")
    try:
        points_wide, points_high = page.get_size()
        width, height = round(points_wide * scale), round(points_high * scale)
        if width * height > settings.KB_MAX_IMAGE_PIXELS:  # a page's size can be absurd (200 by 200 inches)
            raise PageFailed(
                f"too large to OCR ({width:,} × {height:,} pixels at {dpi} dpi, over the limit of "  # noqa: RUF001
                f"{settings.KB_MAX_IMAGE_PIXELS:,}, KB_MAX_IMAGE_PIXELS)"
            )
        try:
            bitmap = page.render(scale=scale, grayscale=True)
        except pdfium.PdfiumError as exc:
            raise PageFailed(f"could not be rendered for OCR ({exc})")
        try:
            return ocr_image(bitmap.to_pil(), ocr_with=ocr_with)  # the image shares the bitmap's buffer
        finally:
            bitmap.close()
    finally:
        page.close()
