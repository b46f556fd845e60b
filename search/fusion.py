"""Reciprocal rank fusion, done in the application: Elasticsearch's own `rrf` needs a paid licence.

score(id) = sum over rankings r containing id of weight_r / (k + rank_r(id)), ranks starting at 1
(Cormack, Clarke & Büttcher, 2009). Only ranks matter, so BM25 scores and cosine similarities
fuse without normalisation.
"""


def rrf(
    rankings: dict[str, list[str]], k: int = 60, weights: dict[str, float] | None = None
) -> list[tuple[str, float]]:
    """Fuse named rankings (best first) into one list of (id, score), best first.

    A ranking missing from `weights` weighs 1.0, one weighing 0 is ignored; an id repeated within
    one ranking counts at its best rank only. Ties keep a stable order: the id seen first, in
    rankings' order then rank, wins.
    """
    if k < 0:
        raise ValueError("k must be >= 0")
    weights = weights or {}
    scores: dict[str, float] = {}
    for name, ranking in rankings.items():
        weight = weights.get(name, 1.0)
        if weight < 0:
            raise ValueError(f"weight of {name} must be >= 0")
        if weight == 0:
            continue  # a zero weight switches the ranking off rather than listing its ids at score 0
        seen: set[str] = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    # sorted() is stable and dicts keep insertion order, so equal scores keep first-seen order.
    return sorted(scores.items(), key=lambda pair: pair[1], reverse=True)
