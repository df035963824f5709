"""How often Python's cyclic garbage collector looks at young objects, in feedd's processes.

The youngest generation is collected once tracked allocations outnumber frees by a threshold,
700 by default. The store writer makes a tuple per row (thousands per commit at full load)
that lives until the commit, so at 700 the collector ran ~25 times a second at full load,
1-2 ms each, scanning those tuples again and again: 43-51 ms of CPU a second, ~1.5 us per
row. From 4,000 up a batch comes and goes between collections (#17).

The threshold also sets the longest pause: each collection scans what is young. With the
writer at 2,000 rows/s and forming updates on /ws (``bench_ws.py --writer-rate 2000``, 9-13
runs each) the longest collection of a run took 1.2-2.5 ms at 700, 1.5-3.7 ms at 4,000 and
3.1-8.6 ms at 10,000; all collections of a run 14-19, 9-13 and 8-18 ms. Frame -> /ws p99
was the same at 700 and 4,000 (five runs each alternating: medians 4.67 and 4.66 ms). Peak
RSS with 600 symbols did not move (68.4-68.6 MB).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 4_000


def tune() -> None:
    """Raise the youngest generation's threshold; the older ones keep theirs."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
