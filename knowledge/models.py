"""Knowledge bases, their sources and documents, and API keys: PostgreSQL is the truth."""

import hashlib
import re
import secrets

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import F
from django.utils import timezone

from knowledge.keycache import bump_epoch
from knowledge.source_config import validate_source_config

RATE_VALIDATOR = RegexValidator(r"^\d+/[smhd]$", "Use a rate such as 50/s, 600/m or 10000/h.")


class AuthReadQuerySet(models.QuerySet):
    """A queryset of rows authentication reads: its `update` moves the key-cache epoch on (knowledge.keycache)."""

    #: Fields authentication does not read: updating only these keeps the cached keys.
    fields_not_read: frozenset[str] = frozenset()

    def update(self, **kwargs):
        count = super().update(**kwargs)
        if set(kwargs) - self.fields_not_read:
            bump_epoch()
        return count


class ApiKeyQuerySet(AuthReadQuerySet):
    fields_not_read = frozenset({"last_used_at"})


class Language(models.TextChoices):
    """Languages a knowledge base's text can be analysed in for keyword search (search.analysis)."""

    ENGLISH = "english", "English"
    FRENCH = "french", "French"
    GERMAN = "german", "German"
    SPANISH = "spanish", "Spanish"
    ITALIAN = "italian", "Italian"
    PORTUGUESE = "portuguese", "Portuguese"
    DUTCH = "dutch", "Dutch"
    SWEDISH = "swedish", "Swedish"
    RUSSIAN = "russian", "Russian"
    NONE = "none", "Other (words as written, no stemming)"


def validate_ocr_languages(value: str) -> None:
    """Tesseract language names ("eng", "chi_sim") joined by "+"; whether their data is installed
    is checked when a page is OCR'd, where the document then fails naming the missing one."""
    if value and not re.fullmatch(r"[a-z][a-z_]*(\+[a-z][a-z_]*)*", value):
        raise ValidationError('Tesseract language names joined by "+", such as eng or eng+chi_sim.')


class KnowledgeBase(models.Model):
    """A searchable collection (one tenant's content): its sources, their documents, one embedder.

    Its chunks in the search index are filed under its id, never its slug, so a new knowledge base
    given a deleted one's slug sees nothing of the old one.
    """

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    embedder = models.CharField(max_length=64, default="minilm")
    language = models.CharField(
        max_length=32, choices=Language.choices, default=Language.ENGLISH,
        help_text="How keyword search splits and stems this knowledge base's text (and its queries).",
    )
    ocr_languages = models.CharField(
        max_length=100, blank=True, default="", validators=[validate_ocr_languages],
        help_text='Tesseract languages for scans and photos, joined by "+" (eng, chi_sim, eng+chi_sim); '
                  "empty: the KB_OCR_LANGS setting.",
    )
    dimensions = models.PositiveIntegerField(default=384)
    #: Bumped whenever the indexed content changes, so cached search results never go stale.
    generation = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AuthReadQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def bump_generation(self) -> None:
        KnowledgeBase.objects.filter(pk=self.pk).update(generation=F("generation") + 1)


class SourceKind(models.TextChoices):
    TEXT = "text"
    FILE = "file"
    URL = "url"


class Source(models.Model):
    """Where a knowledge base's documents come from: pasted text, uploaded files or a web site.

    `config` holds what its kind needs (a crawl's start URL, scope and limits, a sync schedule).
    """

    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="sources")
    kind = models.CharField(max_length=16, choices=SourceKind.choices)
    name = models.CharField(max_length=200)
    config = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    last_sync_outcome = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kb", "id"]

    def __str__(self) -> str:
        return f"{self.kb.slug}/{self.name}"

    def clean(self) -> None:
        self.config = validate_source_config(self.kind, self.config)


class DocumentStatus(models.TextChoices):
    PENDING = "pending"
    INDEXED = "indexed"
    FAILED = "failed"


class Document(models.Model):
    """One item of a source (a page, a file, a text), its stored bytes and its indexing state.

    `key` identifies it within the source across syncs; `sha256` and `object_key` address its raw
    bytes in the object store; its chunks live in the search index only.
    """

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="documents")
    key = models.CharField(max_length=2000, help_text="Stable identity within the source: URL or file name.")
    title = models.CharField(max_length=500, blank=True, default="")
    sha256 = models.CharField(max_length=64, blank=True, default="", db_index=True)
    object_key = models.CharField(max_length=200, blank=True, default="", db_index=True)
    size = models.PositiveBigIntegerField(default=0)
    content_type = models.CharField(max_length=200, blank=True, default="")
    status = models.CharField(
        max_length=16, choices=DocumentStatus.choices, default=DocumentStatus.PENDING, db_index=True
    )
    chunk_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    indexed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["source", "id"]
        constraints = [models.UniqueConstraint(fields=["source", "key"], name="document_unique_key_per_source")]

    def __str__(self) -> str:
        return self.title or self.key


class Scope(models.TextChoices):
    SEARCH = "search"
    INGEST = "ingest"
    ASK = "ask"
    OPS = "ops"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKey(models.Model):
    """An API key: `kb_<prefix>_<secret>`. Only the prefix and a hash of the secret are stored."""

    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    knowledge_bases = models.ManyToManyField(KnowledgeBase, related_name="api_keys", blank=True)
    scopes = models.JSONField(default=list, blank=True)
    rate = models.CharField(max_length=20, default="50/s", validators=[RATE_VALIDATOR])
    revoked = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    def clean(self) -> None:
        unknown = set(self.scopes or []) - set(Scope.values)
        if unknown or not self.scopes:
            raise ValidationError({"scopes": f"Choose scopes among {', '.join(Scope.values)}."})

    @staticmethod
    def generate() -> tuple[str, str, str]:
        """A new (prefix, secret, full key) triple."""
        prefix = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        return prefix, secret, f"kb_{prefix}_{secret}"

    def matches(self, secret: str) -> bool:
        return secrets.compare_digest(self.secret_hash, hash_secret(secret))

    def has_scope(self, scope: str) -> bool:
        return scope in (self.scopes or [])

    def touch(self) -> None:
        now = timezone.now()
        if not self.last_used_at or (now - self.last_used_at).total_seconds() > 60:
            ApiKey.objects.filter(pk=self.pk).update(last_used_at=now)
            self.last_used_at = now  # this instance may serve the next requests (knowledge.keycache)
