"""Django admin for claimable jobs (ingestion jobs, answer tasks): read-only pages that show the
status in colour, the one-line reason of a failure and when it happened.

A job's row is written only by its worker and the services (claim, lease, cancel, retry): the
admin adds and edits nothing, and acts only through each admin's own actions.
"""

from django.contrib import admin
from django.utils.html import format_html

from kbportal.claiming import JobStatus

STATUS_COLOURS = {
    JobStatus.QUEUED: "#5a6478",
    JobStatus.RUNNING: "#1f5fbf",
    JobStatus.SUCCEEDED: "#1e7b34",
    JobStatus.FAILED: "#b3261e",
    JobStatus.CANCELED: "#8a5a00",
}


class ReadOnlyJobAdmin(admin.ModelAdmin):
    """Lists and shows jobs; subclasses add `list_display` around the columns below."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="status", ordering="status")
    def status_coloured(self, job) -> str:
        return format_html(
            '<strong style="color: {}">{}</strong>', STATUS_COLOURS.get(job.status, "inherit"), job.status
        )

    @admin.display(description="error")
    def reason_line(self, job) -> str:
        if not job.reason_line:
            return "—"
        colour = STATUS_COLOURS[JobStatus.FAILED] if job.status == JobStatus.FAILED else "inherit"
        # A readable width: the changelist squeezes its columns between the two sidebars.
        return format_html(
            '<span style="display: block; min-width: 20em; color: {}">{}</span>', colour, job.reason_line
        )

    @admin.display(description="when", ordering="finished_at")
    def when(self, job):
        return job.finished_or_created_at
