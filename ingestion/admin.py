"""Django admin for ingestion jobs, and for knowledge bases, sources and documents, whose deletes
and syncs go through ingestion jobs."""

from django.contrib import admin
from django.utils.html import format_html, format_html_join

from ingestion.models import IngestionJob
from ingestion.services import (
    documents_delete,
    job_cancel,
    job_retry,
    knowledge_base_delete,
    source_delete,
    source_sync,
)
from kbportal.claiming import one_line
from kbportal.job_admin import ReadOnlyJobAdmin
from knowledge.models import Document, KnowledgeBase, Source


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


class DeleteThroughJobsAdmin(admin.ModelAdmin):
    """Deleting here deletes as the dashboard and the API do: the rows at once, then a job removes
    the chunks from the search index and the stored files."""

    def delete_model(self, request, obj):
        self.delete_queryset(request, type(obj).objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        jobs = self.delete_through_jobs(queryset)
        self.message_user(request, f"Job(s) {', '.join(str(job.pk) for job in jobs)} remove the search index entries "
                                   "and stored files of what was deleted.")


@admin.register(KnowledgeBase)
class KnowledgeBaseAdmin(DeleteThroughJobsAdmin):
    list_display = ("slug", "name", "embedder", "dimensions", "generation", "updated_at")
    search_fields = ("slug", "name", "description")
    list_filter = ("embedder",)

    def delete_through_jobs(self, queryset):
        return [knowledge_base_delete(kb=kb) for kb in queryset]


@admin.register(Source)
class SourceAdmin(DeleteThroughJobsAdmin):
    list_display = ("id", "name", "kb", "kind", "enabled", "last_synced_at", "last_sync_outcome")
    list_filter = ("kind", "enabled", "kb")
    search_fields = ("name",)
    actions = ["sync_sources"]

    @admin.action(description="Sync selected sources now")
    def sync_sources(self, request, queryset):
        jobs = [source_sync(source=source) for source in queryset.filter(enabled=True).select_related("kb")]
        self.message_user(request, f"Queued {len(jobs)} sync job(s); disabled sources are skipped.")

    def delete_through_jobs(self, queryset):
        return [source_delete(source=source) for source in queryset.select_related("kb")]


@admin.register(Document)
class DocumentAdmin(DeleteThroughJobsAdmin):
    list_display = ("id", "title", "source", "status", "chunk_count", "size", "updated_at", "error_line")
    list_filter = ("status", "source__kb", "content_type")
    search_fields = ("title", "key", "sha256")
    readonly_fields = ("sha256", "object_key", "indexed_at")

    @admin.display(description="error")
    def error_line(self, document) -> str:
        return one_line(document.error) or "—"

    def delete_through_jobs(self, queryset):
        by_kb = {}
        for document in queryset.select_related("source__kb"):
            by_kb.setdefault(document.source.kb, []).append(document)
        return [documents_delete(kb=kb, documents=documents) for kb, documents in by_kb.items()]
