"""When retention must count a series' rows, shared by both backends' writers.

Keeping the newest ``max_records`` rows of a series means finding the row ``max_records``
from its newest: a walk of that many index entries (4-5 ms at 100,000 on SQLite). Every
series written is looked at every prune round (5 s), so walking each full series each
round would cost 600 series x 5 ms = 3 s of every 5 once a store holds ``max_records`` of
each, which happens after 69 days at the defaults. The walk is skipped when it cannot
delete much:

- the series' span (aligned open times) bounds its row count from above: within
  ``max_records`` plus a slack of 1 % (``slack``) there is nothing to trim yet, so a full
  series is walked once per 1,000 new candles (at 100,000), not once per round;
- a series whose span says more but that was walked with fewer new candles since than the
  slack (holes make the span overstate the count) is not walked again yet;
- at most ``WALKS_PER_ROUND`` series are walked per round; the rest wait for the next
  round, so that the first round after a start does not stop the writer for seconds.

So a series may hold up to 1 % more than ``max_records`` between trims (none for
``max_records`` under 100).
"""

from __future__ import annotations

import enum

#: a series may exceed max_records by max_records // SLACK_DIVISOR before it is trimmed
SLACK_DIVISOR = 100
#: series walked per prune round at most
WALKS_PER_ROUND = 20


class Verdict(enum.Enum):
    #: nothing to delete, or not enough to be worth a walk yet
    SKIP = "skip"
    #: walk the series' index now and delete what is older than its newest ``max_records``
    WALK = "walk"
    #: worth a walk, but this round's walks are spent: keep the series for the next round
    LATER = "later"


def slack(max_records: int) -> int:
    return max_records // SLACK_DIVISOR


class Retention:
    """Per writer connection: the rounds' walk budget and when each series was last walked."""

    def __init__(self) -> None:
        #: series id -> its newest open time when it was last walked
        self._walked: dict[int, int] = {}
        self._walks_left = WALKS_PER_ROUND

    def start_round(self) -> None:
        self._walks_left = WALKS_PER_ROUND

    def verdict(self, sid: int, first: int, last: int, step: int, max_records: int) -> Verdict:
        """Whether to walk series ``sid`` (rows from ``first`` to ``last``, aligned to ``step``
        ms; 0 if unknown) in this round."""
        extra = slack(max_records)
        if step:
            if (last - first) // step + 1 <= max_records + extra:
                return Verdict.SKIP
            walked = self._walked.get(sid)
            if walked is not None and (last - walked) // step <= extra:
                return Verdict.SKIP  # walked, and at most the slack appended since
        if self._walks_left <= 0:
            return Verdict.LATER
        self._walks_left -= 1
        return Verdict.WALK

    def walked(self, sid: int, last: int) -> None:
        self._walked[sid] = last

    def forget(self) -> None:
        """After a wipe: every series is new."""
        self._walked.clear()
