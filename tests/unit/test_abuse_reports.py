"""Readers count every request once however windows were re-reported and partitions moved."""

from ratewarden.abuse_reports import current_reports, window_totals
from schemas.flags import AbuseReport, Population, ReportShare

POP = Population(ips=0, median_requests=0, mad_requests=0, median_requests_per_user=0, mad_requests_per_user=0)


def report(start: float, shares: dict[int, int], revision: int = 0) -> AbuseReport:
    """A report of ``start`` by the shard owning ``shares``' partitions (partition -> requests, one IP each)."""
    return AbuseReport(
        window_start=start, window_end=start + 60, partitions=sorted(shares), ips=len(shares),
        requests=sum(shares.values()), refused=0, flagged=[], population=POP, revision=revision,
        shares=[ReportShare(p, 1, n, 0) for p, n in sorted(shares.items())],
    )


def test_two_shards_each_count_their_partitions():
    reports = [report(0, {0: 5, 1: 7}), report(0, {2: 1, 3: 2}), report(60, {0: 1, 1: 1})]
    assert current_reports(reports) == reports
    assert window_totals(reports) == {0: {"requests": 15, "ips": 4, "refused": 0}, 60: {"requests": 2, "ips": 2, "refused": 0}}


def test_a_correction_replaces_the_report_it_corrects():
    first, fixed = report(0, {0: 5, 1: 7}), report(0, {0: 5, 1: 9}, revision=1)
    assert current_reports([first, fixed]) == [fixed]
    assert window_totals([first, fixed])[0]["requests"] == 14


def test_a_shard_that_took_over_partitions_re_reports_without_counting_twice():
    a, b = report(0, {0: 5, 1: 7}), report(0, {2: 1, 3: 2})
    b_after_a_died = report(0, {0: 5, 1: 7, 2: 1, 3: 2})  # B now owns all four and re-read window 0
    assert current_reports([a, b, b_after_a_died]) == [b_after_a_died]
    assert window_totals([a, b, b_after_a_died])[0] == {"requests": 15, "ips": 4, "refused": 0}
    partly = report(0, {1: 7, 2: 1})  # newer, covering one partition of each older report
    assert current_reports([a, b, partly]) == [a, b, partly]
    assert window_totals([a, b, partly])[0]["requests"] == 15
