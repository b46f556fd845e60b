"""The check every uploaded file passes before anything is stored: its kind and its size; its safe name.

The upload API, the dashboard's file form and `manage.py addsource --file` share it, so they
accept and refuse the same files with the same words. A batch is all or nothing: when one file is
refused, none is stored, and the refusal says so and lists each refused file with its reason.
"""

from dataclasses import dataclass
from typing import Protocol

from django.conf import settings

from ingestion.extraction import unsupported_reason
from kbportal.errors import DomainError


class Upload(Protocol):
    """What the check reads of a file; Django's uploaded files have these."""

    name: str
    content_type: str | None
    size: int


@dataclass(frozen=True)
class LocalFile:
    """A file of this machine offered as an upload (`addsource --file`)."""

    name: str
    content_type: str
    size: int


class UploadRefused(DomainError):
    """Files of an upload that cannot be accepted (413 when one is too large, else 415); nothing of
    the upload was stored. `fields["file"]` lists each refused file with its reason."""

    def __init__(self, refusals: dict[str, str], *, total: int, too_large: bool):
        self.refusals = refusals
        self.too_large = too_large
        self.status_code = 413 if too_large else 415
        self.code = "payload_too_large" if too_large else "unsupported_media_type"
        names = ", ".join(refusals)
        refused = f"{len(refusals)} of {total} files were" if total > 1 else "the file was"
        self.summary = f"Nothing was stored: {refused} refused ({names})."
        super().__init__(self.summary, fields={"file": self.reasons})

    @property
    def reasons(self) -> list[str]:
        """One line per refused file: "<name>: <reason>"."""
        return [f"{name}: {reason}" for name, reason in self.refusals.items()]

    def __str__(self) -> str:
        return " ".join([self.summary, *self.reasons])


def refusal_reason(upload: Upload) -> str:
    """Why this file cannot be accepted, in words; "" when it can."""
    limit = settings.KB_MAX_UPLOAD_BYTES
    if upload.size > limit:
        return f"it is {upload.size:,} bytes, over the limit of {limit:,} bytes."
    return unsupported_reason(upload.content_type or "", upload.name)


def check_uploads(uploads: list[Upload]) -> None:
    """Raise `UploadRefused` when any file cannot be accepted (the whole batch is refused)."""
    refusals = {}
    too_large = False
    for upload in uploads:
        reason = refusal_reason(upload)
        if reason:
            refusals[upload.name] = reason
            too_large = too_large or upload.size > settings.KB_MAX_UPLOAD_BYTES
    if refusals:
        raise UploadRefused(refusals, total=len(uploads), too_large=too_large)


def safe_filename(name: str) -> str:
    """The last path component only: a file name never names a place on our disks."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip().lstrip(".")
    return base[:255] or "upload"
