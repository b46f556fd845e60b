"""Readers for plain text, Markdown and HTML, and the text clean-up every reader shares."""

import codecs
import re

import lxml.html
import markdown
import trafilatura
from lxml import etree
from trafilatura.settings import Extractor

from ingestion.extraction.types import ExtractionError

TITLE_MAX = 200
# Share of control characters above which decoded "text" is treated as binary junk.
_MAX_CONTROL_RATIO = 0.05


#: C0 controls other than tab, newline, form feed and carriage return; DEL; C1 controls.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def decode_text(data: bytes) -> str:
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
SPACES = re.compile(r"[ \t\u00a0]+")


def tidy(text: str) -> str:
    """Unix newlines, no control characters, no trailing spaces, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n")
    text = _CONTROL_CHARS.sub("", text)
    lines = [SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def first_line(text: str) -> str:
    for line in text.split("\n"):
        if line.strip():
            return line.strip()[:TITLE_MAX]
    return ""


# Markdown ------------------------------------------------------------------------------------

_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_SETEXT_HEADING = re.compile(r"^ {0,3}(\S[^\n]*)\n {0,3}(=+|-+)[ \t]*$", re.MULTILINE)


def read_markdown(source: str) -> tuple[str, str]:
    html = markdown.markdown(source, extensions=["extra"])
    text = _html_to_text(lxml.html.fragment_fromstring(html, create_parent="div")) if html.strip() else ""
    return _markdown_title(source) or first_line(text), text


def _markdown_title(source: str) -> str:
    """The first heading, ATX (`# Title`) or setext (`Title` over `=====`), whichever comes first."""
    found = [match for match in (_ATX_HEADING.search(source), _SETEXT_HEADING.search(source)) if match]
    if not found:
        return ""
    first = min(found, key=lambda match: match.start())
    return re.sub(r"[*_`]", "", first.group(1)).strip()[:TITLE_MAX]


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


def read_html(source: str) -> tuple[str, str]:
    source = _XML_DECLARATION.sub("", source)  # lxml refuses str input that declares an encoding
    try:
        tree = lxml.html.document_fromstring(source)
    except (etree.ParserError, ValueError):
        raise ExtractionError("The HTML document could not be parsed.")
    main = trafilatura.extract(source, options=_MAIN_CONTENT)
    if main and main.strip():
        # trafilatura puts one block per line; blank lines make them paragraphs for the chunker.
        text = tidy("\n\n".join(_drop_repeated_tail(main.split("\n"))))
    else:
        body = tree.find("body")
        text = _html_to_text(body if body is not None else tree)
    return _html_title(tree) or first_line(text), text


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
            return SPACES.sub(" ", " ".join(values)).strip()[:TITLE_MAX]
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
    paragraphs = (SPACES.sub(" ", " ".join(block.split())) for block in re.split(r"\n\s*\n", joined))
    return "\n\n".join(paragraph for paragraph in paragraphs if paragraph)


