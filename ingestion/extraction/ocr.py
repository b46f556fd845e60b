"""OCR with Tesseract: images (PNG, JPEG, TIFF, GIF, WebP, BMP) to text, and `ocr_image`, which the
PDF reader uses for pages without a text layer.

Tesseract runs as a subprocess (pytesseract), killed when a page takes longer than
`OcrOptions.page_timeout`. A page that fails or times out is a `PageFailed`: the reader notes it
in the document's problems and goes on with the next page. A worker without Tesseract, or without
the data of a language in `KB_OCR_LANGS`, fails the whole document with an `ExtractionError`
that says so, since no page of it could be read.

Images larger than `KB_MAX_IMAGE_PIXELS` are refused from their header, before any pixel is
decoded. Each frame of a multi-frame TIFF or GIF is a page, up to `KB_MAX_PAGES` of them.
"""

import io
import logging
import os
import warnings
from contextlib import contextmanager

import pytesseract
from django.conf import settings
from PIL import Image, ImageOps, UnidentifiedImageError

from ingestion.extraction.text import tidy
from ingestion.extraction.types import ExtractionError, OcrOptions, Section

logger = logging.getLogger(__name__)

#: Fully automatic page layout (Tesseract's default, stated so a changed default cannot surprise us).
TESSERACT_CONFIG = "--psm 3"


class PageFailed(Exception):
    """One page could not be OCR'd (timeout, Tesseract error, too large); the others still can."""


def ocr_image(image: Image.Image, *, ocr_with: OcrOptions) -> str:
    """The text Tesseract reads in `image`, tidied; raises `PageFailed` or `ExtractionError`."""
    _check_languages(ocr_with.languages)
    try:
        with _single_threaded():
            text = pytesseract.image_to_string(
                _grayscale(image), lang=ocr_with.languages, config=TESSERACT_CONFIG, timeout=ocr_with.page_timeout
            )
    except pytesseract.TesseractNotFoundError:
        raise _not_installed()
    except pytesseract.TesseractError as exc:
        if "Failed loading language" in exc.message:  # data present but unreadable (checked just before)
            raise ExtractionError(
                f"Tesseract could not load the OCR languages {ocr_with.languages!r} (KB_OCR_LANGS): {exc.message}"
            )
        raise PageFailed(f"OCR failed: {exc.message or f'Tesseract exited with status {exc.status}'}")
    except RuntimeError as exc:
        if str(exc) != "Tesseract process timeout":  # pytesseract's words when it killed Tesseract
            raise
        raise PageFailed(f"OCR timed out after {ocr_with.page_timeout:g} s")
    return tidy(text)


@contextmanager
def _single_threaded():
    """Run Tesseract on one OpenMP thread unless the environment says otherwise.

    Debian's Tesseract spreads a page over every core with OpenMP, whose threads spin while they
    wait: on 2 cores shared with other processes an A4 page at 200 dpi took 12.6-15.5 s, and
    2.2-2.7 s with `OMP_THREAD_LIMIT=1`. Workers scale by processes, one page each. pytesseract
    passes `os.environ` to Tesseract, so the variable is set around the call only, never for this
    process's own OpenMP users (torch).
    """
    if "OMP_THREAD_LIMIT" in os.environ:
        yield
        return
    os.environ["OMP_THREAD_LIMIT"] = "1"
    try:
        yield
    finally:
        os.environ.pop("OMP_THREAD_LIMIT", None)


def _check_languages(languages: str) -> None:
    """Fail the document at once when Tesseract lacks a requested language.

    Tesseract alone fails only when it can load none of them ("eng+xxx" silently reads English).
    The list is cached per process; a miss asks Tesseract again, in case the data was installed since.
    """
    wanted = {language for language in languages.split("+") if language}
    try:
        if not wanted - set(pytesseract.get_languages(cached=True)):
            return
        installed = set(pytesseract.get_languages())
    except pytesseract.TesseractNotFoundError:
        raise _not_installed()
    if missing := wanted - installed:
        raise ExtractionError(
            f"Tesseract has no data for the OCR language(s) {', '.join(sorted(missing))} (KB_OCR_LANGS is "
            f"{languages!r}; installed: {', '.join(sorted(installed - {'osd'})) or 'none'}). Install the "
            "Debian package tesseract-ocr-<language> on the workers or change KB_OCR_LANGS."
        )


def _not_installed() -> ExtractionError:
    return ExtractionError(
        "Tesseract is not installed on this worker, so images and scanned pages cannot be read "
        "(install the Debian packages tesseract-ocr and its language data, e.g. tesseract-ocr-eng)."
    )


def _grayscale(image: Image.Image) -> Image.Image:
    """Grayscale (all Tesseract reads, and a third of the pixels to hand over), transparent parts made
    white so dark text on a transparent background stays legible."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return image if image.mode == "L" else image.convert("L")


# Images ----------------------------------------------------------------------------------------


def read_image(data: bytes, *, ocr_with: OcrOptions) -> tuple[str, list[Section], list[str]]:
    """Title (none), sections and problems of an image: one section, or one per frame ({"page": n})."""
    image = _open(data)
    frames = getattr(image, "n_frames", 1)
    pages = min(frames, settings.KB_MAX_PAGES)
    problems = []
    if frames > pages:
        problems.append(f"Only the first {pages:,} of {frames:,} frames were read (KB_MAX_PAGES).")
    sections = []
    for index in range(pages):
        number = index + 1
        try:
            text = ocr_image(_frame(image, index, frames), ocr_with=ocr_with)
        except PageFailed as exc:
            if frames == 1:
                problems.append(str(exc))
            else:
                problems.append(f"page {number}: {exc}")
            text = ""
        if ocr_with.on_page:
            ocr_with.on_page(number, pages)
        if text:
            sections.append(Section(text, location={"page": number} if frames > 1 else {}))
    return "", sections, problems


def _open(data: bytes) -> Image.Image:
    cap = settings.KB_MAX_IMAGE_PIXELS
    # Pillow refuses on open images over twice its own cap; keep that cap at least ours, so ours decides.
    if Image.MAX_IMAGE_PIXELS is not None and cap > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = cap
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below, with the size
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ExtractionError(
            f"The image has more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, over the limit of {cap:,} "
            "(KB_MAX_IMAGE_PIXELS)."
        )
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ExtractionError(f"The image could not be read ({type(exc).__name__}: {exc}).")
    _check_size(image)
    return image


def _check_size(image: Image.Image) -> None:
    width, height = image.size
    if width * height > settings.KB_MAX_IMAGE_PIXELS:
        raise ExtractionError(
            f"The image is {width:,} × {height:,} pixels, over the limit of {settings.KB_MAX_IMAGE_PIXELS:,} "  # noqa: RUF001
            "(KB_MAX_IMAGE_PIXELS)."
        )


def _frame(image: Image.Image, index: int, frames: int) -> Image.Image:
    """Frame `index`, decoded and turned upright as its EXIF says (phone photos are stored sideways)."""
    try:
        image.seek(index)
        _check_size(image)  # each TIFF frame has its own size
        return ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        logger.info("image frame %d/%d not decoded: %r", index + 1, frames, exc)
        if frames == 1:
            raise ExtractionError(f"The image could not be decoded ({type(exc).__name__}: {exc}).")
        raise PageFailed(f"could not be decoded ({type(exc).__name__}: {exc})")
