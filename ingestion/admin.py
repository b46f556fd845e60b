from django.contrib import admin
from django.utils.html import format_html, format_html_join

from ingestion.models import IngestionJob
from ingestion.services import job_cancel, job_retry
from kbportal.job_admin import ReadOnlyJobAdmin


@admin.register(IngestionJob)
class IngestionJobAdmin(ReadOnlyJobAdmin):
    """Jobs are read-only here: they change only through the cancel and retry actions."""

    list_display = (
        "id",
        "status_coloured",
        "reason_line",
        "when",
        "kind",
        "kb",
        "source",
        "stage",
        "done",
        "total",
        "failed",
        "skipped",
        "attempts",
    )
    list_filter = ("status", "kind", "priority", "kb")
    search_fields = ("id", "error", "lease_owner")
    list_select_related = ("kb", "source")
    exclude = ("recent_errors",)
    readonly_fields = ("document_errors",)
    actions = ["cancel_jobs", "retry_jobs"]

    @admin.display(description="document errors (the last 20)")
    def document_errors(self, job) -> str:
        if not job.recent_errors:
            return "—"
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td></tr>", ((item["document"], item["error"]) for item in job.recent_errors)
        )
        return format_html("<table><tr><th>document</th><th>error</th></tr>{}</table>", rows)

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request, queryset):
        jobs = [job_cancel(job=job) for job in queryset.select_related("kb")]
        self.message_user(request, f"Cancel requested for {len(jobs)} job(s); running ones stop at a batch boundary.")

    @admin.action(description="Retry selected jobs (as new jobs)")
    def retry_jobs(self, request, queryset):
        jobs = [job_retry(job=job) for job in queryset.select_related("kb", "source")]
        self.message_user(request, f"Queued {len(jobs)} job(s): {', '.join(str(job.pk) for job in jobs)}.")
