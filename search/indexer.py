"""Writing chunks: bulk upsert under deterministic ids and deleting what a document no longer has.

A chunk's id is derived from its document and position, so re-running a document (rq may deliver a
job twice) overwrites the same chunks instead of duplicating them; `delete_stale_chunks` then
removes the positions beyond the new chunk count. Each chunk is written with its keyword-search
terms, analysed in its knowledge base's language (`search.analysis`).

Deleting searches the matching ids and bulk-deletes them, rather than `_delete_by_query`: that
endpoint belongs to the reindex module, which Elasticsearch's minimal distribution does not have.
"""

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from django.conf import settings
from elasticsearch import helpers
from elasticsearch_dsl import Q, Search
from elasticsearch_dsl.query import Query

from search.analysis import DEFAULT_LANGUAGE, analyze
from search.client import SearchError, SearchUnavailable, get_client, is_missing_index, unavailable_on_failure
from search.index import DEFAULT_DIMS, alias_name, ensure_index

REQUIRED_FIELDS = ("kb", "source", "document", "title", "content", "position")
OPTIONAL_FIELDS = ("tags", "created", "updated", "url", "key", "embedding", "section", "location")

#: Aliases this process has already ensured, so bulk writes never auto-create a concrete index.
_ensured: set[str] = set()


def chunk_id(document_id: int | str, position: int) -> str:
    return f"{document_id}-{position}"


def _chunk_source(chunk: dict, indexed_at: str, language: str) -> dict:
    missing = [field for field in REQUIRED_FIELDS if chunk.get(field) is None]
    if missing:
        raise ValueError(f"chunk is missing {', '.join(missing)}")
    source = {field: chunk[field] for field in OPTIONAL_FIELDS if chunk.get(field) is not None}
    source.update(
        kb=str(chunk["kb"]),
        source=str(chunk["source"]),
        document=str(chunk["document"]),
        title=chunk["title"],
        content=chunk["content"],
        position=int(chunk["position"]),
        tags=list(chunk.get("tags") or []),
        title_terms=analyze(" ".join(filter(None, (chunk["title"], chunk.get("section")))), language=language),
        content_terms=analyze(chunk["content"], language=language),
        indexed_at=indexed_at,
    )
    return source


def _ensure_alias(chunks: list[dict]) -> None:
    alias = alias_name()
    if alias in _ensured:
        return
    embedding = next((chunk["embedding"] for chunk in chunks if chunk.get("embedding")), None)
    ensure_index(len(embedding) if embedding else DEFAULT_DIMS)
    _ensured.add(alias)


def forget_ensured() -> None:
    """Tests drop indices under a live process: make the next write ensure the alias again."""
    _ensured.clear()


def bulk_upsert(chunks: Iterable[dict], *, language: str = DEFAULT_LANGUAGE, refresh: bool | str = False) -> int:
    """Index (create or overwrite) chunks under `chunk_id(document, position)`; return how many.

    `language` is the chunks' knowledge base's: it decides how their text becomes terms.

    Raises SearchUnavailable when Elasticsearch cannot take the writes now (connection error,
    timeout, 429/5xx for the request or for every rejected item) and SearchError naming the first
    rejected chunk when items are refused for a reason retrying will not fix (for example vectors
    whose size differs from the index).
    """
    chunks = list(chunks)
    if not chunks:
        return 0
    indexed_at = datetime.now(UTC).isoformat()
    sources = [_chunk_source(chunk, indexed_at, language) for chunk in chunks]
    _ensure_alias(chunks)
    alias = alias_name()
    actions = [
        {"_index": alias, "_id": chunk_id(source["document"], source["position"]), "_source": source}
        for source in sources
    ]
    client = get_client().options(request_timeout=settings.KB_ES_BULK_TIMEOUT)
    with unavailable_on_failure("bulk upsert"):
        # require_alias: a write must never auto-create a concrete index named like the alias.
        done, errors = helpers.bulk(
            client, actions, chunk_size=500, raise_on_error=False, refresh=refresh, require_alias=True
        )
    if errors:
        statuses = [next(iter(error.values())).get("status", 0) for error in errors]
        summary = f"{len(errors)} of {len(actions)} chunks rejected; first: {errors[0]}"[:1000]
        if all(status == 429 or status >= 500 for status in statuses):
            raise SearchUnavailable(summary)
        raise SearchError(summary)
    return done


def _delete_matching(query: Query, *, refresh: bool) -> int:
    """Delete every chunk matching `query`; return how many were deleted.

    A search sees only what the last refresh published, so chunks written since would survive:
    refresh first. The ids are read with a scroll (no vectors, no source) and deleted in bulk.
    """
    client = get_client().options(request_timeout=settings.KB_ES_BULK_TIMEOUT)
    alias = alias_name()
    try:
        with unavailable_on_failure("delete chunks"):
            client.indices.refresh(index=alias)
            matching = Search(using=client, index=alias).query(Q("bool", filter=[query])).source(False)
            actions = (
                {"_op_type": "delete", "_index": hit.meta.index, "_id": hit.meta.id}
                for hit in matching.params(size=1000).scan()
            )
            deleted, errors = helpers.bulk(
                client, actions, chunk_size=1000, raise_on_error=False, ignore_status=(404,), refresh=refresh
            )
    except SearchError as error:
        if is_missing_index(error):
            return 0  # no index yet: nothing to delete
        raise
    if errors:
        raise SearchUnavailable(f"{len(errors)} chunks could not be deleted; first: {errors[0]}"[:1000])
    return deleted


def delete_stale_chunks(document_id: int | str, keep_count: int, *, refresh: bool = False) -> int:
    """Delete the document's chunks at positions >= keep_count (left over from a longer version)."""
    query = Q("term", document=str(document_id)) & Q("range", position={"gte": keep_count})
    return _delete_matching(query, refresh=refresh)


def delete_document_chunks(document_ids: list[int | str], *, refresh: bool = False) -> int:
    if not document_ids:
        return 0
    return _delete_matching(Q("terms", document=[str(i) for i in document_ids]), refresh=refresh)


def delete_source_chunks(source_id: int | str, *, refresh: bool = False) -> int:
    return _delete_matching(Q("term", source=str(source_id)), refresh=refresh)


def delete_kb_chunks(kb_id: int | str, *, refresh: bool = False) -> int:
    return _delete_matching(Q("term", kb=str(kb_id)), refresh=refresh)


def refresh() -> None:
    """Make recent writes searchable now (tests, the end of an ingestion run)."""
    with unavailable_on_failure("refresh"):
        get_client().indices.refresh(index=alias_name())


def chunk_owners(*, page_size: int = 1000) -> Iterator[tuple[str, str]]:
    """Every (document id, knowledge base id) pair the index holds chunks of, page by page (a
    composite aggregation: bounded memory whatever the index size)."""
    client = get_client().options(request_timeout=settings.KB_ES_BULK_TIMEOUT)
    sources = [{"document": {"terms": {"field": "document"}}}, {"kb": {"terms": {"field": "kb"}}}]
    after = {}
    while True:
        search = Search(using=client, index=alias_name()).extra(size=0)
        search.aggs.bucket("owners", "composite", size=page_size, sources=sources, **after)
        try:
            with unavailable_on_failure("list chunk owners"):
                owners = search.execute().aggregations.owners
        except SearchError as error:
            if is_missing_index(error):
                return  # no index yet
            raise
        for bucket in owners.buckets:
            yield bucket.key.document, bucket.key.kb
        if not owners.buckets or "after_key" not in owners:
            return
        after = {"after": owners.after_key.to_dict()}


def rekey_document_chunks(kb_of_document: dict[str, str], *, refresh: bool = False) -> int:
    """File each listed document's chunks under the given knowledge base id; return how many moved."""
    if not kb_of_document:
        return 0
    client = get_client().options(request_timeout=settings.KB_ES_BULK_TIMEOUT)
    alias = alias_name()
    with unavailable_on_failure("rekey chunks"):
        client.indices.refresh(index=alias)
        matching = Search(using=client, index=alias).query(
            Q("bool", filter=[Q("terms", document=list(kb_of_document))])
        ).source(["document", "kb"])
        actions = (
            {"_op_type": "update", "_index": hit.meta.index, "_id": hit.meta.id,
             "doc": {"kb": kb_of_document[hit.document]}}
            for hit in matching.params(size=1000).scan()
            if hit.kb != kb_of_document[hit.document]
        )
        updated, errors = helpers.bulk(client, actions, chunk_size=1000, raise_on_error=False, refresh=refresh)
    if errors:
        raise SearchUnavailable(f"{len(errors)} chunks could not be rekeyed; first: {errors[0]}"[:1000])
    return updated


def kb_chunk_count(kb_id: int | str) -> int:
    """How many chunks the index holds for a knowledge base (0 when there is no index yet)."""
    try:
        with unavailable_on_failure("count chunks"):
            return get_client().count(index=alias_name(), query={"term": {"kb": str(kb_id)}})["count"]
    except SearchError as error:
        if is_missing_index(error):
            return 0
        raise


def document_chunks(document_id: int | str) -> list[dict]:
    """A document's chunks as indexed, in order: content, title, section, location and position
    (no vectors); [] when there is no index yet."""
    search = (
        Search(using=get_client(), index=alias_name())
        .query(Q("bool", filter=[Q("term", document=str(document_id))]))
        .source(["content", "title", "section", "location", "position"])
        .sort("position")
    )
    try:
        with unavailable_on_failure("read a document's chunks"):
            return [hit.to_dict() for hit in search.params(size=1000).scan()]
    except SearchError as error:
        if is_missing_index(error):
            return []
        raise
