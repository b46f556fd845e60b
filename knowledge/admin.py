"""Django admin for API keys. Knowledge bases, sources and documents are deleted through ingestion
jobs, so their admin pages are ingestion's (ingestion/admin.py)."""

from django.contrib import admin

from knowledge.models import ApiKey


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
