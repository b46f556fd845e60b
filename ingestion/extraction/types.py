"""What extraction produces and the errors it raises: a document as sections a citation can point at."""

from collections.abc import Callable
from dataclasses import dataclass, field


class ExtractionError(Exception):
    """The document cannot be turned into text; `reason` says why, for a human."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class UnsupportedType(ExtractionError):
    """A kind of document this service never extracts (audio, archives, programs, ...)."""


@dataclass(frozen=True)
class Table:
    """Rows of a table as text: chunked by rows, with `header` repeated at the top of every chunk."""

    header: str  # the header row, cells joined by " | "
    rows: tuple[str, ...]  # the data rows, cells joined by " | "
    first_row: int = 2  # the number of the first data row as the sheet or file shows it (1-based)


@dataclass(frozen=True)
class Section:
    """A part of a document a citation can point at: a page, a slide, a sheet, a heading's text.

    `location` says where it is, as the search API returns it: {} for a plain text, {"page": 3},
    {"slide": 5}, {"sheet": "Budget"} (the chunker adds "rows": [10, 19] to a table's chunks).
    `heading` is the section path ("Results > Costs"); `text` holds paragraphs split by blank lines.
    A section with a `table` is chunked by its rows; its `text` is then a caption or empty.
    """

    text: str
    location: dict = field(default_factory=dict)
    heading: str = ""
    table: Table | None = None


@dataclass(frozen=True)
class Extracted:
    """A document's title and sections, the kind actually read, and what was skipped on the way."""

    title: str
    sections: tuple[Section, ...]
    content_type: str  # the kind actually extracted: text/plain, text/html, application/pdf, ...
    #: Parts that could not be read while the rest could ("page 4: OCR timed out after 60 s").
    problems: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """All the text, sections in order, blank lines between them (tables as their rows)."""
        parts = []
        for section in self.sections:
            if section.text:
                parts.append(section.text)
            if section.table is not None:
                parts.append("\n".join((section.table.header, *section.table.rows)))
        return "\n\n".join(parts)


@dataclass(frozen=True)
class OcrOptions:
    """How to OCR the pages of one document: Tesseract languages ("eng", "eng+chi_sim"), the time
    one page may take, and who to tell after each page (`on_page(done, total)`)."""

    languages: str = "eng"
    page_timeout: float = 60.0
    on_page: Callable[[int, int], None] | None = None
