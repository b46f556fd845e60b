"""How the API shows knowledge bases, sources and documents."""

from django.db.models import Count
from rest_framework import serializers

from knowledge.models import Document, KnowledgeBase, Source


class KnowledgeBaseOutput(serializers.ModelSerializer):
    documents = serializers.SerializerMethodField()

    class Meta:
        model = KnowledgeBase
        fields = ["slug", "name", "description", "embedder", "dimensions", "language", "ocr_languages", "generation",
                  "documents", "created_at"]

    def get_documents(self, kb) -> int:
        return kb.sources.aggregate(n=Count("documents"))["n"] or 0


class SourceOutput(serializers.ModelSerializer):
    class Meta:
        model = Source
        fields = ["id", "kind", "name", "config", "enabled", "last_synced_at", "last_sync_outcome", "created_at"]


class DocumentOutput(serializers.ModelSerializer):
    class Meta:
        model = Document
        fields = [
            "id",
            "source",
            "key",
            "title",
            "status",
            "chunk_count",
            "size",
            "content_type",
            "error",
            "updated_at",
        ]
