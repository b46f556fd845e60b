"""The soak's verdict (bench.loadtest.SoakReport) on synthetic process samples."""

import itertools

from bench.loadtest import ProcessSample, Sample, SoakReport, Tally

NOISE = [0, 3, -1, 8, 2, -1, 1, 5, 0, 2]  # descriptors held by requests in flight at a sample


def report(fds: list[int], rss: list[int] | None = None, errors: int = 0) -> SoakReport:
    rss = rss or [1000] * len(fds)
    samples = [ProcessSample(at=10.0 * n, rss={"web": r * 2**20}, fds={"web": f}, conns={"web": f // 4})
               for n, (f, r) in enumerate(zip(fds, rss, strict=True))]
    tally = Tally()
    for n in range(100):
        tally.add(Sample("search_hit", 5.0, ok=n >= errors))
    return SoakReport(samples, tally, warmup_index=len(fds) // 5, seconds=10.0 * len(fds))


def test_a_flat_but_noisy_count_is_not_growth():
    fds = [100 + noise for noise in itertools.islice(itertools.cycle(NOISE), 180)]
    fds[-3:] = [108, 108, 108]  # the last three samples land on busy moments
    verdict = report(fds)
    assert verdict.growth()["web"]["fd_change"] <= 0
    assert verdict.passed()


def test_a_slow_leak_under_the_noise_is_growth():
    fds = [100 + n // 10 + noise for n, noise in enumerate(itertools.islice(itertools.cycle(NOISE), 180))]
    verdict = report(fds)
    assert verdict.growth()["web"]["fd_change"] > 0
    assert not verdict.passed()


def test_memory_growth_over_five_percent_or_any_error_fails():
    flat = [100] * 60
    assert report(flat, rss=[1000] * 30 + [1040] * 30).passed()  # +4%
    assert not report(flat, rss=[1000] * 30 + [1060] * 30).passed()  # +6%
    assert not report(flat, errors=1).passed()
