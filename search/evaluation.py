"""Test collections (SMART and BEIR formats) and the retrieval metrics we report.

nDCG@10 with binary relevance, MAP (over the full ranked list returned), recall@100.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path


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
    """Title, authors and abstract, as the demo knowledge base stores a CISI record."""
    parts = [record.get("T", "")]
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
    queries = {r["I"]: r.get("W", "") for r in parse_smart_records((directory / f"{prefix}.QRY").read_text(errors="replace"))}
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
            documents.append(CollectionDocument(key=str(row["_id"]), title=row.get("title", ""), text=row.get("text", "")))
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
