"""Test support for the search API tests: small knowledge bases ingested through the real pipeline."""

import uuid

from ingestion.services import source_add, store_upload
from ingestion.tasks import run_ingestion_job
from knowledge.models import Document, KnowledgeBase, Source
from knowledge.services import api_key_create, knowledge_base_create
from search.indexer import refresh

SEARCH_URL = "/api/v1/search"


def make_kb(prefix: str = "s") -> KnowledgeBase:
    """A knowledge base with a unique slug and the hashing embedder."""
    slug = f"{prefix}-{uuid.uuid4().hex[:10]}"
    return knowledge_base_create(slug=slug, name=slug, embedder="hashing")


def ingest(kb: KnowledgeBase, documents: dict[str, str], name: str = "docs") -> Source:
    """One Markdown file per entry (`{title: body}`), ingested in-process; the index refreshed after."""
    files = [
        store_upload(data=f"# {title}\n\n{body}".encode(), filename=f"{title.lower().replace(' ', '-')}.md",
                     content_type="text/markdown")
        for title, body in documents.items()
    ]
    source, job = source_add(kb=kb, kind="file", name=name, config={"files": files})
    run_ingestion_job(job.pk)
    # The pipeline leaves visibility to the index's refresh interval; tests must not wait for it.
    refresh()
    assert source.documents.filter(status="indexed").count() == len(documents)
    return source


def document_id(kb: KnowledgeBase, title: str) -> int:
    return Document.objects.get(source__kb=kb, title=title).pk


def bearer(kb_slugs: list[str], scopes: tuple[str, ...] = ("search",), rate: str | None = None) -> dict:
    """Test-client headers for a new API key on these knowledge bases."""
    _, raw = api_key_create(name="test", kb_slugs=kb_slugs, scopes=list(scopes), rate=rate)
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
