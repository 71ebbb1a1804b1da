"""``run_sync``: wait for a coroutine from synchronous code, in a script or in a kernel.

A script has no running loop, so ``run_sync`` runs the awaitable on a fresh one, as
``asyncio.run`` does. A kernel cell and a widget callback (ipywidgets calls its callbacks
synchronously, from inside the kernel's running loop) cannot do that: ``asyncio.run`` refuses
("cannot be called from a running event loop") and ``loop.run_until_complete`` refuses too.
There ``run_sync`` makes that one loop re-entrant with nest-asyncio2 and runs the awaitable on it
to completion, so the kernel's own tasks (a monitor, a producer) keep running meanwhile.

Rules of the patch (this is the only place lash patches a loop):
- only a loop that is running in the calling thread when ``run_sync`` needs to re-enter it;
- once per loop (``_PATCHED`` remembers them), and for the rest of that loop's life;
- only that loop object: it gets a private subclass of its own class, and nest-asyncio2 patches
  that subclass. ``nest_asyncio2.apply()`` is not called, because it also swaps ``asyncio.Task``
  for the pure-Python one, replaces ``asyncio.run`` and patches the loop policy (so every loop
  made later comes patched), and patches the loop's class (every loop of that class).
"""

from __future__ import annotations

import asyncio
import inspect
import math
import weakref
from typing import Any, Awaitable, TypeVar

__all__ = ["run_sync"]

T = TypeVar("T")

#: the loops run_sync made re-entrant (weakly held: a closed, dropped loop leaves the set)
_PATCHED: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def run_sync(awaitable: Awaitable[T], *, timeout_s: float | None = None) -> T:
    """Run ``awaitable`` to completion and return its result, from synchronous code.

    ``awaitable`` is a coroutine (``run_sync(main())``, not ``run_sync(main)``), a Task or Future
    of the running loop, or any object with ``__await__``; anything else raises ``TypeError``.
    Its exception propagates unchanged (the same object). ``timeout_s`` (seconds, positive)
    cancels it and raises ``TimeoutError`` when it is not done in time; ``None`` waits for ever.

    - No running loop in this thread (a plain script): the awaitable runs on a fresh loop that is
      closed afterwards, like ``asyncio.run``.
    - A running loop in this thread (a Jupyter cell, an ipywidgets callback, a synchronous
      function called from a coroutine): that loop is made re-entrant with nest-asyncio2 the
      first time, and the awaitable runs on it to completion while the loop's other tasks keep
      running. **This patches the kernel's loop for the rest of the session** (a loop cannot be
      un-patched safely while it runs), and only that loop: no other loop, no ``asyncio``
      function and no loop policy is changed. It is the price of blocking on a coroutine where
      the loop is already running; in a cell, top-level ``await`` needs no patch at all.

    The calling coroutine (a cell's) is suspended while the awaitable runs, so a ``run_sync``
    that waits for something only the caller would do never returns; use ``timeout_s`` there.
    """
    if not inspect.isawaitable(awaitable):
        hint = " (call it: run_sync(f()), not run_sync(f))" if callable(awaitable) else ""
        raise TypeError(
            f"run_sync needs an awaitable (a coroutine, Task or Future), "
            f"not {type(awaitable).__name__}{hint}"
        )
    if timeout_s is not None:
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)):
            _close(awaitable)
            raise TypeError(f"timeout_s must be a number of seconds or None, not {timeout_s!r}")
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            _close(awaitable)
            raise ValueError(f"timeout_s must be positive and finite, not {timeout_s!r}")
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if isinstance(awaitable, asyncio.Future):
        owner = awaitable.get_loop()
        if loop is None and not owner.is_closed() and not owner.is_running():
            # a Future of a loop that is not running (``loop.create_future()`` in a script)
            result: T = owner.run_until_complete(_bounded(awaitable, timeout_s))
            return result
        if owner is not loop:
            raise ValueError(
                "run_sync got a Task or Future of another event loop; it can only wait on "
                "one of the running loop of this thread"
            )
    if loop is None:
        return asyncio.run(_bounded(awaitable, timeout_s))
    try:
        _make_reentrant(loop)
    except BaseException:
        _close(awaitable)
        raise
    task = loop.create_task(_bounded(awaitable, timeout_s))
    try:
        return loop.run_until_complete(task)
    finally:
        if not task.done():  # interrupted (KeyboardInterrupt): do not leave it running alone
            task.cancel()


async def _bounded(awaitable: Awaitable[T], timeout_s: float | None) -> T:
    if timeout_s is None:
        return await awaitable
    return await asyncio.wait_for(awaitable, timeout_s)  # TimeoutError is asyncio's since 3.11


def _close(awaitable: Awaitable[Any]) -> None:
    """Close a coroutine that will never run (no "never awaited" warning)."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()


def _make_reentrant(loop: asyncio.AbstractEventLoop) -> None:
    """Patch ``loop`` (this one only) with nest-asyncio2, once."""
    if loop in _PATCHED:
        return
    if not isinstance(loop, asyncio.BaseEventLoop):
        raise RuntimeError(
            f"run_sync cannot re-enter a running {type(loop).__name__}: nest-asyncio2 patches "
            "only asyncio's own loops; use `await` here instead"
        )
    import nest_asyncio2  # type: ignore[import-untyped]  # only now: not on `import lash_nb`

    cls = type(loop)
    if not getattr(cls, "_nest_patched", False):  # patched by someone else: leave it as is
        # nest-asyncio2 patches the class it is given: give it one that only this loop has
        loop.__class__ = type(cls.__name__, (cls,), {"__module__": cls.__module__})
        nest_asyncio2._patch_loop(loop)
    _PATCHED.add(loop)
