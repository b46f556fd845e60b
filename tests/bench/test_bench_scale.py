"""`manage.py bench_scale` at a tiny size against the test search server: its tables, its recall
figures and that it leaves no index behind."""

from io import StringIO

from django.conf import settings
from django.core.management import call_command

from search.client import get_client


def test_bench_scale_reports_each_size_with_latency_and_recall():
    out = StringIO()
    call_command("bench_scale", "--sizes", "1000,2000", "--queries", "20", "--recall-queries", "10",
                 "--batch", "500", "--candidates-factors", "1,4", stdout=out)
    output = out.getvalue()

    assert "Elasticsearch" in output and "CPUs" in output
    for size in ("1,000", "2,000"):
        assert f"== {size} chunks" in output
    assert output.count("indexing  +1,000 chunks") == 2
    assert output.count("index     store ") == 2
    lines = output.splitlines()
    for label in ("keyword", "semantic", "hybrid"):
        assert sum(line.startswith(f"  {label} ") for line in lines) >= 2, label
    semantic_rows = [line.split() for line in lines if line.startswith("  semantic ")]
    assert len(semantic_rows) == 2 * 3  # factors 1, 4 and the configured 2, at both sizes
    for row in semantic_rows:
        recall, strict, found = (float(value) for value in row[-3:])
        assert 0.0 <= recall <= 1.0 and 0.0 <= strict <= 1.0 and 0.0 <= found <= 1.0
        assert int(row[-4]) == 0  # no search failed
    summary = output[output.index("== Summary =="):]
    assert "goal recall@10 >= 0.95" in summary and "goal hybrid p95 <= 50 ms" in summary
    goal = next(line for line in summary.splitlines() if line.startswith("goal recall@10"))
    assert 0.0 <= float(goal.split(": ")[1].split()[0]) <= 1.0

    leftovers = get_client().indices.get(index=f"{settings.KB_ES_INDEX}_scale-v*", allow_no_indices=True)
    assert not leftovers
