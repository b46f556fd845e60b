"""Retrieval metrics, the SMART and BEIR collection loaders, and `manage.py evaluate` end to end."""

import json
import math
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from search.evaluation import average_precision, evaluate_rankings, load_beir, load_smart, ndcg_at, recall_at
from tests.search.chunk_index import temporary_alias

SMART_ALL = """.I 1
.T
Library classification
schemes
.A
Smith, J.
.W
A study of how libraries
classify their books.
.X
1 5 1
.I 2
.T
Information retrieval
.W
Ranking documents by relevance.
"""

SMART_QRY = """.I 1
.W
How do libraries classify books?
.I 2
.W
Relevance ranking
.I 3
.W
An unjudged query
"""

SMART_REL = """ 1     1 0 0.000000
 2     2 0 0.000000
 2     1 0 0.000000
"""


def test_ndcg_of_a_perfect_ranking_is_one():
    assert ndcg_at(["a", "b", "x"], {"a", "b"}) == pytest.approx(1.0)


def test_ndcg_discounts_a_relevant_document_by_its_rank():
    assert ndcg_at(["x", "a"], {"a"}) == pytest.approx(1 / math.log2(3))


def test_ndcg_ignores_hits_beyond_k():
    assert ndcg_at(["x", "y", "a"], {"a"}, k=2) == 0.0


def test_average_precision_averages_precision_at_each_relevant_hit_over_all_relevant():
    # relevant at ranks 1 and 3, a third relevant never found: (1/1 + 2/3) / 3
    assert average_precision(["a", "x", "b"], {"a", "b", "c"}) == pytest.approx((1 + 2 / 3) / 3)


def test_recall_counts_relevant_documents_within_k():
    assert recall_at(["a", "x", "b"], {"a", "b", "c", "d"}, k=2) == pytest.approx(0.25)


def test_evaluate_rankings_averages_over_judged_queries_only():
    scores = evaluate_rankings({"q1": ["a"], "q2": ["x"], "unjudged": ["a"]}, {"q1": {"a"}, "q2": {"b"}})
    assert scores == {"ndcg@10": 0.5, "map": 0.5, "recall@100": 0.5, "queries": 2}


def test_load_smart_reads_documents_queries_and_judgements(tmp_path):
    (tmp_path / "TINY.ALL").write_text(SMART_ALL)
    (tmp_path / "TINY.QRY").write_text(SMART_QRY)
    (tmp_path / "TINY.REL").write_text(SMART_REL)
    collection = load_smart(tmp_path)
    first, second = collection.documents
    assert (first.key, first.title) == ("tiny-1", "Library classification schemes")
    assert "Authors: Smith, J." in first.text and "classify their books." in first.text
    assert "1 5 1" not in first.text  # cross-references are not document text
    assert second.key == "tiny-2" and "Ranking documents by relevance." in second.text
    assert collection.queries["2"] == "Relevance ranking"
    assert collection.qrels == {"1": {"tiny-1"}, "2": {"tiny-1", "tiny-2"}}
    assert set(collection.judged_queries) == {"1", "2"}


def write_beir(directory, documents: dict[str, tuple[str, str]], queries: dict[str, str], qrels: list[tuple]):
    (directory / "qrels").mkdir(parents=True)
    corpus = [{"_id": key, "title": title, "text": text} for key, (title, text) in documents.items()]
    (directory / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in corpus))
    rows = [{"_id": q, "text": text} for q, text in queries.items()]
    (directory / "queries.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (directory / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels)
    )
    return directory


def test_load_beir_reads_corpus_queries_and_positive_judgements(tmp_path):
    write_beir(
        tmp_path,
        {"d1": ("Solar", "Solar panels"), "d2": ("Wind", "Wind turbines")},
        {"q1": "solar power", "q2": "unjudged"},
        [("q1", "d1", 1), ("q1", "d2", 0)],
    )
    collection = load_beir(tmp_path)
    assert [(doc.key, doc.title, doc.text) for doc in collection.documents] == [
        ("d1", "Solar", "Solar panels"),
        ("d2", "Wind", "Wind turbines"),
    ]
    assert collection.qrels == {"q1": {"d1"}}  # a zero score is not a judgement of relevance
    assert collection.judged_queries == {"q1": "solar power"}


TOPICS = {
    "solar": ("Solar power", "Photovoltaic panels turn sunlight into electricity on rooftops."),
    "wind": ("Wind farms", "Turbines on windy hills generate electricity from moving air."),
    "bread": ("Baking bread", "Knead the dough, let it rise overnight, and bake it in a hot oven."),
    "chess": ("Chess openings", "The Sicilian defence answers the king's pawn opening aggressively."),
    "bees": ("Beekeeping", "A hive of honey bees needs a queen, workers and a dry spot."),
}


@pytest.fixture
def beir_collection(tmp_path):
    return write_beir(
        tmp_path / "tinybeir",
        {f"doc-{topic}": pair for topic, pair in TOPICS.items()},
        {"q1": "photovoltaic panels sunlight", "q2": "knead dough oven", "q3": "honey bees hive queen"},
        [("q1", "doc-solar", 1), ("q2", "doc-bread", 1), ("q3", "doc-bees", 1)],
    )


@pytest.fixture
def eval_index(search_index):
    with temporary_alias("evaluate") as alias:
        yield alias


def evaluate(*args: str) -> list[str]:
    out = StringIO()
    call_command("evaluate", *args, stdout=out, stderr=StringIO())
    return out.getvalue().splitlines()


@pytest.mark.django_db(transaction=True)
def test_evaluate_ingests_a_beir_collection_and_ends_with_json_per_mode(beir_collection, eval_index):
    lines = evaluate("--collection", str(beir_collection), "--format", "beir", "--embedder", "hashing", "--json")
    assert any("ingesting 5 documents into eval-tinybeir" in line for line in lines)
    scores = json.loads(lines[-1])
    assert set(scores) == {"hybrid", "keyword", "semantic"}
    for metrics in scores.values():
        assert set(metrics) == {"ndcg@10", "map", "recall@100"}
        assert all(0.0 <= value <= 1.0 for value in metrics.values())
    # Each query shares its distinctive words with its one relevant document only.
    assert scores["keyword"] == {"ndcg@10": 1.0, "map": 1.0, "recall@100": 1.0}
    assert scores["hybrid"]["recall@100"] == 1.0


@pytest.mark.django_db(transaction=True)
def test_evaluate_reuses_an_unchanged_collection(beir_collection, eval_index):
    evaluate("--collection", str(beir_collection), "--format", "beir", "--embedder", "hashing", "--mode", "keyword")
    lines = evaluate(
        "--collection", str(beir_collection), "--format", "beir", "--embedder", "hashing", "--mode", "keyword", "--json"
    )
    assert any("eval-tinybeir is up to date" in line for line in lines)
    assert not any("ingesting" in line for line in lines)
    assert json.loads(lines[-1]) == {"keyword": {"ndcg@10": 1.0, "map": 1.0, "recall@100": 1.0}}


@pytest.mark.django_db
def test_evaluate_refuses_a_missing_directory(tmp_path):
    with pytest.raises(CommandError, match="No collection directory"):
        evaluate("--collection", str(tmp_path / "nowhere"), "--format", "beir")


@pytest.mark.django_db
def test_evaluate_refuses_an_unknown_format(beir_collection):
    with pytest.raises(CommandError, match="Unknown format 'trec'"):
        evaluate("--collection", str(beir_collection), "--format", "trec")


@pytest.mark.django_db
def test_evaluate_refuses_a_directory_not_in_the_given_format(beir_collection):
    with pytest.raises(CommandError, match="is not a smart collection"):
        evaluate("--collection", str(beir_collection), "--format", "smart")
