"""Summaries of measured samples, shared by every benchmark, load test and soak."""

from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float | None:
    """The sample at quantile `q` (0.5 the median, 0.99 the 99th percentile); None when there are none.

    The nearest order statistic, index round(q * (n - 1)), as numpy's `percentile(method="nearest")`:
    always a measured value, never an interpolation between two.
    """
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
