from django.contrib import admin

from knowledge.models import ApiKey, Document, KnowledgeBase, Source


@admin.register(KnowledgeBase)
class KnowledgeBaseAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "embedder", "dimensions", "generation", "updated_at")
    search_fields = ("slug", "name", "description")
    list_filter = ("embedder",)


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
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


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "source", "status", "chunk_count", "size", "updated_at")
    list_filter = ("status", "source__kb", "content_type")
    search_fields = ("title", "key", "sha256")
    readonly_fields = ("sha256", "object_key", "indexed_at")


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
