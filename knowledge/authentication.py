"""`Authorization: Bearer kb_<prefix>_<secret>` authentication for the API.

A key is read with the knowledge bases granted to it in one query, and kept by the process until
a key, grant or knowledge base changes (`knowledge.keycache`): a revoked key, a changed scope or
grant takes effect on the next request. The grants come with each knowledge base's id, generation
and embedder (`ApiKey.granted`), so the search and ask services need no second query for a key's
own knowledge bases.
"""

from dataclasses import dataclass
from functools import cache

from django.contrib.auth.models import AnonymousUser
from django.db import connection
from rest_framework import authentication, exceptions

from knowledge.keycache import cached_key
from knowledge.models import ApiKey, KnowledgeBase


@dataclass(frozen=True)
class GrantedKb:
    """A knowledge base granted to the authenticated key, as it was when the request began."""

    id: int
    slug: str
    generation: int
    embedder: str
    language: str


class ApiKeyUser(AnonymousUser):
    """The request's user when it authenticated with an API key (not a Django user)."""

    def __init__(self, api_key: ApiKey):
        super().__init__()
        self.api_key = api_key

    @property
    def is_authenticated(self) -> bool:  # type: ignore[override]
        return True

    def __str__(self) -> str:
        return f"apikey:{self.api_key.prefix}"


def _key_grant_table() -> tuple[str, str, str]:
    """The table granting API keys their knowledge bases, with its key and knowledge-base columns.

    For the plain-SQL read below, which joins it by name.
    """
    through = ApiKey.knowledge_bases.through._meta
    return through.db_table, through.get_field("apikey").column, through.get_field("knowledgebase").column


def parse_key(raw: str) -> tuple[str, str] | None:
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != "kb" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


@cache
def _key_sql() -> str:
    key_columns = ", ".join(f"k.{field.column}" for field in ApiKey._meta.concrete_fields)
    grant_table, key_column, kb_column = _key_grant_table()
    return (
        f"SELECT {key_columns}, kb.id, kb.slug, kb.generation, kb.embedder, kb.language FROM {ApiKey._meta.db_table} k "
        f"LEFT JOIN {grant_table} g ON g.{key_column} = k.id "
        f"LEFT JOIN {KnowledgeBase._meta.db_table} kb ON kb.id = g.{kb_column} "
        f"WHERE k.prefix = %s"
    )


def load_key(prefix: str) -> ApiKey | None:
    """The key with this prefix and its grants (`key.granted`: slug -> GrantedKb), in one query.

    Plain SQL because it runs on every API request: the ORM spent longer compiling the lookup
    (and a prefetch would be a second round trip) than PostgreSQL spent answering it.
    """
    with connection.cursor() as cursor:
        cursor.execute(_key_sql(), [prefix])
        rows = cursor.fetchall()
    if not rows:
        return None
    fields = ApiKey._meta.concrete_fields
    values = [
        # What the ORM's converters do, e.g. jsonb arrives as text and JSONField decodes it.
        field.from_db_value(value, None, connection) if hasattr(field, "from_db_value") else value
        for field, value in zip(fields, rows[0], strict=False)
    ]
    key = ApiKey.from_db(connection.alias, [field.attname for field in fields], values)
    grants = (row[len(fields):] for row in rows)
    key.granted = {slug: GrantedKb(kb_id, slug, generation, embedder, language)
                   for kb_id, slug, generation, embedder, language in grants if kb_id is not None}
    return key


def authenticate_key(raw: str) -> ApiKey:
    """The live key for a raw `kb_...` string, or AuthenticationFailed. Used by HTTP and WebSockets."""
    parsed = parse_key(raw.strip())
    if parsed is None:
        raise exceptions.AuthenticationFailed("Malformed API key.")
    prefix, secret = parsed
    key = cached_key(prefix, secret, load_key)
    # Compare even when the prefix is unknown, so timing does not tell which prefixes exist.
    if key is None:
        ApiKey(secret_hash="0" * 64).matches(secret)
        raise exceptions.AuthenticationFailed("Invalid API key.")
    if not key.matches(secret) or key.revoked:
        raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
    key.touch()
    return key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode(errors="replace")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != self.keyword.lower():
            return None
        key = authenticate_key(raw)
        return ApiKeyUser(key), key

    def authenticate_header(self, request) -> str:
        return self.keyword
