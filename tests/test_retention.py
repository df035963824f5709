"""When retention walks a series (feedd/store/retention.py): pure decisions, no store."""

from __future__ import annotations

from feedd.store.retention import WALKS_PER_ROUND, Retention, Verdict

MIN = 60_000
KEEP = 100_000  # the default max_records: slack 1,000


def test_a_span_within_the_slack_is_never_walked() -> None:
    retention = Retention()
    assert retention.verdict(1, 0, (KEEP + 1_000 - 1) * MIN, MIN, KEEP) is Verdict.SKIP
    assert retention.verdict(1, 0, (KEEP + 1_000) * MIN, MIN, KEEP) is Verdict.WALK


def test_a_series_with_holes_is_walked_again_only_after_the_slack_of_new_candles() -> None:
    # Two years of span but, holes aside, fewer rows than kept: the span always says "too
    # many", so only the memory of the last walk keeps it from being walked every round.
    retention = Retention()
    last = 2 * 525_600 * MIN
    assert retention.verdict(1, 0, last, MIN, KEEP) is Verdict.WALK
    retention.walked(1, last)
    retention.start_round()
    assert retention.verdict(1, 0, last, MIN, KEEP) is Verdict.SKIP
    assert retention.verdict(1, 0, last + 1_000 * MIN, MIN, KEEP) is Verdict.SKIP
    assert retention.verdict(1, 0, last + 1_001 * MIN, MIN, KEEP) is Verdict.WALK
    retention.forget()  # a wipe: nothing is known of any series
    assert retention.verdict(1, 0, last, MIN, KEEP) is Verdict.WALK


def test_small_limits_have_no_slack_and_every_new_candle_counts() -> None:
    retention = Retention()
    assert retention.verdict(1, 0, 10 * MIN, MIN, 10) is Verdict.WALK  # 11 rows may be there
    retention.walked(1, 10 * MIN)
    assert retention.verdict(1, 0, 10 * MIN, MIN, 10) is Verdict.SKIP  # a forming update
    assert retention.verdict(1, 0, 11 * MIN, MIN, 10) is Verdict.WALK


def test_walks_per_round_are_bounded_and_an_unknown_step_always_counts() -> None:
    retention = Retention()
    verdicts = [retention.verdict(sid, 0, 0, 0, KEEP) for sid in range(WALKS_PER_ROUND + 1)]
    assert verdicts == [Verdict.WALK] * WALKS_PER_ROUND + [Verdict.LATER]
    retention.start_round()
    assert retention.verdict(99, 0, 0, 0, KEEP) is Verdict.WALK
