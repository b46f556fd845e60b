"""Documents made on the spot, for tests and benchmarks: Word, PowerPoint, Excel, text PDFs and
"scanned" pages (text rendered into an image, no text layer), each as the bytes a user uploads."""

import io

import pypdf
from docx import Document as WordDocument
from openpyxl import Workbook
from PIL import Image, ImageDraw, ImageFont
from pptx import Presentation
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject


def word_report(*, title: str, sections: dict[str, list[str]], table: list[list[str]] | None = None) -> bytes:
    """A .docx: a title, one Heading 1 per section with its paragraphs, then a table if given."""
    document = WordDocument()
    document.core_properties.title = title
    document.add_heading(title, level=0)
    for heading, paragraphs in sections.items():
        document.add_heading(heading, level=1)
        for paragraph in paragraphs:
            document.add_paragraph(paragraph)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for row, values in zip(grid.rows, table, strict=True):
            for cell, value in zip(row.cells, values, strict=True):
                cell.text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def presentation(slides: list[tuple[str, str, str]]) -> Presentation:
    """A presentation with one title-and-content slide per (title, body, notes)."""
    deck = Presentation()
    for title, body, notes in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
        if notes:
            slide.notes_slide.notes_text_frame.text = notes
    return deck


def slide_deck(slides: list[tuple[str, str, str]]) -> bytes:
    """A .pptx with one title-and-content slide per (title, body, notes)."""
    out = io.BytesIO()
    presentation(slides).save(out)
    return out.getvalue()


def workbook(sheets: dict[str, list[list]], title: str | None = None) -> bytes:
    """An .xlsx with one sheet per name, rows as given (the first row a header)."""
    book = Workbook()
    book.properties.title = title
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def text_pdf(pages: list[list[str]], title: str | None = None) -> bytes:
    """A PDF with a text layer: each page shows its lines (pypdf writes the content streams)."""
    writer = pypdf.PdfWriter()
    if title:
        writer.add_metadata({"/Title": title})
    for lines in pages:
        page = writer.add_blank_page(width=612, height=792)
        ops = ["BT", "/F1 12 Tf", "72 720 Td", "14 TL"]
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops += [f"({escaped}) Tj", "T*"]
        ops.append("ET")
        font = DictionaryObject({
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        })
        fonts = DictionaryObject({NameObject("/F1"): font})
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): fonts})
        stream = DecodedStreamObject()
        stream.set_data("\n".join(ops).encode())
        page.replace_contents(stream)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def scanned_page(lines: list[str], *, width: int = 1654, font_size: int = 40) -> Image.Image:
    """A page as a scanner gives it: black text on white, no text layer (A4 at 200 dpi by default)."""
    font = ImageFont.truetype("DejaVuSans.ttf", font_size) if _has_dejavu() else ImageFont.load_default(font_size)
    height = int(width * 1.414)
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    y = font_size * 3
    for line in lines:
        draw.text((font_size * 3, y), line, fill=0, font=font)
        y += int(font_size * 1.6)
    return image


def scanned_png(lines: list[str], **page) -> bytes:
    out = io.BytesIO()
    scanned_page(lines, **page).save(out, "PNG")
    return out.getvalue()


def scanned_pdf(pages: list[list[str]], **page) -> bytes:
    """An image-only PDF, one scanned page per list of lines."""
    return images_pdf([scanned_page(lines, **page) for lines in pages], resolution=200)


def images_pdf(images: list[Image.Image], *, resolution: int = 100) -> bytes:
    """A PDF whose pages are these images, with no text layer: what a scanner produces.

    It saves copies: Pillow keeps a multi-page save's options on the images involved, and a later
    multi-page save of one of them would append the same pages again.
    """
    first, *rest = (image.copy() for image in images)
    out = io.BytesIO()
    first.save(out, "PDF", save_all=True, append_images=rest, resolution=resolution)
    return out.getvalue()


def _has_dejavu() -> bool:
    try:
        ImageFont.truetype("DejaVuSans.ttf", 10)
    except OSError:
        return False
    return True
