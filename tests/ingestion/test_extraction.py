"""extract(): plain text, Markdown, HTML and PDF to title + text; the bytes decide the kind; clear
reasons for bad input. Office files, OCR and tables have their own test modules."""

import io
import random

import pypdf
import pytest

from bench import samples
from ingestion.extraction import (
    SUPPORTED_KINDS,
    ExtractionError,
    UnsupportedType,
    extract,
    kind_in_words,
    unsupported_reason,
)


def text_pdf(lines: list[str], title: str | None = None) -> bytes:
    """A one-page PDF with a text layer showing `lines`."""
    return samples.text_pdf([lines], title=title)


def blank_pdf() -> bytes:
    writer = pypdf.PdfWriter()
    writer.add_blank_page(width=612, height=792)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


ARTICLE = b"""<!doctype html>
<html><head><title>Example Site | Rotating keys</title>
<meta property="og:title" content="Rotating API keys safely"></head>
<body>
<nav><a href="/">Home</a> <a href="/pricing">Pricing</a> <a href="/blog">Blog</a> <a href="/login">Log in</a></nav>
<main><article>
<h1>Rotating API keys safely</h1>
<p>API keys should be rotated on a schedule. Create the new key first, deploy it to every client,
and only then revoke the old key, so that no request fails during the switch.</p>
<p>Keep an audit log of every rotation. When a key leaks, the log tells you which clients used it
and when, which shortens the incident considerably.</p>
<p>Automate the rotation where possible: a scheduled job that creates, distributes and revokes keys
removes the human step that is most often skipped.</p>
</article></main>
<footer>Copyright 2024 Example Corp. All rights reserved. <a href="/privacy">Privacy policy</a></footer>
</body></html>"""


def test_plain_text_keeps_paragraphs_and_takes_the_first_line_as_title():
    extracted = extract(b"Release notes\r\n\r\nFixed the   crawler.\r\nAdded PDF support.\n\n\n\nThanks.", "text/plain")
    assert extracted.title == "Release notes"
    assert extracted.text == "Release notes\n\nFixed the crawler.\nAdded PDF support.\n\nThanks."
    assert extracted.content_type == "text/plain"


def test_plain_text_drops_a_utf8_bom():
    assert extract("\ufeffCafé menu".encode(), "text/plain; charset=utf-8").text == "Café menu"


def test_plain_text_falls_back_to_windows_1252():
    text = "naïve \u201cquotes\u201d \u2013 5\u20ac"  # curly quotes, en dash, euro: cp1252-only bytes
    assert extract(text.encode("cp1252"), "text/plain").text == text


def test_plain_text_decodes_utf16_with_bom():
    assert extract("\ufeffhello wörld".encode("utf-16-le"), "text/plain").text == "hello wörld"


def test_markdown_title_comes_from_the_first_heading():
    source = b"Intro line without heading\n\n## Setup *guide*\n\nInstall it.\n\n# Later heading\n"
    assert extract(source, "text/markdown").title == "Setup guide"


def test_markdown_becomes_text_with_paragraphs():
    source = (
        b"# Guide\n\nFirst paragraph\nwrapped over lines with **bold**.\n\n- one\n- two\n\n[link](http://x.test) text\n"
    )
    extracted = extract(source, "text/markdown")
    assert extracted.text == "Guide\n\nFirst paragraph wrapped over lines with bold.\n\none\n\ntwo\n\nlink text"
    assert extracted.content_type == "text/markdown"


def test_html_keeps_the_article_and_drops_navigation_and_footer():
    extracted = extract(ARTICLE, "text/html; charset=utf-8")
    assert "Create the new key first" in extracted.text
    assert "Automate the rotation" in extracted.text
    assert "Pricing" not in extracted.text
    assert "Copyright" not in extracted.text
    assert "\n\n" in extracted.text


def test_html_short_article_is_not_repeated():
    # trafilatura 2.0 appends short <article> bodies twice (adbar/trafilatura#879).
    page = (
        b"<html><body><nav>menu</nav><article><h1>Short post</h1>"
        b"<p>First paragraph of adequate length for the extractor to engage with it properly.</p>"
        b"<p>Second paragraph, also long enough to matter for the extractor here.</p>"
        b"</article><footer>footer</footer></body></html>"
    )
    text = extract(page, "text/html").text
    assert text.count("First paragraph") == 1
    assert text.count("Second paragraph") == 1


def test_html_title_prefers_open_graph_over_title_tag():
    assert extract(ARTICLE, "text/html").title == "Rotating API keys safely"
    assert extract(
        b"<html><head><title> Plain  title </title></head><body><p>x</p></body></html>", "text/html"
    ).title == ("Plain title")


def test_html_falls_back_to_all_visible_text_when_trafilatura_finds_nothing():
    page = b"<html><body><div>Tiny</div><script>var hidden = 1;</script><div>page</div></body></html>"
    extracted = extract(page, "text/html")
    assert extracted.text == "Tiny\n\npage"
    assert extracted.title == "Tiny"


def test_pdf_text_is_extracted_with_metadata_title():
    extracted = extract(
        text_pdf(["Quarterly report", "Revenue grew by ten percent."], title="Q3 Report"), "application/pdf"
    )
    assert extracted.title == "Q3 Report"
    assert "Revenue grew by ten percent." in extracted.text
    assert extracted.content_type == "application/pdf"


def test_pdf_without_metadata_title_uses_its_first_line():
    assert extract(text_pdf(["Quarterly report", "Body text."]), "application/pdf").title == "Quarterly report"


def test_pdf_without_text_even_after_ocr_fails_with_a_reason():
    with pytest.raises(ExtractionError, match="No text could be extracted"):
        extract(blank_pdf(), "application/pdf")


def test_corrupt_pdf_fails_with_a_reason():
    with pytest.raises(ExtractionError, match="could not be parsed"):
        extract(b"%PDF-1.7\n1 0 obj << /Type /Catalog broken", "application/pdf")


@pytest.mark.parametrize("data", [b"", b"  \n\t \n"])
def test_empty_file_fails_as_empty(data):
    with pytest.raises(ExtractionError, match="empty"):
        extract(data, "text/plain")


def test_binary_junk_fails_as_binary():
    junk = random.Random(7).randbytes(4096)
    with pytest.raises(ExtractionError, match="binary"):
        extract(junk, "text/plain", "notes.txt")


def test_text_with_nul_bytes_fails_as_binary():
    with pytest.raises(ExtractionError, match="binary"):
        extract(b"a\x00b\x00c\x00d\x00" * 100, "text/plain")


@pytest.mark.parametrize(
    ("content_type", "filename"), [("application/msword", "x.doc"), ("application/vnd.rar", "a.rar")]
)
def test_unsupported_content_type_raises_unsupported(content_type, filename):
    with pytest.raises(UnsupportedType, match="cannot be read; the supported kinds are plain text"):
        extract(b"some bytes", content_type, filename)


def test_the_bytes_decide_over_a_wrong_name():
    assert extract(text_pdf(["Really a PDF"]), "text/plain", "notes.txt").content_type == "application/pdf"


def test_a_binary_kind_whose_bytes_are_something_else_fails_saying_so():
    with pytest.raises(ExtractionError, match="named or declared as a PDF, but its bytes are not a PDF"):
        extract(b"just some words", "application/pdf", "report.pdf")


def test_archives_are_refused_by_their_bytes():
    with pytest.raises(UnsupportedType, match="gzip archive"):
        extract(b"\x1f\x8b\x08\x00" + bytes(100), "application/octet-stream", "")


def test_undeclared_type_uses_the_file_extension():
    assert extract(b"# Title\n\nbody", "application/octet-stream", "README.md").content_type == "text/markdown"


def test_undeclared_type_without_extension_is_sniffed():
    assert extract(text_pdf(["Sniffed"]), "", "upload").content_type == "application/pdf"
    assert extract(b"<!DOCTYPE html><html><body><p>hi there</p></body></html>", "", "").content_type == "text/html"
    assert extract(b"just words", "", "").content_type == "text/plain"


@pytest.mark.parametrize(
    ("content_type", "filename", "supported"),
    [
        ("application/pdf", "", True),
        ("text/markdown", "", True),
        ("text/csv; charset=utf-8", "data.csv", True),
        ("application/octet-stream", "page.HTM", True),
        ("application/octet-stream", "", True),
        ("image/png", "x.png", True),
        ("application/octet-stream", "deck.pptx", True),
        ("application/msword", "old.doc", False),
        ("application/octet-stream", "bundle.zip", False),
        ("application/octet-stream", "archive.tar.gz", False),
    ],
)
def test_unsupported_reason_is_empty_only_for_what_can_be_extracted(content_type, filename, supported):
    assert (unsupported_reason(content_type, filename) == "") is supported


@pytest.mark.parametrize(
    ("content_type", "filename", "words"),
    [
        ("application/msword", "report.doc", "Word 97-2003 document (.doc)"),
        ("application/msword", "", "Word 97-2003 document (.doc)"),
        ("application/octet-stream", "slides.PPT", "PowerPoint 97-2003 presentation (.ppt)"),
        ("image/svg+xml", "logo.svg", "SVG image"),
        ("audio/mpeg", "", "MP3 audio file"),
        ("application/octet-stream", "data.xyz", "File ending in .xyz"),
        ("application/x-unheard-of", "", "File of type application/x-unheard-of"),
    ],
)
def test_refusals_name_the_kind_of_file_in_words(content_type, filename, words):
    reason = unsupported_reason(content_type, filename)
    assert kind_in_words(content_type, filename) == words
    assert reason == f"{words} cannot be read; the supported kinds are {SUPPORTED_KINDS}."
    assert "application/vnd" not in reason
