"""Clocks, in one place. The pure cores never read a clock: time comes in as an argument. Shells
take an injected clock and default to these.

* ``monotonic`` seconds (``time.monotonic``) for ages and durations (replay retention, tool
  durations): never jumps with the wall clock.
* ``wall_clock_ms`` epoch milliseconds for times that are stored or compared across processes
  (leases, queue and process timestamps).
"""

from __future__ import annotations

import time

__all__ = ["monotonic", "wall_clock_ms"]

monotonic = time.monotonic


def wall_clock_ms() -> int:
    """Epoch milliseconds of the wall clock."""
    return time.time_ns() // 1_000_000
