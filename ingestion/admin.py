from django.contrib import admin

from ingestion.models import IngestionJob


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
