"""Where lash_nb's background work runs: the kernel's own asyncio loop.

ipykernel executes every cell inside its running asyncio loop, so a widget can start a task on
that loop from a plain cell and the task keeps running between cells; notebooks use top-level
``await`` for one-off coroutines. No thread ever touches a widget, and no nested loop is needed
for anything lash_nb does itself: code that must wait for a coroutine writes ``await`` (top-level
``await`` works in every cell). The one exception is ``lash_nb.run_sync`` (``_sync.py``), for
synchronous code that must block on a coroutine while the kernel loop runs (an ipywidgets
callback, a pasted ``asyncio.run`` script): it makes that one loop re-entrant with nest-asyncio2,
once, when first asked, and patches nothing else.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Coroutine, TypeVar

from lash_core import LashError

__all__ = ["kernel_loop", "spawn"]

T = TypeVar("T")
logger = logging.getLogger("lash_nb")
_RUNNING: set[asyncio.Task[Any]] = set()


def kernel_loop() -> asyncio.AbstractEventLoop:
    """The running loop (a kernel cell, a test, or a script inside ``asyncio.run``)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "lash_nb widgets need a running asyncio loop: create them in a Jupyter cell "
            "(ipykernel runs cells inside its loop) or inside an async function"
        ) from None


def spawn(
    coro: Coroutine[Any, Any, T],
    *,
    on_error: Callable[[BaseException], None] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> asyncio.Task[T]:
    """Start ``coro`` as a task on the kernel loop; a failure goes to ``on_error`` (a widget's
    status line) instead of an unretrieved-exception traceback in the log."""
    task = (loop or kernel_loop()).create_task(coro)
    _RUNNING.add(task)  # the loop keeps only weak references to tasks

    def done(t: asyncio.Task[T]) -> None:
        _RUNNING.discard(t)
        if t.cancelled():
            return
        err = t.exception()
        if err is None:
            return
        if on_error is not None:
            on_error(err)
        if not isinstance(err, LashError):
            logger.error("lash_nb background task failed", exc_info=err)

    task.add_done_callback(done)
    return task

