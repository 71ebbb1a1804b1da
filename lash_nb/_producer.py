"""Keep a session busy in the background, so a notebook shows a live stream between cells."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Sequence

from ._loop import spawn

__all__ = ["BackgroundProducer", "start_producer"]

DEFAULT_PROMPTS: tuple[str, ...] = (
    "Say hello",
    "Add 2 and 3",
    "Summarise the session so far",
    "What is queued next?",
)


@dataclasses.dataclass(slots=True)
class BackgroundProducer:
    """Turns run by a task on the kernel loop, plus the queue worker; ``stop()`` ends both."""

    handle: Any
    turns: asyncio.Task[int]
    worker: asyncio.Task[int] | None
    _stop: asyncio.Event

    @property
    def running(self) -> bool:
        return not self.turns.done()

    def stop(self) -> None:
        self._stop.set()
        self.turns.cancel()
        if self.worker is not None:
            self.worker.cancel()

    async def wait(self) -> int:
        """Wait for the scripted turns to finish (when ``max_turns`` was given)."""
        return await self.turns


def start_producer(
    handle: Any,
    *,
    interval: float = 1.0,
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    max_turns: int | None = None,
    queue_worker: bool = True,
) -> BackgroundProducer:
    """Run a turn every ``interval`` seconds (cycling through ``prompts``) and, with
    ``queue_worker``, drain queued work as soon as it is enqueued."""
    if interval < 0:
        raise ValueError("interval must not be negative")
    if not prompts:
        raise ValueError("prompts must not be empty")
    stop = asyncio.Event()

    async def run_turns() -> int:
        ran = 0
        while max_turns is None or ran < max_turns:
            if stop.is_set():
                break
            await handle.run_turn(prompts[ran % len(prompts)])
            ran += 1
            await asyncio.sleep(interval)
        return ran

    turns = spawn(run_turns())
    worker = (
        spawn(handle.run_queue_worker(stop_event=stop, poll_interval=0.5)) if queue_worker else None
    )
    return BackgroundProducer(handle, turns, worker, stop)
