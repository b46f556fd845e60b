from django.contrib import admin

from kbportal.claiming import one_line
from knowledge.models import ApiKey, Document, KnowledgeBase, Source


class DeleteThroughJobsAdmin(admin.ModelAdmin):
    """Deleting here deletes as the dashboard and the API do: the rows at once, then a job removes
    the chunks from the search index and the stored files (`ingestion.services`)."""

    def delete_model(self, request, obj):
        self.delete_queryset(request, type(obj).objects.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        # knowledge must not import ingestion at module level (dependencies point ingestion -> knowledge).
        from ingestion import services

        jobs = self.delete_through_jobs(services, queryset)
        self.message_user(request, f"Job(s) {', '.join(str(job.pk) for job in jobs)} remove the search index entries "
                                   "and stored files of what was deleted.")


@admin.register(KnowledgeBase)
class KnowledgeBaseAdmin(DeleteThroughJobsAdmin):
    list_display = ("slug", "name", "embedder", "dimensions", "generation", "updated_at")
    search_fields = ("slug", "name", "description")
    list_filter = ("embedder",)

    def delete_through_jobs(self, services, queryset):
        return [services.knowledge_base_delete(kb=kb) for kb in queryset]


@admin.register(Source)
class SourceAdmin(DeleteThroughJobsAdmin):
    list_display = ("id", "name", "kb", "kind", "enabled", "last_synced_at", "last_sync_outcome")
    list_filter = ("kind", "enabled", "kb")
    search_fields = ("name",)
    actions = ["sync_sources"]

    @admin.action(description="Sync selected sources now")
    def sync_sources(self, request, queryset):
        # knowledge must not import ingestion at module level (dependencies point ingestion -> knowledge).
        from ingestion.services import source_sync

        jobs = [source_sync(source=source) for source in queryset.filter(enabled=True).select_related("kb")]
        self.message_user(request, f"Queued {len(jobs)} sync job(s); disabled sources are skipped.")

    def delete_through_jobs(self, services, queryset):
        return [services.source_delete(source=source) for source in queryset.select_related("kb")]


@admin.register(Document)
class DocumentAdmin(DeleteThroughJobsAdmin):
    list_display = ("id", "title", "source", "status", "chunk_count", "size", "updated_at", "error_line")
    list_filter = ("status", "source__kb", "content_type")
    search_fields = ("title", "key", "sha256")
    readonly_fields = ("sha256", "object_key", "indexed_at")

    @admin.display(description="error")
    def error_line(self, document) -> str:
        return one_line(document.error) or "—"

    def delete_through_jobs(self, services, queryset):
        by_kb = {}
        for document in queryset.select_related("source__kb"):
            by_kb.setdefault(document.source.kb, []).append(document)
        return [services.documents_delete(kb=kb, documents=documents) for kb, documents in by_kb.items()]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "scopes", "rate", "revoked", "last_used_at", "created_at")
    list_filter = ("revoked",)
    search_fields = ("name", "prefix")
    readonly_fields = ("prefix", "secret_hash", "last_used_at")
    filter_horizontal = ("knowledge_bases",)
    actions = ["revoke"]

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        count = queryset.update(revoked=True)
        self.message_user(request, f"Revoked {count} key(s).")
