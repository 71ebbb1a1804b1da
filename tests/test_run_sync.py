"""run_sync: a coroutine to completion from synchronous code, with and without a running loop."""

from __future__ import annotations

import ast
import asyncio
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

import lash_nb
from lash_nb import _sync, run_sync

ROOT = pathlib.Path(__file__).resolve().parents[1]


class Boom(Exception):
    pass


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


async def fail(err: BaseException) -> None:
    await asyncio.sleep(0)
    raise err


class Awaitable:
    """Not a coroutine, not a Future: just ``__await__``."""

    def __await__(self):
        return double(21).__await__()


# --- no running loop (a plain script) ------------------------------------------------------------


def test_without_a_loop_it_runs_on_a_fresh_loop_and_returns_the_result():
    assert run_sync(double(21)) == 42
    assert run_sync(Awaitable()) == 42
    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()  # nothing left running


def test_without_a_loop_the_exception_is_the_awaitables_own():
    err = Boom("the model failed")
    with pytest.raises(Boom) as caught:
        run_sync(fail(err))
    assert caught.value is err


def test_a_future_of_a_loop_that_is_not_running_runs_on_that_loop():
    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(double(5))
        assert run_sync(task) == 10
        assert loop not in _sync._PATCHED  # nothing was re-entered
    finally:
        loop.close()


def test_a_script_that_uses_run_sync_never_imports_nest_asyncio2():
    code = textwrap.dedent(
        """
        import asyncio, sys
        import lash_nb
        assert "nest_asyncio2" not in sys.modules
        async def main():
            return "done"
        print(lash_nb.run_sync(main()), "nest_asyncio2" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout == "done False\n"


# --- argument errors ------------------------------------------------------------------------------


def test_a_non_awaitable_is_a_type_error_with_a_plain_message():
    with pytest.raises(TypeError, match=r"needs an awaitable .* not int$"):
        run_sync(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"not function \(call it: run_sync\(f\(\)\)"):
        run_sync(double)  # type: ignore[arg-type]


@pytest.mark.filterwarnings("error::RuntimeWarning")  # "coroutine ... was never awaited"
def test_a_bad_timeout_is_refused_and_the_coroutine_is_closed():
    coro = double(1)
    with pytest.raises(ValueError, match="positive and finite, not 0"):
        run_sync(coro, timeout_s=0)
    assert coro.cr_frame is None  # closed, never started
    with pytest.raises(ValueError, match="not inf"):
        run_sync(double(1), timeout_s=float("inf"))
    with pytest.raises(TypeError, match="number of seconds or None, not '1'"):
        run_sync(double(1), timeout_s="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not True"):
        run_sync(double(1), timeout_s=True)


def test_timeout_raises_timeout_error_without_a_loop():
    cancelled = []

    async def slow():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    with pytest.raises(TimeoutError):
        run_sync(slow(), timeout_s=0.05)
    assert cancelled == [True]


# --- a running loop in this thread (what a kernel cell or a widget callback sees) ------------------


def test_inside_a_running_loop_a_sync_function_gets_the_result_and_the_loop_is_patched_once():
    original_run, original_task = asyncio.run, asyncio.Task
    ticks: list[int] = []

    async def ticker():
        while True:
            ticks.append(1)
            await asyncio.sleep(0.001)

    def callback(x: int) -> int:  # a synchronous widget callback, say
        return run_sync(double(x))

    async def slow_double(x: int) -> int:
        await asyncio.sleep(0.05)
        return 2 * x

    async def cell():
        loop = asyncio.get_running_loop()
        plain = type(loop)
        background = asyncio.ensure_future(ticker())
        assert loop not in _sync._PATCHED
        assert callback(1) == 2
        assert loop in _sync._PATCHED
        patched = type(loop)
        assert patched is not plain and issubclass(patched, plain)  # a class of its own
        assert callback(2) == 4
        assert type(loop) is patched  # once: the second call changed nothing
        assert [x for x in _sync._PATCHED if x is loop] == [loop]
        before = len(ticks)
        assert run_sync(slow_double(3)) == 6
        assert len(ticks) > before  # the loop's other tasks ran meanwhile
        assert run_sync(Awaitable()) == 42
        task = asyncio.ensure_future(double(4))
        assert run_sync(task) == 8  # a Task of this loop
        background.cancel()
        return plain

    plain = asyncio.run(cell())
    assert not getattr(plain, "_nest_patched", False)  # the loop's class itself is untouched
    fresh = asyncio.new_event_loop()
    try:
        assert type(fresh) is plain and not hasattr(fresh, "_nest_patched")  # no other loop
    finally:
        fresh.close()
    assert asyncio.run is original_run and asyncio.Task is original_task  # asyncio unpatched


def test_inside_a_running_loop_exceptions_and_timeouts_propagate_unchanged():
    err = Boom("tool failed")

    def callback():
        run_sync(fail(err))

    async def cell():
        with pytest.raises(Boom) as caught:
            callback()
        assert caught.value is err
        with pytest.raises(TimeoutError):
            run_sync(asyncio.sleep(30), timeout_s=0.05)
        return await double(1)  # the loop is still fine

    assert asyncio.run(cell()) == 2


def test_a_future_of_another_loop_is_refused():
    other = asyncio.new_event_loop()
    try:
        future = other.create_future()

        async def cell():
            with pytest.raises(ValueError, match="another event loop"):
                run_sync(future)

        asyncio.run(cell())
    finally:
        other.close()


def test_run_sync_is_exported():
    assert lash_nb.run_sync is run_sync
    assert "run_sync" in lash_nb.__all__


# --- a real kernel ----------------------------------------------------------------------------------


def readme_example() -> str:
    """The README's "Using lash_core" example, as a notebook user pastes it: ``asyncio.run(main())``
    becomes ``lash_nb.run_sync(main())``."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Using lash_core", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "asyncio.run(main())" in code
    return "import lash_nb\n" + code.replace("asyncio.run(main())", "lash_nb.run_sync(main())")


@pytest.fixture(scope="module")
def peer():
    with lash_nb.PeerKernel.start(timeout=120.0, cwd=str(ROOT)) as kernel:
        yield kernel


@pytest.mark.slow
def test_in_a_kernel_the_readme_example_runs_through_run_sync(peer):
    with pytest.raises(lash_nb.PeerKernelError, match="cannot be called from a running event loop"):
        peer.run("import asyncio\nasync def f():\n    return 1\nasyncio.run(f())")  # the bug
    out = peer.run(readme_example())
    events = [ast.literal_eval(line) for line in out.splitlines()]  # one wire dict per line
    assert [e["type"] for e in events][0] == "turn_activity"
    assert events[-1] == {
        "protocol_version": 3,
        "session_id": "chat-1",
        "revision": 1,
        "cursor": events[-1]["cursor"],
        "type": "committed",
    }
    assert "".join(
        e["activity"].get("text", "") for e in events if e["type"] == "turn_activity"
    ).startswith("Hello! I am a scripted model")


@pytest.mark.slow
def test_in_a_kernel_widget_callbacks_run_a_turn_through_run_sync(peer):
    peer.run(
        textwrap.dedent(
            """
            import asyncio, ipywidgets as widgets, lash_nb
            from lash_core import TurnInput
            from lash_core.testing import Scenario

            scenario = await Scenario.create(session_id="sync-widgets", backend="memory")
            handle = scenario.handle
            seen = []

            def say(prompt):  # what ipywidgets.interact calls, synchronously, on every change
                outcome = lash_nb.run_sync(handle.run_turn(TurnInput.text(prompt)))
                seen.append((outcome.status.value, int(outcome.revision), int(handle.observe().revision)))

            def on_click(button):
                say("clicked")

            button = widgets.Button(description="run a turn")
            button.on_click(on_click)
            """
        )
    )
    out = peer.run("button.click()\nprint(seen)")
    assert out == "[('finished', 1, 1)]\n"  # committed, and visible right after the callback
    # ipywidgets.interact calls `say` once when it is built and again on each change of its control
    out = peer.run(
        "w = widgets.interact(say, prompt='hello')\n"
        "w.widget.children[0].value = 'again'\n"
        "print(seen[1:])\n"
        "print(asyncio.get_running_loop() in lash_nb._sync._PATCHED, len(lash_nb._sync._PATCHED))"
    )
    assert out == "[('finished', 2, 2), ('finished', 3, 3)]\nTrue 1\n"
    # the patched kernel loop still runs top-level await and background tasks
    assert peer.run("await asyncio.sleep(0.01)\nprint(int(handle.observe().revision))") == "3\n"
