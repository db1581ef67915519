"""Corrupt data in the loaders: skipped, counted, and warned about at a bounded rate; it never stops a loader.

Corrupt means a truncated or unreadable tar, an undecodable image or label, a label/image size mismatch, or
label values that are neither a class id nor the ignore index. The loaders count it per reader in
`counts["corrupt"]` (samples) and `counts["truncated_shards"]` (shards that ended early or could not be read)
and name the shard and key in a warning.
"""
from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

COUNTERS = ("samples", "corrupt", "truncated_shards")


def new_counts() -> dict[str, int]:
    """A reader's running counts: good samples delivered, corrupt samples skipped, shards cut short."""
    return {c: 0 for c in COUNTERS}


class CorruptWarner:
    """Logs the first `first` problems, then at most one every `interval` seconds with the number suppressed
    since the last one.

    Each loader owns one. DataLoader worker processes get a copy each and warn on their own, so the limit
    holds per process; in the process that owns it, `reported`, `logged` and `suppressed` say what it saw.
    """

    def __init__(self, first: int = 5, interval: float = 30.0):
        self.first, self.interval = first, interval
        self.reported = 0  # problems handed to this warner
        self.logged = 0  # of which were logged
        self.suppressed = 0  # not logged since the last logged one
        self._last = 0.0

    def __call__(self, msg: str) -> None:
        self.reported += 1
        now = time.monotonic()
        if self.reported <= self.first or now - self._last >= self.interval:
            extra = f" ({self.suppressed} similar warnings suppressed)" if self.suppressed else ""
            log.warning("lakd.data: skipped corrupt data: %s%s", msg, extra)
            self.logged += 1
            self._last = now
            self.suppressed = 0
        else:
            self.suppressed += 1
