"""Extraction: raw bytes of a document -> its title and plain text.

The kind of a document is decided by its declared content type, then by its file name's
extension, then by sniffing the bytes (``%PDF-``, ``<html``). Text keeps paragraph breaks as
blank lines, which is what `ingestion.chunking` splits on first.

Bad input raises `ExtractionError` with a reason meant for an operator (the pipeline stores it on
the document). `UnsupportedType` is the subclass for kinds we never extract, so an upload can be
refused before anything is stored (see `unsupported_reason`); its reason names the file's kind in
words ("Word document (.docx)") and the kinds that are supported.
"""

import codecs
import io
import logging
import mimetypes
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

import lxml.html
import markdown
import pypdf
import trafilatura
from lxml import etree
from trafilatura.settings import Extractor

logger = logging.getLogger(__name__)

PLAIN, MARKDOWN, HTML, PDF = "text/plain", "text/markdown", "text/html", "application/pdf"

_CONTENT_TYPES = {
    "text/plain": PLAIN,
    "text/markdown": MARKDOWN,
    "text/x-markdown": MARKDOWN,
    "text/html": HTML,
    "application/xhtml+xml": HTML,
    "application/pdf": PDF,
    "application/x-pdf": PDF,
}
# Declarations that say nothing about the content: fall through to extension, then sniffing.
_GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream", "application/unknown"}
_EXTENSIONS = {
    ".txt": PLAIN,
    ".text": PLAIN,
    ".log": PLAIN,
    ".csv": PLAIN,
    ".rst": PLAIN,
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".html": HTML,
    ".htm": HTML,
    ".xhtml": HTML,
    ".pdf": PDF,
}
_BINARY_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"PK\x03\x04": "a ZIP archive (or an Office document)",
    b"\x1f\x8b": "a gzip archive",
}
#: What can be extracted, in words, for the messages of refused files.
SUPPORTED_KINDS = "plain text (.txt), Markdown (.md), HTML (.html) and PDF (.pdf)"
#: Kinds people upload that we do not extract, by file name extension, in words.
_KIND_NAMES = {
    ".doc": "Word document (.doc)",
    ".docx": "Word document (.docx)",
    ".odt": "OpenDocument text (.odt)",
    ".rtf": "RTF document (.rtf)",
    ".xls": "Excel workbook (.xls)",
    ".xlsx": "Excel workbook (.xlsx)",
    ".ods": "OpenDocument spreadsheet (.ods)",
    ".ppt": "PowerPoint presentation (.ppt)",
    ".pptx": "PowerPoint presentation (.pptx)",
    ".odp": "OpenDocument presentation (.odp)",
    ".epub": "EPUB e-book (.epub)",
    ".png": "PNG image",
    ".jpg": "JPEG image",
    ".jpeg": "JPEG image",
    ".gif": "GIF image",
    ".webp": "WebP image",
    ".svg": "SVG image",
    ".bmp": "BMP image",
    ".tif": "TIFF image",
    ".tiff": "TIFF image",
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
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.oasis.opendocument.text": ".odt",
    "application/vnd.ms-excel": ".xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "application/vnd.ms-powerpoint": ".ppt",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
    "image/jpeg": ".jpg",
    "application/x-msdownload": ".exe",
    "application/x-msdos-program": ".exe",
}
# Share of control characters above which decoded "text" is treated as binary junk.
_MAX_CONTROL_RATIO = 0.05
_TITLE_MAX = 200


class ExtractionError(Exception):
    """The document cannot be turned into text; `reason` says why, for a human."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class UnsupportedType(ExtractionError):
    """A kind of document this service never extracts (images, archives, ...)."""


@dataclass(frozen=True)
class Extracted:
    title: str
    text: str
    content_type: str  # the kind actually extracted: text/plain, text/markdown, text/html, application/pdf


def unsupported_reason(content_type: str, filename: str = "") -> str:
    """Why an upload declared like this cannot be extracted, in words; "" when it can.

    Undeclared uploads (octet-stream without a telling extension) are accepted: sniffing decides
    at extraction time, which fails the document with a reason if the bytes are not text.
    """
    try:
        _declared_kind(content_type, filename)
    except UnsupportedType as exc:
        return exc.reason
    return ""


def kind_in_words(content_type: str, filename: str = "") -> str:
    """What a file is, as a person would say it: "Word document (.docx)", "PNG image"."""
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


def extract(data: bytes, content_type: str, filename: str = "") -> Extracted:
    """Title and plain text of a document; raises `ExtractionError` (or `UnsupportedType`)."""
    if not data or not data.strip():
        raise ExtractionError("The file is empty.")
    kind = _declared_kind(content_type, filename) or _sniff_kind(data)
    if kind == PDF:
        title, text = _extract_pdf(data)
    elif kind == HTML:
        title, text = _extract_html(_decode_text(data))
    elif kind == MARKDOWN:
        title, text = _extract_markdown(_decode_text(data))
    else:
        text = _tidy(_decode_text(data))
        title = _first_line(text)
    if not text:
        raise ExtractionError("No text could be extracted from the document.")
    return Extracted(title=title, text=text, content_type=kind)


def _declared_kind(content_type: str, filename: str) -> str:
    """The kind the caller declared, "" when undeclared (sniff), or UnsupportedType."""
    mime = _mime(content_type)
    if mime in _CONTENT_TYPES:
        return _CONTENT_TYPES[mime]
    if mime.startswith("text/"):
        return PLAIN  # text/csv, text/x-log, ...: still text
    if mime not in _GENERIC_TYPES:
        raise _unsupported(kind_in_words(mime, filename))
    suffix = PurePosixPath(filename or "").suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    if suffix:
        raise _unsupported(kind_in_words(mime, filename))
    return ""


def _sniff_kind(data: bytes) -> str:
    head = data[:1024].lstrip()
    if head.startswith(b"%PDF-"):
        return PDF
    for magic, what in _BINARY_MAGIC.items():
        if data.startswith(magic):
            raise UnsupportedType(f"The file looks like {what}, which cannot be read; the supported kinds are "
                                  f"{SUPPORTED_KINDS}.")
    lowered = head.lower()
    if b"<!doctype html" in lowered or b"<html" in lowered:
        return HTML
    return PLAIN


#: C0 controls other than tab, newline, form feed and carriage return; DEL; C1 controls.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def _decode_text(data: bytes) -> str:
    """Bytes -> str: BOMs first, then UTF-8, then Windows-1252, then Latin-1 (never fails).

    Raises ExtractionError when the result is mostly control characters: binary junk.
    """
    text = None
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                text = data[len(bom) :].decode(encoding)
            except UnicodeDecodeError:
                raise ExtractionError(f"The file starts with a {encoding} marker but is not valid {encoding}.")
            break
    if text is None:
        for encoding in ("utf-8", "cp1252", "latin-1"):
            try:
                text = data.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
    controls = len(_CONTROL_CHARS.findall(text))
    if text and controls / len(text) > _MAX_CONTROL_RATIO:
        raise ExtractionError("The file looks like binary data, not text.")
    return text


_BLANK_LINES = re.compile(r"\n{3,}")
_SPACES = re.compile(r"[ \t\u00a0]+")


def _tidy(text: str) -> str:
    """Unix newlines, no control characters, no trailing spaces, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n")
    text = _CONTROL_CHARS.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _first_line(text: str) -> str:
    for line in text.split("\n"):
        if line.strip():
            return line.strip()[:_TITLE_MAX]
    return ""


# Markdown ------------------------------------------------------------------------------------

_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_SETEXT_HEADING = re.compile(r"^ {0,3}(\S[^\n]*)\n {0,3}(=+|-+)[ \t]*$", re.MULTILINE)


def _extract_markdown(source: str) -> tuple[str, str]:
    html = markdown.markdown(source, extensions=["extra"])
    text = _html_to_text(lxml.html.fragment_fromstring(html, create_parent="div")) if html.strip() else ""
    return _markdown_title(source) or _first_line(text), text


def _markdown_title(source: str) -> str:
    """The first heading, ATX (`# Title`) or setext (`Title` over `=====`), whichever comes first."""
    found = [match for match in (_ATX_HEADING.search(source), _SETEXT_HEADING.search(source)) if match]
    if not found:
        return ""
    first = min(found, key=lambda match: match.start())
    return re.sub(r"[*_`]", "", first.group(1)).strip()[:_TITLE_MAX]


# HTML ----------------------------------------------------------------------------------------

_SKIPPED_TAGS = {"script", "style", "noscript", "template", "head", "title", "svg", "iframe"}
_BLOCK_TAGS = {
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption", "figure",
    "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p",
    "pre", "section", "table", "td", "th", "tr", "ul",
}  # fmt: skip
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")


#: trafilatura's settings, built once (building them parses its config file): main text with tables,
#: without comments.
_MAIN_CONTENT = Extractor(output_format="txt", comments=False, tables=True)


def _extract_html(source: str) -> tuple[str, str]:
    source = _XML_DECLARATION.sub("", source)  # lxml refuses str input that declares an encoding
    try:
        tree = lxml.html.document_fromstring(source)
    except (etree.ParserError, ValueError):
        raise ExtractionError("The HTML document could not be parsed.")
    main = trafilatura.extract(source, options=_MAIN_CONTENT)
    if main and main.strip():
        # trafilatura puts one block per line; blank lines make them paragraphs for the chunker.
        text = _tidy("\n\n".join(_drop_repeated_tail(main.split("\n"))))
    else:
        body = tree.find("body")
        text = _html_to_text(body if body is not None else tree)
    return _html_title(tree) or _first_line(text), text


def _drop_repeated_tail(blocks: list[str]) -> list[str]:
    """Undo trafilatura 2.0's re-appending of small bodies (adbar/trafilatura#768, #879).

    For short pages its recovery pass appends the same paragraphs again, giving
    `head, p1, p2, p1, p2`; a run of blocks that ends the text and repeats the run just before
    it is that bug, not content.
    """
    for size in range(len(blocks) // 2, 0, -1):
        if blocks[-size:] == blocks[-2 * size : -size]:
            return blocks[:-size]
    return blocks


_TITLE_XPATHS = tuple(
    etree.XPath(path)
    for path in (
        '//meta[@property="og:title"]/@content',
        '//meta[@name="twitter:title"]/@content',
        "//title//text()",
        "//h1//text()",
    )
)


def _html_title(tree: lxml.html.HtmlElement) -> str:
    for xpath in _TITLE_XPATHS:
        values = [value.strip() for value in xpath(tree) if value.strip()]
        if values:
            return _SPACES.sub(" ", " ".join(values)).strip()[:_TITLE_MAX]
    return ""


def _html_to_text(root: lxml.html.HtmlElement) -> str:
    """All visible text of an element, a blank line between blocks, inline whitespace collapsed."""
    parts: list[str] = []

    def walk(element) -> None:
        tag = element.tag if isinstance(element.tag, str) else ""
        if tag not in _SKIPPED_TAGS and tag:
            block = tag in _BLOCK_TAGS
            if block:
                parts.append("\n\n")
            parts.append(element.text or "")
            for child in element:
                walk(child)
            if block:
                parts.append("\n\n")
        parts.append(element.tail or "")

    walk(root)
    parts.pop()  # the root's own tail is outside it
    joined = "".join(parts)
    paragraphs = (_SPACES.sub(" ", " ".join(block.split())) for block in re.split(r"\n\s*\n", joined))
    return "\n\n".join(paragraph for paragraph in paragraphs if paragraph)


# PDF -----------------------------------------------------------------------------------------


def _extract_pdf(data: bytes) -> tuple[str, str]:
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ExtractionError("The PDF is encrypted with a password.")
        pages = [page.extract_text() or "" for page in reader.pages]
        metadata = reader.metadata
        meta_title = (metadata.title or "") if metadata else ""
    except ExtractionError:
        raise
    except Exception as exc:  # pypdf raises many kinds (PdfReadError, ValueError, KeyError...) on corrupt files
        logger.info("PDF parse failure: %r", exc)
        raise ExtractionError(f"The PDF could not be parsed ({type(exc).__name__}: {exc}).")
    text = _tidy("\n\n".join(page for page in pages if page.strip()))
    if not text:
        raise ExtractionError(
            f"The PDF has no extractable text ({len(pages)} page(s)); it may be scanned images, which need OCR."
        )
    title = _SPACES.sub(" ", str(meta_title)).strip()[:_TITLE_MAX]
    return title or _first_line(text), text
