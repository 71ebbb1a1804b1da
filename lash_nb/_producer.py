"""Keep a session busy in the background, so a notebook shows a live stream between cells."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Sequence

from lash_core import InvalidTurnInputError, short_repr
from lash_core._validate import is_number

from ._loop import spawn
from ._state import check_names

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
    ``queue_worker``, drain queued work as soon as it is enqueued.

    Checked before anything starts: ``interval`` a finite number of seconds >= 0 (``ValueError``:
    NaN would stall the loop, ``bool`` is not a number of seconds); ``prompts`` a non-empty list
    of non-empty strings (``InvalidTurnInputError``: a bare string would run one turn per
    character); ``max_turns`` ``None`` or an int >= 0; ``queue_worker`` a bool."""
    if not is_number(interval) or interval < 0:  # NaN, infinities, bool and huge ints fail
        raise ValueError(f"interval must be a finite number of seconds >= 0, not {short_repr(interval)}")
    prompts = check_names("prompts", prompts, InvalidTurnInputError, unique=False)
    if not prompts:
        raise InvalidTurnInputError("prompts must not be empty")
    if max_turns is not None and (
        isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 0
    ):
        raise ValueError(f"max_turns must be None or an int >= 0, not {short_repr(max_turns)}")
    if not isinstance(queue_worker, bool):
        raise ValueError(f"queue_worker must be a bool, not {short_repr(queue_worker)}")
    interval = float(interval)
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
