"""Extraction: raw bytes of a document -> its title and sections (see `types`).

The kind of a document is decided by its bytes when they say it (a PDF, a ZIP container of an
Office file, an image), else by its declared content type, then by its file name's extension,
then by sniffing for HTML. A file whose name or type says one binary kind and whose bytes say
another is read as its bytes say; one whose bytes say no known kind at all fails with a reason.

Readers live beside this module: `text` (plain text, Markdown, HTML), `pdf` (pages, with OCR for
pages without a text layer), `office` (Word, PowerPoint, Excel, CSV) and `ocr` (images).

Bad input raises `ExtractionError` with a reason meant for an operator (the pipeline stores it on
the document). `UnsupportedType` is the subclass for kinds we never extract, so an upload can be
refused before anything is stored (see `unsupported_reason`); its reason names the file's kind in
words ("RAR archive") and the kinds that are supported.
"""

import mimetypes
from pathlib import PurePosixPath

from django.conf import settings

from ingestion.extraction import ocr, office, pdf
from ingestion.extraction.office import DOCX, PPTX, XLSX
from ingestion.extraction.text import decode_text, first_line, read_html, read_markdown, tidy
from ingestion.extraction.types import Extracted, ExtractionError, OcrOptions, Section, UnsupportedType

PLAIN, MARKDOWN, HTML, PDF = "text/plain", "text/markdown", "text/html", "application/pdf"
CSV = "text/csv"
IMAGE = "image"  # any raster image Pillow reads; the extracted content type is the image's own
OFFICE_KINDS = {DOCX: "a Word document", PPTX: "a PowerPoint presentation", XLSX: "an Excel workbook"}

_CONTENT_TYPES = {
    "text/plain": PLAIN,
    "text/markdown": MARKDOWN,
    "text/x-markdown": MARKDOWN,
    "text/html": HTML,
    "application/xhtml+xml": HTML,
    "text/csv": CSV,
    "application/csv": CSV,
    "application/pdf": PDF,
    "application/x-pdf": PDF,
    DOCX: DOCX,
    PPTX: PPTX,
    XLSX: XLSX,
    "application/vnd.ms-excel.sheet.macroenabled.12": XLSX,
}
# Declarations that say nothing about the content: fall through to extension, then sniffing.
_GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream", "application/unknown", "application/zip"}
_EXTENSIONS = {
    ".txt": PLAIN,
    ".text": PLAIN,
    ".log": PLAIN,
    ".rst": PLAIN,
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".html": HTML,
    ".htm": HTML,
    ".xhtml": HTML,
    ".csv": CSV,
    ".pdf": PDF,
    ".docx": DOCX,
    ".pptx": PPTX,
    ".xlsx": XLSX,
    ".xlsm": XLSX,
    ".png": IMAGE,
    ".jpg": IMAGE,
    ".jpeg": IMAGE,
    ".gif": IMAGE,
    ".webp": IMAGE,
    ".bmp": IMAGE,
    ".tif": IMAGE,
    ".tiff": IMAGE,
}
#: Image types Pillow reads (and Tesseract then OCRs).
_IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/tiff", "image/x-ms-bmp"}
#: The first bytes of each kind we read, and of kinds we refuse by their bytes.
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"II*\x00", b"MM\x00*", b"BM")
_REFUSED_MAGIC = {b"\x1f\x8b": "a gzip archive", b"Rar!": "a RAR archive", b"7z\xbc\xaf": "a 7-Zip archive"}
#: What can be extracted, in words, for the messages of refused files.
SUPPORTED_KINDS = (
    "plain text (.txt), Markdown (.md), HTML (.html), CSV (.csv), PDF (.pdf, scanned ones too), "
    "Word (.docx), PowerPoint (.pptx), Excel (.xlsx, .xlsm) and images (.png, .jpg, .tif, .gif, .webp, .bmp)"
)
#: Kinds people upload that we do not extract, by file name extension, in words.
_KIND_NAMES = {
    ".doc": "Word 97-2003 document (.doc)",
    ".odt": "OpenDocument text (.odt)",
    ".rtf": "RTF document (.rtf)",
    ".xls": "Excel 97-2003 workbook (.xls)",
    ".ods": "OpenDocument spreadsheet (.ods)",
    ".ppt": "PowerPoint 97-2003 presentation (.ppt)",
    ".odp": "OpenDocument presentation (.odp)",
    ".epub": "EPUB e-book (.epub)",
    ".svg": "SVG image",
    ".heic": "HEIC image",
    ".zip": "ZIP archive",
    ".gz": "gzip archive",
    ".tgz": "gzip archive",
    ".tar": "tar archive",
    ".7z": "7-Zip archive",
    ".rar": "RAR archive",
    ".json": "JSON file (.json)",
    ".xml": "XML file (.xml)",
    ".mp3": "MP3 audio file",
    ".wav": "WAV audio file",
    ".mp4": "MP4 video",
    ".mov": "QuickTime video",
    ".exe": "Windows program (.exe)",
}
#: The same kinds by their MIME types (without a telling file name), where the system's table may lack them.
_KIND_SUFFIXES = {
    "application/msword": ".doc",
    "application/vnd.oasis.opendocument.text": ".odt",
    "application/vnd.ms-excel": ".xls",
    "application/vnd.ms-powerpoint": ".ppt",
    "application/x-msdownload": ".exe",
    "application/x-msdos-program": ".exe",
}


def unsupported_reason(content_type: str, filename: str = "") -> str:
    """Why an upload declared like this cannot be extracted, in words; "" when it can.

    Undeclared uploads (octet-stream without a telling extension) are accepted: the bytes decide
    at extraction time, which fails the document with a reason if they are nothing we read.
    """
    try:
        _declared_kind(content_type, filename)
    except UnsupportedType as exc:
        return exc.reason
    return ""


def kind_in_words(content_type: str, filename: str = "") -> str:
    """What a file is, as a person would say it: "RAR archive", "Word 97-2003 document (.doc)"."""
    mime = _mime(content_type)
    suffix = PurePosixPath(filename or "").suffix.lower()
    if mime not in _GENERIC_TYPES and mimetypes.guess_type(f"file{suffix}")[0] != mime:
        # The declared type decides (as in extraction); the name's extension may say something else.
        suffix = _KIND_SUFFIXES.get(mime) or mimetypes.guess_extension(mime) or ""
    if suffix in _KIND_NAMES:
        return _KIND_NAMES[suffix]
    family = mime.split("/", 1)[0]
    if family in ("image", "audio", "video"):
        return f"{family.capitalize()} file ({suffix or mime})"
    if suffix:
        return f"File ending in {suffix}"
    return f"File of type {mime}"


def _unsupported(kind: str) -> UnsupportedType:
    return UnsupportedType(f"{kind} cannot be read; the supported kinds are {SUPPORTED_KINDS}.")


def _mime(content_type: str) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def may_need_ocr(content_type: str, filename: str = "") -> bool:
    """Whether a file declared like this may need OCR: an image, or a PDF (scanned pages)."""
    try:
        return _declared_kind(content_type, filename) in (PDF, IMAGE)
    except UnsupportedType:
        return False


def ocr_options(*, languages: str = "", on_page=None) -> OcrOptions:
    """OCR in `languages` (a knowledge base's own, else `KB_OCR_LANGS`) with `KB_OCR_PAGE_TIMEOUT`
    per page, reporting each page to `on_page`."""
    return OcrOptions(languages=languages or settings.KB_OCR_LANGS, page_timeout=settings.KB_OCR_PAGE_TIMEOUT,
                      on_page=on_page)


def extract(data: bytes, content_type: str, filename: str = "", *, ocr_with: OcrOptions | None = None) -> Extracted:
    """Title and sections of a document; raises `ExtractionError` (or `UnsupportedType`)."""
    if not data or not data.strip():
        raise ExtractionError("The file is empty.")
    declared = _declared_kind(content_type, filename)
    kind = _kind_of_bytes(data, declared) or declared or _sniff_text_kind(data)
    ocr_with = ocr_with or ocr_options()
    problems: tuple[str, ...] = ()
    if kind == PDF:
        title, sections, problems = pdf.read_pdf(data, ocr_with=ocr_with)
    elif kind == IMAGE:
        title, sections, problems = ocr.read_image(data, ocr_with=ocr_with)
    elif kind == DOCX:
        title, sections = office.read_docx(data)
    elif kind == PPTX:
        title, sections = office.read_pptx(data)
    elif kind == XLSX:
        title, sections = office.read_xlsx(data)
    elif kind == CSV:
        title, sections = office.read_csv(decode_text(data))
    else:
        if kind == HTML:
            title, text = read_html(decode_text(data))
        elif kind == MARKDOWN:
            title, text = read_markdown(decode_text(data))
        else:
            text = tidy(decode_text(data))
            title = first_line(text)
        sections = [Section(text)] if text else []
    sections = tuple(section for section in sections if section.text.strip() or section.table is not None)
    if not sections:
        raise ExtractionError(" ".join(("No text could be extracted from the document.", *problems)))
    extracted_type = _image_type(data) if kind == IMAGE else kind
    return Extracted(title=title or "", sections=sections, content_type=extracted_type, problems=tuple(problems))


def _declared_kind(content_type: str, filename: str) -> str:
    """The kind the caller declared, "" when undeclared (the bytes decide), or UnsupportedType."""
    mime = _mime(content_type)
    if mime in _CONTENT_TYPES:
        return _CONTENT_TYPES[mime]
    if mime in _IMAGE_TYPES:
        return IMAGE
    if mime.startswith("text/"):
        return PLAIN  # text/x-log, ...: still text
    if mime not in _GENERIC_TYPES:
        raise _unsupported(kind_in_words(mime, filename))
    suffix = PurePosixPath(filename or "").suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    if suffix:
        raise _unsupported(kind_in_words(mime, filename))
    return ""


def _kind_of_bytes(data: bytes, declared: str) -> str:
    """The binary kind the bytes say (they win over a wrong name or type); "" for text.

    Raises ExtractionError when the declared kind is binary and the bytes are not, and
    UnsupportedType for archives we never open.
    """
    if data.lstrip()[:5] == b"%PDF-":
        return PDF
    if data.startswith(b"PK\x03\x04"):
        return office.zip_kind(data)
    if data.startswith(b"\xd0\xcf\x11\xe0"):  # an OLE container: a password-protected Office file, or a 97-2003 one
        raise ExtractionError("The Office file is encrypted with a password (or is an old .doc/.xls/.ppt).")
    if data.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return IMAGE
    for magic, what in _REFUSED_MAGIC.items():
        if data.startswith(magic):
            raise _unsupported(f"The file is {what}, which")
    if declared == PDF:
        raise ExtractionError("The file is named or declared as a PDF, but its bytes are not a PDF.")
    if declared in OFFICE_KINDS:
        raise ExtractionError(f"The file is named or declared as {OFFICE_KINDS[declared]}, but its bytes are not one.")
    if declared == IMAGE:
        raise ExtractionError("The file is named or declared as an image, but its bytes are no image format we read.")
    return ""


def _sniff_text_kind(data: bytes) -> str:
    lowered = data[:1024].lstrip().lower()
    if b"<!doctype html" in lowered or b"<html" in lowered:
        return HTML
    return PLAIN


def _image_type(data: bytes) -> str:
    for magic, mime in ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"),
                        (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff"), (b"BM", "image/bmp")):
        if data.startswith(magic):
            return mime
    return "image/webp"
