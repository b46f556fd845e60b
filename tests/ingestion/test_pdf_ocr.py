"""extract() on images and PDFs that need OCR, with the real Tesseract: scanned and mixed PDFs page by
page, progress per OCR'd page, timeouts and failures as problems, and clear reasons for bad input."""

import io
import shutil
import subprocess

import pypdf
import pytesseract
import pytest
from PIL import Image, ImageDraw, ImageFont

from bench import samples
from ingestion.extraction import ExtractionError, extract
from ingestion.extraction.types import OcrOptions
from tests.ingestion.test_extraction import text_pdf


def text_image(*lines: str, size=(900, 160), mode="RGB", background="white", ink="black") -> Image.Image:
    """Large, clear text (40 px) on a plain background: easy for Tesseract, cheap to OCR."""
    image = Image.new(mode, size, background)
    ImageDraw.Draw(image).text((30, 30), "\n".join(lines), font=ImageFont.load_default(size=40), fill=ink)
    return image


def encoded(image: Image.Image, kind: str = "PNG", **options) -> bytes:
    """The image saved as `kind`. A multi-page save saves copies: Pillow keeps its options on the
    images involved, and a later multi-page save of one of them would append the same pages again."""
    out = io.BytesIO()
    if options.get("save_all"):
        image = image.copy()
        options["append_images"] = [appended.copy() for appended in options.get("append_images", ())]
    image.save(out, kind, **options)
    return out.getvalue()


def scanned_pdf(*pages: Image.Image) -> bytes:
    return samples.images_pdf(list(pages))


def joined_pdf(*documents: bytes) -> bytes:
    writer = pypdf.PdfWriter()
    for document in documents:
        writer.append(pypdf.PdfReader(io.BytesIO(document)))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def words(text: str) -> set[str]:
    return set(text.lower().split())


def progress_recorder():
    calls = []
    return calls, OcrOptions(languages="eng", page_timeout=60, on_page=lambda done, total: calls.append((done, total)))


PAGE_ONE = text_image("Pelican harvest", "quarterly meridian")
PAGE_TWO = text_image("Granite lantern", "orchestra voyage")


def test_png_is_read_by_ocr():
    extracted = extract(encoded(PAGE_ONE), "image/png", "scan.png")

    assert {"pelican", "harvest", "quarterly", "meridian"} <= words(extracted.text)
    assert [section.location for section in extracted.sections] == [{}]
    assert extracted.title == ""
    assert extracted.content_type == "image/png"
    assert extracted.problems == ()


def test_scanned_pdf_is_read_page_by_page_reporting_each_ocr_page():
    calls, options = progress_recorder()

    extracted = extract(scanned_pdf(PAGE_ONE, PAGE_TWO), "application/pdf", "scan.pdf", ocr_with=options)

    first, second = extracted.sections
    assert (first.location, second.location) == ({"page": 1}, {"page": 2})
    assert {"pelican", "meridian"} <= words(first.text)
    assert {"granite", "voyage"} <= words(second.text)
    assert calls == [(1, 2), (2, 2)]
    assert extracted.title.lower().startswith("pelican")


def test_mixed_pdf_ocrs_only_the_page_without_a_text_layer():
    calls, options = progress_recorder()
    document = joined_pdf(text_pdf(["Typed minutes of the meeting", "The budget was approved."]), scanned_pdf(PAGE_TWO))

    extracted = extract(document, "application/pdf", ocr_with=options)

    first, second = extracted.sections
    assert first.text == "Typed minutes of the meeting\nThe budget was approved."
    assert second.location == {"page": 2}
    assert {"granite", "lantern"} <= words(second.text)
    assert calls == [(1, 1)]
    assert extracted.title == "Typed minutes of the meeting"


def test_page_timeout_is_a_problem_and_the_other_pages_are_kept():
    document = joined_pdf(text_pdf(["Typed minutes of the meeting"]), scanned_pdf(PAGE_TWO))

    extracted = extract(document, "application/pdf", ocr_with=OcrOptions(page_timeout=0.001))

    assert [section.location for section in extracted.sections] == [{"page": 1}]
    assert extracted.problems == ("page 2: OCR timed out after 0.001 s",)


def test_document_whose_every_page_timed_out_fails_naming_the_pages():
    with pytest.raises(ExtractionError, match=r"No text could be extracted.*page 1: OCR timed out after 0.001 s"):
        extract(scanned_pdf(PAGE_ONE), "application/pdf", ocr_with=OcrOptions(page_timeout=0.001))


def test_unknown_ocr_language_fails_the_document_naming_it():
    with pytest.raises(ExtractionError, match=r"language\(s\) xxx \(KB_OCR_LANGS is 'eng\+xxx'"):
        extract(encoded(PAGE_ONE), "image/png", ocr_with=OcrOptions(languages="eng+xxx"))


def test_missing_tesseract_fails_the_document_with_the_reason(monkeypatch):
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")

    with pytest.raises(ExtractionError, match="Tesseract is not installed on this worker"):
        extract(encoded(PAGE_ONE), "image/png")


def test_image_over_the_pixel_limit_is_refused_with_its_size(settings):
    settings.KB_MAX_IMAGE_PIXELS = 100_000

    with pytest.raises(ExtractionError, match=r"900 × 160 pixels, over the limit of 100,000 \(KB_MAX_IMAGE_PIXELS\)"):  # noqa: RUF001
        extract(encoded(PAGE_ONE), "image/png")


def test_decompression_bomb_is_refused_from_its_header(settings):
    settings.KB_MAX_IMAGE_PIXELS = 60_000_000
    bomb = encoded(Image.new("1", (20_000, 20_000), 1))  # 90 KB of PNG, 400 million pixels

    with pytest.raises(ExtractionError, match=r"more than [\d,]+ pixels, over the limit of 60,000,000"):
        extract(bomb, "image/png")


def test_corrupt_image_fails_with_a_reason():
    with pytest.raises(ExtractionError, match="The image could not be read"):
        extract(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20, "image/png")


def test_truncated_image_fails_with_a_reason():
    with pytest.raises(ExtractionError, match="The image could not be decoded"):
        extract(encoded(PAGE_ONE)[:400], "image/png")


def test_multi_frame_tiff_is_one_page_per_frame_up_to_the_page_limit(settings):
    settings.KB_MAX_PAGES = 2
    tiff = encoded(PAGE_ONE, "TIFF", save_all=True, append_images=[PAGE_TWO, text_image("Third frame")])

    extracted = extract(tiff, "image/tiff")

    assert [section.location for section in extracted.sections] == [{"page": 1}, {"page": 2}]
    assert {"granite", "voyage"} <= words(extracted.sections[1].text)
    assert extracted.problems == ("Only the first 2 of 3 frames were read (KB_MAX_PAGES).",)


def test_photo_stored_sideways_is_turned_upright_by_its_exif_orientation():
    sideways = PAGE_ONE.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; rotate 90° clockwise to show it

    upright = extract(encoded(sideways, "JPEG", exif=exif, quality=95), "image/jpeg", "photo.jpg")
    as_stored = extract(encoded(sideways, "JPEG", quality=95), "image/jpeg", "photo.jpg")

    assert {"pelican", "harvest"} <= words(upright.text)
    assert not {"pelican", "harvest"} & words(as_stored.text)


def test_dark_text_on_a_transparent_background_is_read():
    image = text_image("Pelican harvest", mode="RGBA", background=(0, 0, 0, 0), ink=(0, 0, 0, 255))

    assert {"pelican", "harvest"} <= words(extract(encoded(image), "image/png").text)


def test_encrypted_pdf_is_refused():
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(text_pdf(["Secret plans"]))))
    writer.encrypt(user_password="s3cret", owner_password="0wner")
    out = io.BytesIO()
    writer.write(out)

    with pytest.raises(ExtractionError, match="The PDF is encrypted with a password"):
        extract(out.getvalue(), "application/pdf")


def test_pdf_with_only_an_owner_password_is_read():
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(scanned_pdf(PAGE_ONE))))
    writer.encrypt(user_password="", owner_password="0wner", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)

    assert {"pelican", "harvest"} <= words(extract(out.getvalue(), "application/pdf").text)


def test_pdf_over_the_page_limit_is_refused_before_any_page_is_read(settings):
    settings.KB_MAX_PAGES = 2
    calls, options = progress_recorder()

    with pytest.raises(ExtractionError, match=r"The PDF has 3 pages, over the limit of 2 \(KB_MAX_PAGES\)"):
        extract(scanned_pdf(PAGE_ONE, PAGE_TWO, PAGE_ONE), "application/pdf", ocr_with=options)
    assert calls == []


def test_pdf_page_too_large_to_render_is_a_problem_not_a_crash(settings):
    settings.KB_OCR_DPI = 200
    settings.KB_MAX_IMAGE_PIXELS = 60_000_000
    writer = pypdf.PdfWriter()
    writer.add_blank_page(width=14_400, height=14_400)  # 200 by 200 inches
    out = io.BytesIO()
    writer.write(out)
    document = joined_pdf(text_pdf(["Typed minutes of the meeting"]), out.getvalue())

    extracted = extract(document, "application/pdf")

    assert [section.location for section in extracted.sections] == [{"page": 1}]
    assert extracted.problems == (
        "page 2: too large to OCR (40,000 × 40,000 pixels at 200 dpi, over the limit of 60,000,000, "  # noqa: RUF001
        "KB_MAX_IMAGE_PIXELS)",
    )


def _chinese_font() -> str:
    if not shutil.which("fc-list"):
        return ""
    listed = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True).stdout
    return next((line.split(":")[0].strip() for line in listed.splitlines() if line.strip()), "")


@pytest.mark.skipif(not _chinese_font(), reason="no font with Chinese glyphs on this machine (fc-list :lang=zh)")
def test_simplified_chinese_is_read_with_chi_sim():
    image = Image.new("RGB", (700, 160), "white")
    ImageDraw.Draw(image).text((30, 30), "知识库搜索", font=ImageFont.truetype(_chinese_font(), 64), fill="black")

    extracted = extract(encoded(image), "image/png", ocr_with=OcrOptions(languages="chi_sim"))

    assert "知识" in extracted.text.replace(" ", "")
