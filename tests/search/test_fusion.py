import pytest

from search.fusion import rrf


def test_rrf_scores_are_sums_of_reciprocal_ranks():
    fused = dict(rrf({"a": ["x", "y"], "b": ["y", "z"]}, k=60))
    assert fused["x"] == pytest.approx(1 / 61)
    assert fused["y"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["z"] == pytest.approx(1 / 62)


def test_rrf_ranks_an_item_found_by_both_lists_first():
    fused = rrf({"keyword": ["x", "both"], "semantic": ["y", "both"]})
    assert fused[0][0] == "both"


def test_rrf_ties_keep_first_seen_order():
    fused = rrf({"keyword": ["x", "y"], "semantic": ["y", "x"]})
    assert [item for item, _ in fused] == ["x", "y"]
    assert fused[0][1] == pytest.approx(fused[1][1])


def test_rrf_ignores_empty_and_missing_lists():
    assert rrf({"keyword": ["x", "y"], "semantic": []}) == rrf({"keyword": ["x", "y"]})
    assert rrf({}) == []


def test_rrf_weights_favour_a_ranking():
    rankings = {"keyword": ["kw"], "semantic": ["sem"]}
    assert rrf(rankings, weights={"semantic": 2.0})[0] == ("sem", pytest.approx(2 / 61))
    assert rrf(rankings, weights={"keyword": 2.0})[0][0] == "kw"


def test_rrf_zero_weight_drops_the_ranking():
    assert rrf({"keyword": ["kw"], "semantic": ["sem"]}, weights={"semantic": 0}) == [("kw", pytest.approx(1 / 61))]


def test_rrf_counts_a_repeated_id_once_at_its_best_rank():
    assert dict(rrf({"a": ["x", "x", "y"]}))["x"] == pytest.approx(1 / 61)


def test_rrf_small_k_sharpens_rank_differences():
    top_heavy = rrf({"a": ["x", "y"]}, k=0)
    assert top_heavy == [("x", pytest.approx(1.0)), ("y", pytest.approx(0.5))]


def test_rrf_rejects_negative_weight_and_k():
    with pytest.raises(ValueError):
        rrf({"a": ["x"]}, weights={"a": -1})
    with pytest.raises(ValueError):
        rrf({"a": ["x"]}, k=-1)
