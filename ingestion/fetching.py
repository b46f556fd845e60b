"""The fetch stage of text and file sources: the raw items a sync feeds through the pipeline.

Url sources are crawled instead (`ingestion.crawl_sync`), which hands the pipeline the same `RawItem`s.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field

from knowledge.models import Source, SourceKind
from knowledge.storage import ObjectNotFound, get_object_store


@dataclass
class RawItem:
    """One document's raw bytes as fetched from its source."""

    key: str
    data: bytes
    content_type: str
    title: str = ""
    metadata: dict = field(default_factory=dict)


def source_items(source: Source) -> Iterator[RawItem]:
    """The raw items of a text or file source."""
    if source.kind == SourceKind.TEXT:
        yield RawItem(key="text", data=source.config["text"].encode(), content_type="text/plain", title=source.name)
    elif source.kind == SourceKind.FILE:
        store = get_object_store()
        for entry in source.config["files"]:
            try:
                data = store.get(entry["object_key"])
            except ObjectNotFound:
                data = b""  # extraction fails this document with a clear reason
            yield RawItem(key=entry["filename"], data=data, content_type=entry["content_type"], title="")


def source_item_count(source: Source) -> int:
    if source.kind == SourceKind.FILE:
        return len(source.config["files"])
    if source.kind == SourceKind.URL:
        return 0  # unknown until crawled: grows with the pages discovered
    return 1
