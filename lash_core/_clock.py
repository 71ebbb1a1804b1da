"""Clocks, in one place. The pure cores never read a clock: time comes in as an argument. Shells
take an injected clock and default to these.

* ``monotonic`` seconds (``time.monotonic``) for ages and durations (replay retention, tool
  durations): never jumps with the wall clock.
* ``wall_clock_ms`` epoch milliseconds for times that are stored or compared across processes
  (leases, queue and process timestamps).
"""

from __future__ import annotations

import time
from typing import Any, Callable

__all__ = ["monotonic", "wall_clock_ms", "read_clock_ms"]

monotonic = time.monotonic


def wall_clock_ms() -> int:
    """Epoch milliseconds of the wall clock."""
    return time.time_ns() // 1_000_000


def read_clock_ms(clock_ms: Callable[[], Any], error: type[Exception]) -> Any:
    """``clock_ms()``, with a clock that raises reported as ``error("the store's clock failed:
    ...")`` (the original chained): a store whose clock fails cannot serve the call, like one
    whose driver fails. The reading itself is the caller's to check."""
    try:
        return clock_ms()
    except Exception as err:
        from ._json import error_message

        raise error(f"the store's clock failed: {error_message(err, 300)}") from err
