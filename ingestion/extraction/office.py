"""Readers for Office files (Word .docx, PowerPoint .pptx, Excel .xlsx/.xlsm) and CSV, and the
guard every Office file passes first.

Office files are ZIP containers. `zip_kind` opens the container, refuses one that is damaged, has
too many members or expands too far (`KB_MAX_ZIP_MEMBERS`, `KB_MAX_UNZIPPED_BYTES`, an absurd
compression ratio), and names the kind by its main part. Python's `zipfile` never inflates a
member past the size its directory declares, so checking the declared sizes bounds what the
readers (python-docx, python-pptx, openpyxl) can unpack. The readers expect bytes `zip_kind`
accepted, as `extract` gives them.

What each section's `location` means:

- Word: `{}`. A .docx stores no page breaks a reader could trust (Word lays pages out when it
  shows them), so a Word citation is its heading path ("Results > Costs"). The text under each
  Heading 1-9 is a section; each table of two rows or more is a section of its own.
- PowerPoint: `{"slide": n}`, n counted from 1 as PowerPoint shows it (hidden slides count).
  The heading is the slide's title; the text is every shape's text in order, tables as
  "a | b" lines, then the speaker notes after a line "Notes:".
- Excel: `{"sheet": name}`. Each worksheet is a table: its first non-empty row is the header
  (a lone title cell above it becomes the text), and the rows after it are split at empty rows
  into tables whose `first_row` is the sheet's own row number, so the chunker's "rows" are the
  numbers Excel shows. Chart sheets are skipped.
- CSV: `{}`, one table, its rows numbered as a spreadsheet opening the file numbers them.
"""

import csv
import datetime
import io
import re
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import chain, islice

import docx
import openpyxl
import pptx
from django.conf import settings
from docx.opc.constants import RELATIONSHIP_TYPE as DOCX_RELATIONSHIPS
from docx.table import Table as WordTable
from pptx.enum.shapes import PP_PLACEHOLDER
from pptx.opc.constants import RELATIONSHIP_TYPE as PPTX_RELATIONSHIPS
from pptx.shapes.group import GroupShape

from ingestion.extraction.text import TITLE_MAX, first_line, tidy
from ingestion.extraction.types import ExtractionError, Section, Table, UnsupportedType

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
#: The main part of each kind, by which a ZIP container is recognised.
_MAIN_PARTS = {"word/document.xml": DOCX, "ppt/presentation.xml": PPTX, "xl/workbook.xml": XLSX}
#: A member expanding more than this many times, to more than _BOMB_MIN_BYTES, is a zip bomb (XML
#: compresses 10-30 times; a bomb's zeros about 1,000 times).
_BOMB_RATIO = 200
_BOMB_MIN_BYTES = 10 * 1024 * 1024
#: Word tables have at most 63 columns; python-docx repeats a spanning cell once per column it spans.
_MAX_GRID_SPAN = 64
_HEADING_STYLE = re.compile(r"heading ([1-9])", re.IGNORECASE)
#: Placeholders that repeat on every slide and say nothing about it.
_SKIPPED_PLACEHOLDERS = {PP_PLACEHOLDER.SLIDE_NUMBER, PP_PLACEHOLDER.DATE, PP_PLACEHOLDER.FOOTER}
_CSV_SNIFF_CHARS = 16 * 1024


# The container -------------------------------------------------------------------------------


def zip_kind(data: bytes) -> str:
    """DOCX, PPTX or XLSX for bytes that are a ZIP container; ExtractionError when it is damaged
    or too large once unpacked, UnsupportedType when it is some other ZIP archive."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        raise ExtractionError(f"The file is a damaged ZIP container ({exc}).")
    _check_members(members)
    names = {member.filename for member in members}
    for part, kind in _MAIN_PARTS.items():
        if part in names:
            return kind
    raise UnsupportedType(
        "The file is a ZIP archive, not an Office document (.docx, .pptx, .xlsx); archives are not "
        "opened: upload the files inside it instead."
    )


def _check_members(members: list[zipfile.ZipInfo]) -> None:
    limit = settings.KB_MAX_ZIP_MEMBERS
    if len(members) > limit:
        raise ExtractionError(
            f"The file holds {len(members):,} files inside its ZIP container, over the limit of {limit:,} "
            "(KB_MAX_ZIP_MEMBERS); it may be a zip bomb."
        )
    total, limit = sum(member.file_size for member in members), settings.KB_MAX_UNZIPPED_BYTES
    if total > limit:
        raise ExtractionError(
            f"The file expands to {_size(total)}, over the {_size(limit)} limit (KB_MAX_UNZIPPED_BYTES); "
            "it may be a zip bomb."
        )
    for member in members:
        if member.file_size > _BOMB_MIN_BYTES and member.file_size > _BOMB_RATIO * max(member.compress_size, 1):
            ratio = member.file_size // max(member.compress_size, 1)
            raise ExtractionError(
                f"The file's part {member.filename[:80]!r} expands {ratio:,} times, to {_size(member.file_size)}; "
                "it is a zip bomb."
            )


def _size(count: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} bytes"


@contextmanager
def _reading(what: str) -> Iterator[None]:
    """Turn whatever a library raises on a damaged file into ExtractionError("<what> could not be read")."""
    try:
        yield
    except ExtractionError:
        raise
    except Exception as exc:  # the libraries raise KeyError, ValueError, lxml errors, ... on bad input
        detail = str(exc)[:200]
        raise ExtractionError(f"{what} could not be read ({type(exc).__name__}: {detail}).") from exc


def _core_part(package, relationship: str):
    """The package's core-properties part, None when it has none (the libraries would invent one,
    titled "Word Document" or "PowerPoint Presentation")."""
    try:
        return package.part_related_by(relationship)
    except KeyError:
        return None


# Word ----------------------------------------------------------------------------------------


def read_docx(data: bytes) -> tuple[str, list[Section]]:
    """Title and sections of a Word document: the text under each heading, and each table."""
    with _reading("The Word document"):
        document = docx.Document(io.BytesIO(data))
        spans = document.element.body.xpath(".//w:gridSpan/@w:val")
        if any(int(span) > _MAX_GRID_SPAN for span in spans):
            raise ExtractionError(f"The Word document has a table cell spanning more than {_MAX_GRID_SPAN} columns.")
        core = _core_part(document.part.package, DOCX_RELATIONSHIPS.CORE_PROPERTIES)
        title = (core.core_properties.title or "").strip() if core is not None else ""
        sections, first_heading = _docx_sections(document)
    all_text = "\n".join(section.text for section in sections)
    return (title or first_heading or first_line(all_text))[:TITLE_MAX], sections


def _docx_sections(document) -> tuple[list[Section], str]:
    """The body in order: sections at headings and tables; also the first heading's text."""
    sections: list[Section] = []
    path: list[tuple[int, str]] = []  # (level, text) of the enclosing headings; the Title has level 0
    paragraphs: list[str] = []
    first_heading = ""
    # Paragraph.style looks the style up among all of the document's styles on every call, which
    # made long documents quadratic; a paragraph names its style by id, looked up here once.
    style_names = {style.style_id: style.name for style in document.styles}

    def current_heading() -> str:
        return " > ".join(heading for _, heading in path)

    def close_text() -> None:
        text = tidy("\n\n".join(paragraphs))
        if text:
            sections.append(Section(text, heading=current_heading()))
        paragraphs.clear()

    for block in document.iter_inner_content():
        if isinstance(block, WordTable):
            found = _table_sections(
                _word_rows(block), what="A table of the Word document", location={}, heading=current_heading()
            )
            if len(found) == 1 and found[0].table is None:
                paragraphs.append(found[0].text)  # a table of one row is text
                continue
            close_text()
            sections += found
            continue
        text = _plain(block.text)
        level = _heading_level(style_names.get(block._p.style))
        if level is None or not text:
            paragraphs.append(block.text)
            continue
        close_text()
        first_heading = first_heading or text
        # The Title is no outline level: it starts a section but encloses none of the headings after it.
        path = [(0, text)] if level == 0 else [entry for entry in path if 0 < entry[0] < level] + [(level, text)]
    close_text()
    return sections, first_heading


def _heading_level(style_name: str | None) -> int | None:
    """0 for the Title, 1-9 for Heading 1-9, None for any other paragraph."""
    if not style_name:
        return None
    if style_name == "Title":
        return 0
    match = _HEADING_STYLE.fullmatch(style_name)
    return int(match.group(1)) if match else None


def _word_rows(table: WordTable) -> Iterator[tuple[int, list[str]]]:
    for number, row in enumerate(table.rows, start=1):
        cells = []
        for cell in row.cells:
            if not cells or cell is not cells[-1]:  # a cell spanning columns comes once per column
                cells.append(cell)
        yield number, [_plain(cell.text) for cell in cells]


# PowerPoint ----------------------------------------------------------------------------------


def read_pptx(data: bytes) -> tuple[str, list[Section]]:
    """Title and sections of a presentation: one section per slide, with its notes."""
    with _reading("The PowerPoint presentation"):
        presentation = pptx.Presentation(io.BytesIO(data))
        count, limit = len(presentation.slides), settings.KB_MAX_PAGES
        if count > limit:
            raise ExtractionError(f"The presentation has {count:,} slides, over the limit of {limit:,} (KB_MAX_PAGES).")
        core = _core_part(presentation.part.package, PPTX_RELATIONSHIPS.CORE_PROPERTIES)
        title = (core.title or "").strip() if core is not None else ""
        sections = [_slide_section(slide, number) for number, slide in enumerate(presentation.slides, start=1)]
    first_title = next((section.heading for section in sections if section.heading), "")
    return (title or first_title)[:TITLE_MAX], sections


def _slide_section(slide, number: int) -> Section:
    title_shape = slide.shapes.title
    heading = _plain(title_shape.text_frame.text) if title_shape is not None else ""
    skipped = {title_shape.shape_id} if title_shape is not None else set()
    parts = list(_shape_texts(slide.shapes, skipped))
    if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
        notes = slide.notes_slide.notes_text_frame.text.strip()
        if notes:
            parts.append(f"Notes:\n{notes}")
    text = tidy("\n\n".join(part.replace("\v", "\n") for part in parts))  # "\v" is a line break in a paragraph
    return Section(text, location={"slide": number}, heading=heading)


def _shape_texts(shapes, skipped: set[int]) -> Iterator[str]:
    """The text of each shape in order (groups opened), tables as one "a | b" line per row."""
    for shape in shapes:
        if shape.shape_id in skipped:
            continue
        if isinstance(shape, GroupShape):
            yield from _shape_texts(shape.shapes, skipped)
        elif shape.is_placeholder and shape.placeholder_format.type in _SKIPPED_PLACEHOLDERS:
            continue
        elif shape.has_table:
            rows = (
                " | ".join(_plain(cell.text) for cell in row.cells if not cell.is_spanned) for row in shape.table.rows
            )
            yield "\n".join(row for row in rows if row.strip(" |"))
        elif shape.has_text_frame:
            yield shape.text_frame.text


# Excel ---------------------------------------------------------------------------------------


def read_xlsx(data: bytes) -> tuple[str, list[Section]]:
    """Title and sections of a workbook: each worksheet's tables, split at empty rows."""
    with _reading("The Excel workbook"):
        workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        try:
            sheets = workbook.worksheets  # worksheets only: chart sheets are not in this list
            count, limit = len(sheets), settings.KB_MAX_PAGES
            if count > limit:
                raise ExtractionError(f"The workbook has {count:,} sheets, over the limit of {limit:,} (KB_MAX_PAGES).")
            title = (workbook.properties.title or "").strip()  # else the pipeline uses the file name
            sections = []
            for sheet in sheets:
                # Ignore the sheet's declared size: a forged one would pad every row to 16,384 columns.
                sheet.reset_dimensions()
                rows = enumerate(sheet.iter_rows(values_only=True), start=1)
                numbered = ((number, [_cell_text(value) for value in values]) for number, values in rows)
                sections += _table_sections(
                    numbered, what=f"The sheet {sheet.title!r}", location={"sheet": sheet.title}, heading=sheet.title
                )
        finally:
            workbook.close()
    return title[:TITLE_MAX], sections


def _cell_text(value) -> str:
    """A cell as a person reads it: 3 not 3.0, dates in ISO form, TRUE/FALSE, nothing for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return format(value, ".15g")  # Excel shows 15 significant digits: 0.1 + 0.2 is 0.3
    if isinstance(value, datetime.datetime):
        if value.time() == datetime.time(0):
            return value.date().isoformat()
        return value.isoformat(sep=" ", timespec="minutes" if value.second == 0 else "seconds")
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return _plain(str(value))


# CSV -----------------------------------------------------------------------------------------


def read_csv(text: str) -> tuple[str, list[Section]]:
    """One table: the first non-empty row is the header. The title is left to the file name."""
    sample = text[:_CSV_SNIFF_CHARS]
    if len(text) > _CSV_SNIFF_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n")]  # whole lines only: a cut row misleads the sniffer
    # Only the delimiter is sniffed; quoting stays Excel's ("" inside "..."): the sniffer's guesses
    # of it from a sample turn doubled quotes off whenever the sample happens to have none.
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = ","
    records = enumerate(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), start=1)
    numbered = ((number, [_plain(value) for value in values]) for number, values in records)
    try:
        return "", _table_sections(numbered, what="The CSV file", location={}, heading="")
    except csv.Error as exc:
        raise ExtractionError(f"The CSV file could not be read ({exc}).")


# Tables --------------------------------------------------------------------------------------


def _table_sections(
    rows: Iterable[tuple[int, list[str]]], *, what: str, location: dict, heading: str
) -> list[Section]:
    """The sections of a table given as (row number, cells): one per run of rows between empty rows.

    The header is the first non-empty row, repeated in every section; but a first row of a single
    cell above a row of several (a sheet's title, a Word table's merged title row) is the first
    section's text instead, and the row after it the header. Each section's `first_row` is the
    number of its first row, so the numbers the chunker gives rows are the table's own. Columns
    empty in every row on the left and cells empty on the right are dropped. A table that is only a
    header is a section of text. A row numbered past `KB_MAX_TABLE_ROWS` raises ExtractionError
    naming `what`.
    """
    limit = settings.KB_MAX_TABLE_ROWS
    runs: list[tuple[int, list[list[str]]]] = []  # (number of the first row, rows' cells)
    for number, cells in rows:
        if number > limit:
            raise ExtractionError(f"{what} has more than {limit:,} rows, the limit (KB_MAX_TABLE_ROWS).")
        while cells and not cells[-1]:
            cells.pop()
        if not cells:
            continue
        if runs and runs[-1][0] + len(runs[-1][1]) == number:
            runs[-1][1].append(cells)
        else:
            runs.append((number, [cells]))
    if not runs:
        return []
    caption = ""
    top = list(islice((cells for _, block in runs for cells in block), 2))
    if len(top) == 2 and _filled(top[0]) == 1 and _filled(top[1]) > 1:
        caption = top[0][-1]
        runs = _without_first_row(runs)
    header_cells = runs[0][1][0]
    runs = _without_first_row(runs)
    indent = min(_indent(cells) for cells in chain([header_cells], *(block for _, block in runs)))
    header = " | ".join(header_cells[indent:])
    if not runs:
        return [Section(tidy(f"{caption}\n\n{header}"), location=location, heading=heading)]
    return [
        Section(
            caption if index == 0 else "",
            location=dict(location),
            heading=heading,
            table=Table(header, tuple(" | ".join(cells[indent:]) for cells in block), first_row=first),
        )
        for index, (first, block) in enumerate(runs)
    ]


def _without_first_row(runs: list[tuple[int, list[list[str]]]]) -> list[tuple[int, list[list[str]]]]:
    first, block = runs[0]
    return [(first + 1, block[1:]), *runs[1:]] if len(block) > 1 else runs[1:]


def _filled(cells: list[str]) -> int:
    return sum(1 for cell in cells if cell)


def _indent(cells: list[str]) -> int:
    """How many empty cells a row starts with."""
    return next(index for index, cell in enumerate(cells) if cell)


def _plain(text: str) -> str:
    """Text of a cell or heading on one line, its whitespace collapsed."""
    return " ".join(text.split())
