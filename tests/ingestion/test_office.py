"""extract() on Office files and CSV: Word headings and tables, slides and their notes, sheets with
their real row numbers; and the hostile files every Office reader must refuse with a reason
(damaged or oversized ZIP containers, other archives, encrypted files, too many slides or rows).

The files are real ones, written in each test by python-docx, python-pptx and openpyxl."""

import datetime
import io
import zipfile

import docx
import openpyxl
import pytest
from openpyxl.chart import BarChart, Reference

from bench import samples
from ingestion.extraction import DOCX, PPTX, XLSX, ExtractionError, UnsupportedType, extract
from ingestion.extraction.types import Table


def saved(document) -> bytes:
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def zipped(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def word_table(document, rows: list[tuple[str, ...]]):
    table = document.add_table(rows=len(rows), cols=len(rows[0]))
    for row, values in zip(table.rows, rows, strict=True):
        for cell, value in zip(row.cells, values, strict=True):
            cell.text = value
    return table


# Word ----------------------------------------------------------------------------------------


def test_word_headings_become_section_paths():
    document = docx.Document()
    document.add_paragraph("Annual report 2024", style="Title")
    document.add_paragraph("A year in review.")
    document.add_heading("Results", level=1)
    document.add_paragraph("Revenue grew.")
    document.add_paragraph("Margins held.")
    document.add_heading("Costs", level=2)
    document.add_paragraph("Rent went up.")
    document.add_heading("Outlook", level=1)
    document.add_paragraph("Hiring in spring.", style="List Bullet")

    extracted = extract(saved(document), DOCX, "report.docx")

    assert [(section.heading, section.text) for section in extracted.sections] == [
        ("Annual report 2024", "A year in review."),
        ("Results", "Revenue grew.\n\nMargins held."),
        ("Results > Costs", "Rent went up."),
        ("Outlook", "Hiring in spring."),
    ]
    assert all(section.location == {} for section in extracted.sections)
    assert extracted.title == "Annual report 2024"
    assert extracted.content_type == DOCX


def test_word_title_comes_from_the_core_properties_first():
    document = docx.Document()
    document.core_properties.title = "Travel policy"
    document.add_heading("Scope", level=1)
    document.add_paragraph("Everyone who travels.")

    assert extract(saved(document), "", "policy.docx").title == "Travel policy"


def test_word_table_is_a_table_section_between_its_paragraphs():
    document = docx.Document()
    document.add_heading("Costs", level=1)
    document.add_paragraph("Before the table.")
    word_table(document, [("Item", "Cost"), ("Rent", "1,200"), ("Travel", "300")])
    document.add_paragraph("After the table.")

    sections = extract(saved(document), "", "costs.docx").sections

    assert [section.text for section in sections] == ["Before the table.", "", "After the table."]
    assert sections[1].table == Table(header="Item | Cost", rows=("Rent | 1,200", "Travel | 300"), first_row=2)
    assert sections[1].heading == "Costs"
    assert sections[1].location == {}


def test_word_table_of_one_row_is_text():
    document = docx.Document()
    document.add_paragraph("Contact:")
    word_table(document, [("Ops desk", "ext. 4411")])

    (section,) = extract(saved(document), "", "contact.docx").sections

    assert section.table is None
    assert section.text == "Contact:\n\nOps desk | ext. 4411"


def test_word_table_title_row_is_its_caption():
    document = docx.Document()
    table = word_table(document, [("Costs 2024", ""), ("Item", "Cost"), ("Rent", "1,200")])
    table.cell(0, 0).merge(table.cell(0, 1))

    (section,) = extract(saved(document), "", "costs.docx").sections

    assert section.text == "Costs 2024"
    assert section.table == Table(header="Item | Cost", rows=("Rent | 1,200",), first_row=3)


def test_word_cell_spanning_absurdly_many_columns_is_refused():
    document = docx.Document()
    table = word_table(document, [("a", "b"), ("c", "d")])
    table.cell(0, 0).merge(table.cell(0, 1))
    with zipfile.ZipFile(io.BytesIO(saved(document))) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    spans = members["word/document.xml"].count(b'<w:gridSpan w:val="2"/>')
    members["word/document.xml"] = members["word/document.xml"].replace(b'w:val="2"/>', b'w:val="900000000"/>')
    assert spans == 1

    with pytest.raises(ExtractionError, match=r"a table cell spanning more than 64 columns"):
        extract(zipped(members), "", "wide.docx")


def test_damaged_word_document_fails_with_a_reason():
    data = zipped({"word/document.xml": b"<w:document>not closed"})

    with pytest.raises(ExtractionError, match=r"^The Word document could not be read \(\w+: "):
        extract(data, "", "broken.docx")


# PowerPoint ----------------------------------------------------------------------------------




def test_slides_become_sections_with_slide_locations_and_notes():
    presentation = samples.presentation(
        [("Roadmap", "Ship search\nShip OCR", "Mention the budget."), ("Team", "Four people", "")]
    )
    slide = presentation.slides.add_slide(presentation.slide_layouts[5])  # title only
    slide.shapes.title.text = "Numbers"
    table = slide.shapes.add_table(2, 2, 0, 0, 3_000_000, 1_000_000).table
    for (row, column), value in zip([(0, 0), (0, 1), (1, 0), (1, 1)], ["Quarter", "Sales", "Q1", "10"], strict=True):
        table.cell(row, column).text = value

    extracted = extract(saved(presentation), "", "plan.pptx")

    assert [(section.location, section.heading, section.text) for section in extracted.sections] == [
        ({"slide": 1}, "Roadmap", "Ship search\nShip OCR\n\nNotes:\nMention the budget."),
        ({"slide": 2}, "Team", "Four people"),
        ({"slide": 3}, "Numbers", "Quarter | Sales\nQ1 | 10"),
    ]
    assert extracted.title == "Roadmap"
    assert extracted.content_type == PPTX


def test_too_many_slides_are_refused(settings):
    settings.KB_MAX_PAGES = 2
    data = saved(samples.presentation([("One", "a", ""), ("Two", "b", ""), ("Three", "c", "")]))

    with pytest.raises(ExtractionError, match=r"3 slides, over the limit of 2 \(KB_MAX_PAGES\)"):
        extract(data, "", "long.pptx")


# Excel ---------------------------------------------------------------------------------------


def test_sheets_become_tables_with_their_real_row_numbers():
    data = samples.workbook(
        {
            "Budget": [["Item", "Cost"], ["Rent", 1200], ["Travel", 300], [], ["Training", 450]],
            "Staff": [["Name", "Team"], ["Ann", "Ops"]],
        },
        title="Budget 2024",
    )

    extracted = extract(data, "", "budget.xlsx")

    assert [(section.location, section.heading, section.table) for section in extracted.sections] == [
        ({"sheet": "Budget"}, "Budget", Table("Item | Cost", ("Rent | 1200", "Travel | 300"), first_row=2)),
        ({"sheet": "Budget"}, "Budget", Table("Item | Cost", ("Training | 450",), first_row=5)),
        ({"sheet": "Staff"}, "Staff", Table("Name | Team", ("Ann | Ops",), first_row=2)),
    ]
    assert extracted.title == "Budget 2024"
    assert extracted.content_type == XLSX


def test_cells_read_as_a_person_reads_them():
    data = samples.workbook(
        {
            "Log": [
                ["Day", "Amount", "Share", "At", "Done", "Note"],
                [datetime.date(2024, 3, 1), 3.0, 0.1 + 0.2, datetime.datetime(2024, 3, 1, 14, 30), True, None],
                [datetime.date(2024, 3, 2), 12, 1 / 3, datetime.datetime(2024, 3, 2, 9, 5, 7), False, "two\nlines"],
            ]
        }
    )

    (section,) = extract(data, "", "log.xlsx").sections

    assert section.table.rows == (
        "2024-03-01 | 3 | 0.3 | 2024-03-01 14:30 | TRUE",
        "2024-03-02 | 12 | 0.333333333333333 | 2024-03-02 09:05:07 | FALSE | two lines",
    )
    assert extract(data, "", "log.xlsx").title == ""  # no title property: the pipeline uses the file name


def test_a_sheet_title_above_its_table_is_a_caption_and_empty_columns_are_dropped():
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Q1"
    sheet["B2"] = "Sales by region"
    for row, values in enumerate([("Region", "Sales"), ("North", 10), ("South", 20)], start=4):
        for column, value in enumerate(values, start=2):
            sheet.cell(row=row, column=column, value=value)

    (section,) = extract(saved(workbook), "", "sales.xlsx").sections

    assert section.text == "Sales by region"
    assert section.table == Table("Region | Sales", ("North | 10", "South | 20"), first_row=5)


def test_a_one_column_sheet_has_no_caption():
    data = samples.workbook({"Names": [["Name"], ["Ann"], ["Bo"]]})

    (section,) = extract(data, "", "names.xlsx").sections

    assert (section.text, section.table) == ("", Table("Name", ("Ann", "Bo"), first_row=2))


def test_chart_sheets_are_skipped():
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Data"
    for row in (["Month", "Visits"], ["Jan", 5], ["Feb", 7]):
        sheet.append(row)
    chart = BarChart()
    chart.add_data(Reference(sheet, min_col=2, min_row=1, max_row=3), titles_from_data=True)
    workbook.create_chartsheet("Chart").add_chart(chart)

    sections = extract(saved(workbook), "", "visits.xlsx").sections

    assert [section.location for section in sections] == [{"sheet": "Data"}]


def test_too_many_rows_in_a_sheet_are_refused(settings):
    settings.KB_MAX_TABLE_ROWS = 10
    data = samples.workbook({"Big": [["n"], *([number] for number in range(20))]})

    with pytest.raises(ExtractionError, match=r"The sheet 'Big' has more than 10 rows.*KB_MAX_TABLE_ROWS"):
        extract(data, "", "big.xlsx")


def test_too_many_sheets_are_refused(settings):
    settings.KB_MAX_PAGES = 2
    data = samples.workbook({name: [["a"], [1]] for name in ("One", "Two", "Three")})

    with pytest.raises(ExtractionError, match=r"3 sheets, over the limit of 2 \(KB_MAX_PAGES\)"):
        extract(data, "", "many.xlsx")


# CSV -----------------------------------------------------------------------------------------


def test_csv_with_semicolons_is_one_table():
    data = b'Name;City;Note\nAnn;Lyon;"says ""hi""; twice"\nBo;Graz;\n\nCy;Oslo;late\n'

    extracted = extract(data, "text/csv", "people.csv")

    assert [(section.location, section.table) for section in extracted.sections] == [
        ({}, Table("Name | City | Note", ('Ann | Lyon | says "hi"; twice', "Bo | Graz"), first_row=2)),
        ({}, Table("Name | City | Note", ("Cy | Oslo | late",), first_row=5)),
    ]
    assert extracted.title == ""
    assert extracted.content_type == "text/csv"


def test_csv_quotes_are_read_the_excel_way_past_the_sniffed_sample():
    rows = "".join(f"{number},plain\n" for number in range(2_000))  # about 16 KB without a quote
    data = f'id,text\n{rows}2000,"says ""hi"", twice"\n'.encode()

    (section,) = extract(data, "", "log.csv").sections

    assert section.table.rows[-1] == '2000 | says "hi", twice'


def test_too_many_csv_rows_are_refused(settings):
    settings.KB_MAX_TABLE_ROWS = 5
    data = "n\n" + "".join(f"{number}\n" for number in range(10))

    with pytest.raises(ExtractionError, match=r"The CSV file has more than 5 rows"):
        extract(data.encode(), "", "numbers.csv")


# Hostile containers --------------------------------------------------------------------------


def test_damaged_zip_container_is_refused():
    with pytest.raises(ExtractionError, match=r"^The file is a damaged ZIP container \("):
        extract(b"PK\x03\x04" + bytes(range(256)) * 8, "", "report.docx")


def test_container_expanding_past_the_cap_is_refused(settings):
    settings.KB_MAX_UNZIPPED_BYTES = 10 * 1024 * 1024
    data = zipped({"word/document.xml": bytes(30 * 1024 * 1024)})

    with pytest.raises(ExtractionError, match=r"expands to 30 MB, over the 10 MB limit \(KB_MAX_UNZIPPED_BYTES\)"):
        extract(data, "", "bomb.docx")


def test_member_with_an_absurd_compression_ratio_is_refused():
    data = zipped({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": bytes(30 * 1024 * 1024)})

    with pytest.raises(ExtractionError, match=r"'xl/workbook.xml' expands [\d,]+ times, to 30 MB; it is a zip bomb"):
        extract(data, "", "bomb.xlsx")


def test_container_with_too_many_members_is_refused(settings):
    settings.KB_MAX_ZIP_MEMBERS = 50
    data = zipped({"word/document.xml": b"<w:document/>", **{f"word/media/{n}.xml": b"x" for n in range(60)}})

    with pytest.raises(ExtractionError, match=r"61 files .* over the limit of 50 \(KB_MAX_ZIP_MEMBERS\)"):
        extract(data, "", "many.docx")


def test_plain_zip_archive_is_unsupported():
    data = zipped({"notes.txt": b"hello", "more/todo.txt": b"world"})

    with pytest.raises(UnsupportedType, match=r"^The file is a ZIP archive, not an Office document"):
        extract(data, "", "bundle.docx")


def test_word_named_file_whose_bytes_are_text_is_refused():
    with pytest.raises(ExtractionError, match=r"named or declared as a Word document, but its bytes are not one"):
        extract(b"Quarterly report\n\nAll good.", "", "report.docx")


def test_encrypted_office_file_is_refused():
    data = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504) + "EncryptedPackage".encode("utf-16-le")

    with pytest.raises(ExtractionError, match=r"^The Office file is encrypted with a password"):
        extract(data, "", "secret.xlsx")
