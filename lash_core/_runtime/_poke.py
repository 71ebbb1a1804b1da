"""``QueuedWorkPoke``: a tiny wake-up signal from whoever enqueues work to the queue worker.

Pokes coalesce: any number of pokes before the worker looks wakes it once, and it learns every
reason. A poke is never lost: one made while nobody waits is kept for the next ``wait()``. ``poke``
is safe to call from any thread (a widget callback, a background producer); ``wait`` belongs to
one event loop at a time.
"""

from __future__ import annotations

import asyncio
import threading

__all__ = ["QueuedWorkPoke", "MAX_POKE_REASONS"]

#: Reasons kept between two waits. A flood of pokes only needs to wake the worker once; the
#: newest reasons are enough to say why.
MAX_POKE_REASONS = 64


class QueuedWorkPoke:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reasons: list[str] = []
        self._pending = False
        self._pokes = 0
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pokes(self) -> int:
        """Pokes received since creation."""
        return self._pokes

    @property
    def pending(self) -> bool:
        """A poke arrived that no ``wait()`` has consumed yet."""
        return self._pending

    def poke(self, reason: str = "poke") -> None:
        """Wake the worker (Rust's ``poke(reason)``)."""
        with self._lock:
            self._pokes += 1
            self._pending = True
            self._reasons.append(str(reason))
            del self._reasons[:-MAX_POKE_REASONS]
            loop, event = self._loop, self._event
        if loop is None or event is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)

    def poke_session(self, session_id: str, reason: str = "poke") -> None:
        """Rust's ``poke_session``; a runtime's worker serves one session, so this is a poke."""
        self.poke(f"{reason} ({session_id})")

    async def wait(self) -> tuple[str, ...]:
        """Wait for a poke (returns at once if one is pending); gives the coalesced reasons."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._event is None or self._loop is not loop:
                self._event, self._loop = asyncio.Event(), loop
            event = self._event
        while True:
            with self._lock:
                if self._pending:
                    reasons = tuple(self._reasons)
                    self._reasons.clear()
                    self._pending = False
                    event.clear()
                    return reasons
                event.clear()  # a stale set (its poke already consumed) must not spin this loop
            await event.wait()

    def __repr__(self) -> str:
        return f"<QueuedWorkPoke pokes={self._pokes} pending={self._pending}>"
