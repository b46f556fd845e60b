"""The chunk index: its mapping and its lifecycle behind one alias.

Searches and writes always go through the alias `settings.KB_ES_INDEX`; the alias points at exactly
one concrete index named `<alias>-v<N>`. The first index is always `<alias>-v1`, so two processes
racing to create it collide on the name instead of leaving the alias on two indices. A rebuild
creates `<alias>-v<N+1>`, copies every chunk, swaps the alias in one `_aliases` call (remove + add,
atomic for readers) and deletes the old index.
"""

import logging
import re
from datetime import UTC, datetime

from django.conf import settings
from elasticsearch import BadRequestError, NotFoundError, helpers
from elasticsearch_dsl import Date, DenseVector, Document, Index, Integer, Keyword, MetaField, Object, Text

from search.client import SearchError, SearchUnavailable, get_client, is_missing_index, unavailable_on_failure

logger = logging.getLogger(__name__)

DEFAULT_DIMS = 384


def alias_name() -> str:
    return settings.KB_ES_INDEX


def embedding_field(dims: int) -> DenseVector:
    """The vector field. `index_options` is explicit because Elasticsearch changed the dense_vector
    defaults in 8.14 and again in 9.1; pinning them keeps every cluster alike."""
    return DenseVector(
        dims=dims, index=True, similarity="cosine",
        index_options={"type": "int8_hnsw", "m": 16, "ef_construction": 100},
    )


class Chunk(Document):
    """One chunk of a document as the index holds it: filter fields, the text shown, the terms
    keyword search matches (made by `search.analysis`) and the embedding kNN search compares."""

    #: The knowledge base's id, never its slug: a deleted knowledge base's slug can be reused.
    kb = Keyword()
    source = Keyword()
    document = Keyword()
    tags = Keyword(multi=True)
    #: Shown and used for snippets, never searched: keyword search matches the `*_terms` fields.
    title = Text(index=False)
    content = Text(index=False)
    title_terms = Text(analyzer="whitespace")
    content_terms = Text(analyzer="whitespace")
    position = Integer()
    #: The heading path the chunk sits under ("Results > Costs"); searched through `title_terms`.
    section = Text(index=False)
    #: Where the chunk is in its document, as citations show it: {"page": 3}, {"slide": 5},
    #: {"sheet": "Budget", "rows": [10, 19]}; stored, never searched.
    location = Object(enabled=False)
    url = Keyword(index=False)
    key = Keyword(index=False)
    created = Date()
    updated = Date()
    #: When this chunk was written: lets a rebuild catch up on writes made while it copied.
    indexed_at = Date()
    embedding = embedding_field(DEFAULT_DIMS)

    class Meta:
        dynamic = MetaField("strict")


def chunk_index(name: str, *, dims: int) -> Index:
    """The definition of one concrete chunk index: `Chunk`'s mapping with vectors of `dims`.

    Replicas expand with the cluster (`KB_ES_REPLICAS`, default "0-1"): none on a single node,
    which would otherwise stay yellow forever, one copy as soon as a second node joins.
    """
    index = Index(name)
    index.settings(number_of_shards=settings.KB_ES_SHARDS, auto_expand_replicas=settings.KB_ES_REPLICAS)
    index.mapping(Chunk._doc_type.mapping)
    index.get_or_create_mapping().field("embedding", embedding_field(dims))
    return index


def _concrete_indices(alias: str) -> list[str]:
    try:
        with unavailable_on_failure("read alias"):
            return sorted(get_client().indices.get_alias(name=alias))
    except SearchError as error:
        if is_missing_index(error):
            return []
        raise


def current_index() -> str | None:
    """The concrete index behind the alias, or None when the alias does not exist yet."""
    indices = _concrete_indices(alias_name())
    if len(indices) > 1:
        raise SearchError(f"alias {alias_name()} points at several indices: {', '.join(indices)}")
    return indices[0] if indices else None


def _version(index: str, alias: str) -> int:
    match = re.fullmatch(re.escape(alias) + r"-v(\d+)", index)
    return int(match.group(1)) if match else 0


def _index_dims(index: str) -> int | None:
    with unavailable_on_failure("read mapping"):
        mapping = get_client().indices.get_mapping(index=index)
    properties = mapping[index]["mappings"].get("properties", {})
    return properties.get("embedding", {}).get("dims")


def _create(name: str, dims: int, alias: str | None = None) -> None:
    index = chunk_index(name, dims=dims)
    if alias:
        index.aliases(**{alias: {}})
    # Creating an index waits for its shards to start: seconds on a busy node, beyond a search's timeout.
    with unavailable_on_failure(f"create index {name}"):
        index.create(using=get_client().options(request_timeout=settings.KB_ES_BULK_TIMEOUT))


def _add_new_fields(index: str) -> None:
    """Give an index made by an older mapping the fields added since (its strict mapping would
    refuse chunks carrying them). Adding fields is allowed on a live index; the vector field,
    whose dims an index keeps, is left out."""
    properties = Chunk._doc_type.mapping.to_dict()["properties"]
    properties.pop("embedding")
    with unavailable_on_failure(f"update the mapping of {index}"):
        get_client().indices.put_mapping(index=index, properties=properties)


def ensure_index(dims: int = DEFAULT_DIMS) -> str:
    """Create `<alias>-v1` with the alias when no alias exists yet; return the concrete index.

    Harmless when called again or concurrently; an existing index keeps its dims (a different
    embedder needs `rebuild_index` plus re-embedding).
    """
    alias = alias_name()
    index = current_index()
    if index:
        _add_new_fields(index)
        return index
    index = f"{alias}-v1"
    try:
        _create(index, dims, alias=alias)
        logger.info("created search index %s (dims %s) behind alias %s", index, dims, alias)
    except SearchError as error:
        if not (isinstance(error.__cause__, BadRequestError) and "already_exists" in str(error)):
            raise
    return current_index() or index


def index_status() -> dict:
    """Alias, concrete index, chunk count and vector dims (index None when nothing was created)."""
    alias = alias_name()
    index = current_index()
    if index is None:
        return {"alias": alias, "index": None, "docs": 0, "dims": None}
    with unavailable_on_failure("count chunks"):
        docs = get_client().count(index=index)["count"]
    return {"alias": alias, "index": index, "docs": docs, "dims": _index_dims(index)}


def _copy(source: str, target: str, *, with_embeddings: bool, since: str | None = None) -> int:
    """Copy chunks with scroll + bulk: bounded requests on any cluster size, unlike one long _reindex."""
    client = get_client().options(request_timeout=settings.KB_ES_BULK_TIMEOUT)
    query = {"range": {"indexed_at": {"gte": since}}} if since else {"match_all": {}}
    hits = helpers.scan(
        client,
        index=source,
        query={"query": query, "_source": {"excludes": [] if with_embeddings else ["embedding"]}},
        size=500,
        scroll="5m",
    )
    actions = ({"_index": target, "_id": hit["_id"], "_source": hit["_source"]} for hit in hits)
    with unavailable_on_failure(f"copy {source} to {target}"):
        copied, errors = helpers.bulk(client, actions, chunk_size=500, raise_on_error=False, stats_only=False)
    if errors:
        raise SearchError(f"{len(errors)} chunks could not be copied to {target}; first: {errors[0]}"[:1000])
    return copied


def rebuild_index(dims: int | None = None) -> dict:
    """Build the next versioned index, copy every chunk into it, swap the alias, drop the old index.

    With `dims` different from the current index the chunks are copied without their vectors
    (keyword search keeps working) and `reembed_required` is True: only the embedding pipeline can
    produce vectors of the new size. Writes made during the copy land in the old index and are
    copied again after the swap; deletions made during the copy are not replayed.
    """
    alias = alias_name()
    old = current_index()
    if old is None:
        index = ensure_index(dims or DEFAULT_DIMS)
        return {"alias": alias, "old_index": None, "index": index, "copied": 0,
                "dims": dims or DEFAULT_DIMS, "reembed_required": False}
    old_dims = _index_dims(old) or DEFAULT_DIMS
    new_dims = dims or old_dims
    new = f"{alias}-v{_version(old, alias) + 1}"
    _create(new, new_dims)
    same_dims = new_dims == old_dims
    started = datetime.now(UTC).isoformat()
    copied = _copy(old, new, with_embeddings=same_dims)
    with unavailable_on_failure("swap alias"):
        get_client().indices.update_aliases(
            actions=[{"remove": {"index": old, "alias": alias}}, {"add": {"index": new, "alias": alias}}]
        )
    # Writes between `started` and the swap went to the old index: copy them over before dropping it.
    with unavailable_on_failure("refresh old index"):
        get_client().indices.refresh(index=old)
    _copy(old, new, with_embeddings=same_dims, since=started)
    with unavailable_on_failure(f"delete index {old}"):
        get_client().indices.delete(index=old)
        get_client().indices.refresh(index=new)
    logger.info("rebuilt search index %s -> %s (%s chunks, dims %s)", old, new, copied, new_dims)
    return {"alias": alias, "old_index": old, "index": new, "copied": copied,
            "dims": new_dims, "reembed_required": not same_dims}


def health_check() -> dict:
    """Readiness check "search": the cluster answers within KB_HEALTH_TIMEOUT and is not red.

    `_cluster/health` and `_nodes`, not `GET /`: every Elasticsearch has them, the minimal
    distribution included. Yellow (a replica unassigned) still serves every search.
    """
    client = get_client().options(request_timeout=settings.KB_HEALTH_TIMEOUT)
    with unavailable_on_failure("cluster health"):
        health = client.cluster.health()
        nodes = client.nodes.info(filter_path="nodes.*.version")
        try:
            indices = sorted(client.indices.get_alias(name=alias_name()))
        except NotFoundError:
            indices = []
    if health["status"] == "red":
        raise SearchUnavailable(f"cluster {health['cluster_name']} is red: a primary shard is unassigned")
    versions = sorted({node["version"] for node in nodes.get("nodes", {}).values()})
    return {"version": ", ".join(versions), "cluster": health["status"], "nodes": health["number_of_nodes"],
            "index": indices[0] if indices else "missing"}
