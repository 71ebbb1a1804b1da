"""The docstring store (``docstring_store.py``) under the real clients: a ``RuntimeHandle`` runs a
turn on it, a ``SessionFollower`` sees every event in order, a notebook ``SessionMonitor`` ingests
them all."""

from __future__ import annotations

import asyncio

import pytest

from lash_core import LashRuntime, RuntimeHandle, ScriptedModel, SessionFollower, SessionObservationEvent
from lash_core.testing import FakeClock

from .docstring_store import DocstringReplayStore


async def test_handle_follower_and_monitor_work_on_the_docstring_store():
    lash_nb = pytest.importorskip("lash_nb")
    store = DocstringReplayStore(clock=FakeClock())
    model = ScriptedModel(["Hello there, friend of the docstrings"], chunk_size=4)
    runtime = await LashRuntime.builder().with_session_id("doc").with_model(model).build()
    handle = RuntimeHandle(runtime, live_replay_store=store)
    start = handle.current_session_observation().cursor
    follower = SessionFollower(handle)
    monitor = lash_nb.SessionMonitor(handle, controls=False)
    seen: list[SessionObservationEvent] = []

    async def follow() -> None:
        async for item in follower:
            assert isinstance(item, SessionObservationEvent), item  # no gap, no lag
            seen.append(item)

    reader = asyncio.create_task(follow())
    await handle.run_turn("hi")
    expected = store.replay_after_cursor(start).events
    assert len(expected) > 2 and expected[-1].type == "committed"
    assert [e.live_position for e in expected] == list(range(1, len(expected) + 1))
    for _ in range(200):
        if len(seen) == len(expected) and monitor.event_count == len(expected):
            break
        await asyncio.sleep(0.01)
    assert seen == list(expected)  # every event, in order, once
    assert follower.cursor == expected[-1].cursor == handle.observe().cursor
    assert monitor.event_count == len(monitor.history) == len(expected)
    monitor.stop()
    follower.close()
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    store.close()
