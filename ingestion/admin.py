from django.contrib import admin

from ingestion.models import IngestionJob
from ingestion.services import job_cancel, job_retry


@admin.register(IngestionJob)
class IngestionJobAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "kind",
        "kb",
        "source",
        "status",
        "stage",
        "done",
        "total",
        "failed",
        "skipped",
        "attempts",
        "created_at",
    )
    list_filter = ("status", "kind", "priority", "kb")
    search_fields = ("id", "error", "lease_owner")
    readonly_fields = ("lease_owner", "lease_expires_at", "attempts", "started_at", "finished_at")
    actions = ["cancel_jobs", "retry_jobs"]

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request, queryset):
        jobs = [job_cancel(job=job) for job in queryset.select_related("kb")]
        self.message_user(request, f"Cancel requested for {len(jobs)} job(s); running ones stop at a batch boundary.")

    @admin.action(description="Retry selected jobs (as new jobs)")
    def retry_jobs(self, request, queryset):
        jobs = [job_retry(job=job) for job in queryset.select_related("kb", "source")]
        self.message_user(request, f"Queued {len(jobs)} job(s): {', '.join(str(job.pk) for job in jobs)}.")
