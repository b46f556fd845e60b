"""Test collections (SMART and BEIR formats), the retrieval metrics we report, and the evaluation run.

nDCG@10 with binary relevance, MAP (over the full ranked list returned), recall@100.
`run_evaluation` sends every judged query through the same query engine the search API uses
(`search.query.search`) against a knowledge base holding the collection, one Markdown document per
record named `<collection key>.md`.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from knowledge.embedders import get_embedder
from knowledge.models import Document, KnowledgeBase
from search.client import SearchUnavailable
from search.query import MODES, SearchRequest, SearchResult, search

METRICS = ("ndcg@10", "map", "recall@100")


@dataclass
class CollectionDocument:
    key: str
    title: str
    text: str


@dataclass
class Collection:
    documents: list[CollectionDocument]
    queries: dict[str, str]
    qrels: dict[str, set[str]]

    @property
    def judged_queries(self) -> dict[str, str]:
        return {qid: text for qid, text in self.queries.items() if self.qrels.get(qid)}


FIELD = re.compile(r"^\.([A-Z])(?:\s+(\S+))?\s*$")


def parse_smart_records(text: str) -> list[dict[str, str]]:
    """Records of a SMART file: `.I id` opens a record, `.X` style lines open fields."""
    records: list[dict[str, str]] = []
    field = None
    for line in text.splitlines():
        match = FIELD.match(line)
        if match and match.group(1) == "I":
            records.append({"I": match.group(2)})
            field = None
        elif match:
            field = match.group(1)
            records[-1].setdefault(field, "")
        elif field and records:
            records[-1][field] += line.strip() + " "
    return [{k: v.strip() for k, v in record.items()} for record in records]


def cisi_document_text(record: dict[str, str]) -> str:
    """Authors and abstract: the body of a CISI record, its title kept apart (as BEIR keeps it).

    `collection_source` stores a record as `# title` followed by this text, so the stored document
    reads title, authors, abstract; repeating the title here would count its words twice.
    """
    parts = []
    if record.get("A"):
        parts.append(f"Authors: {record['A']}")
    parts.append(record.get("W", ""))
    return "\n\n".join(part for part in parts if part)


def load_smart(directory: Path) -> Collection:
    prefix = next(directory.glob("*.ALL")).stem
    documents = [
        CollectionDocument(key=f"{prefix.lower()}-{r['I']}", title=r.get("T", ""), text=cisi_document_text(r))
        for r in parse_smart_records((directory / f"{prefix}.ALL").read_text(errors="replace"))
    ]
    queries = {
        r["I"]: r.get("W", "") for r in parse_smart_records((directory / f"{prefix}.QRY").read_text(errors="replace"))
    }
    qrels: dict[str, set[str]] = {}
    for line in (directory / f"{prefix}.REL").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            qrels.setdefault(str(int(parts[0])), set()).add(f"{prefix.lower()}-{int(parts[1])}")
    return Collection(documents, queries, qrels)


def load_beir(directory: Path) -> Collection:
    documents = []
    for line in (directory / "corpus.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            documents.append(
                CollectionDocument(key=str(row["_id"]), title=row.get("title", ""), text=row.get("text", ""))
            )
    queries = {}
    for line in (directory / "queries.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            queries[str(row["_id"])] = row["text"]
    qrels: dict[str, set[str]] = {}
    for line in (directory / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) >= 3 and float(parts[2]) > 0:
            qrels.setdefault(parts[0], set()).add(parts[1])
    return Collection(documents, queries, qrels)


def ndcg_at(ranked: list[str], relevant: set[str], k: int = 10) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, key in enumerate(ranked[:k]) if key in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / ideal if ideal else 0.0


def average_precision(ranked: list[str], relevant: set[str]) -> float:
    hits, total = 0, 0.0
    for i, key in enumerate(ranked):
        if key in relevant:
            hits += 1
            total += hits / (i + 1)
    return total / len(relevant) if relevant else 0.0


def recall_at(ranked: list[str], relevant: set[str], k: int = 100) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant) if relevant else 0.0


def evaluate_rankings(rankings: dict[str, list[str]], qrels: dict[str, set[str]]) -> dict[str, float]:
    judged = [qid for qid in rankings if qrels.get(qid)]
    if not judged:
        return {"ndcg@10": 0.0, "map": 0.0, "recall@100": 0.0, "queries": 0}
    return {
        "ndcg@10": round(sum(ndcg_at(rankings[q], qrels[q]) for q in judged) / len(judged), 4),
        "map": round(sum(average_precision(rankings[q], qrels[q]) for q in judged) / len(judged), 4),
        "recall@100": round(sum(recall_at(rankings[q], qrels[q]) for q in judged) / len(judged), 4),
        "queries": len(judged),
    }


def collection_key(document_key: str) -> str:
    """The collection key of a stored record: `collection_source` files record `k` as `k.md`."""
    return document_key.removesuffix(".md")


def document_keys(kb: KnowledgeBase) -> dict[str, str]:
    """Document id (as a string, like a hit's) -> collection key, for every document of `kb`."""
    rows = Document.objects.filter(source__kb=kb).values_list("pk", "key")
    return {str(pk): collection_key(key) for pk, key in rows}


def rank_queries(
    kb: KnowledgeBase,
    queries: dict[str, str],
    mode: str,
    vectors: dict[str, list[float]],
    keys: dict[str, str],
    size: int = 100,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, list[str]]:
    """Query id -> collection keys of the first `size` documents the query engine returns."""
    rankings: dict[str, list[str]] = {}
    for done, (qid, text) in enumerate(queries.items(), start=1):
        rankings[qid] = []  # a judged query without text finds nothing and counts as a miss
        if text.strip():
            request = SearchRequest(text, [str(kb.pk)], mode=mode, size=size, highlight=False,
                                    languages={str(kb.pk): kb.language})
            result = _search_patiently(request, vectors.get(qid))
            rankings[qid] = [keys.get(str(hit.document_id), str(hit.document_id)) for hit in result.hits]
        if progress:
            progress(done, len(queries))
    return rankings


def _search_patiently(request: SearchRequest, vector: list[float] | None, attempts: int = 4) -> SearchResult:
    """An evaluation is a batch run, not a user waiting: a timeout under load is retried, not fatal."""
    for attempt in range(attempts - 1):
        try:
            return search(request, vector)
        except SearchUnavailable:
            time.sleep(2**attempt)
    return search(request, vector)


def embed_queries(kb: KnowledgeBase, queries: dict[str, str]) -> dict[str, list[float]]:
    """Every query's vector from the knowledge base's embedder, in one batch."""
    ids = [qid for qid, text in queries.items() if text.strip()]
    vectors = get_embedder(kb.embedder).embed([queries[qid] for qid in ids])
    return dict(zip(ids, vectors, strict=True))


def run_evaluation(
    kb: KnowledgeBase,
    collection: Collection,
    modes: Iterable[str] = MODES,
    size: int = 100,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, dict[str, float]]:
    """nDCG@10, MAP and recall@100 (plus the query count) per mode over the judged queries.

    `progress(mode, done, total)` is called after each query, for a command's progress line.
    """
    modes = list(modes)
    unknown = set(modes) - set(MODES)
    if unknown:
        raise ValueError(f"unknown mode(s): {', '.join(sorted(unknown))}")
    queries = collection.judged_queries
    vectors = embed_queries(kb, queries) if any(mode != "keyword" for mode in modes) else {}
    keys = document_keys(kb)
    results = {}
    for mode in modes:
        report = (lambda done, total, mode=mode: progress(mode, done, total)) if progress else None
        rankings = rank_queries(kb, queries, mode, vectors, keys, size=size, progress=report)
        results[mode] = evaluate_rankings(rankings, collection.qrels)
    return results
