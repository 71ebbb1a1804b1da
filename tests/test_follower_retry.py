"""SessionFollower's retry policy: a source that is down is ridden out, then followed again."""

from __future__ import annotations

import asyncio

import pytest

from lash_core import (
    GapResume,
    InMemoryLiveReplayStore,
    InvalidObservationError,
    LiveReplayStoreFailure,
    Reconnected,
    RetryPolicy,
    SessionFollower,
)
from lash_core.testing import Scenario
from sources import OutageSource, delta

FAST = RetryPolicy(initial_delay_s=0.01, max_delay_s=0.02)


def test_policy_validates_and_backs_off() -> None:
    policy = RetryPolicy(initial_delay_s=0.1, max_delay_s=1.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5, 100)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    for bad in (0, -1, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="initial_delay_s"):
            RetryPolicy(initial_delay_s=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least"):
        RetryPolicy(initial_delay_s=2.0, max_delay_s=1.0)
    with pytest.raises(ValueError, match="give_up_after_s"):
        RetryPolicy(give_up_after_s=-1)


async def test_follower_refuses_a_policy_of_the_wrong_type() -> None:
    async with await Scenario.create(backend="memory") as s:
        with pytest.raises(InvalidObservationError, match="RetryPolicy"):
            SessionFollower(s.handle, retry=0.5)  # type: ignore[arg-type]


async def _items_until(follower: SessionFollower, predicate, limit: int = 50) -> list:
    seen: list = []
    for _ in range(limit):
        seen.extend(await asyncio.wait_for(follower.next_items(), 5))
        if predicate(seen):
            return seen
    raise AssertionError(f"not reached: {seen!r}")


async def test_outage_mid_stream_replays_what_was_missed_without_a_gap() -> None:
    async with await Scenario.create(backend="memory") as s:
        source = OutageSource(s.handle)
        follower = SessionFollower(source, retry=FAST)
        await follower.catch_up()  # an asynchronous source is read at the first await
        delta(s.handle, "a")
        first = await _items_until(follower, lambda items: len(items) >= 1)
        assert [e.payload.activity.event.text for e in first] == ["a"]
        source.down = True
        reader = asyncio.ensure_future(follower.next_items())
        await asyncio.sleep(0.05)  # the read fails, the policy retries while we append
        delta(s.handle, "b")
        delta(s.handle, "c")
        assert not reader.done() and source.refused >= 2
        source.down = False
        items = [*await asyncio.wait_for(reader, 5)]
        items += await _items_until(follower, lambda got: len(got) >= 2) if len(items) < 3 else []
        assert isinstance(items[0], Reconnected)
        assert items[0].cursor == first[0].cursor and items[0].attempts >= 2
        texts = [i.payload.activity.event.text for i in items[1:]]
        assert texts == ["b", "c"]
        assert follower.gap_count == 0 and follower.reconnect_count == 1
        assert follower.cursor == s.handle.current_session_observation().cursor
        follower.close()


async def test_outage_longer_than_retention_reconnects_into_a_gap() -> None:
    store = InMemoryLiveReplayStore.with_bounds(2, 120.0)
    async with await Scenario.create(backend="memory", replay_store=store) as s:
        source = OutageSource(s.handle)
        follower = SessionFollower(source, retry=FAST)
        await follower.catch_up()  # an asynchronous source is read at the first await
        delta(s.handle, "a")
        await _items_until(follower, lambda items: len(items) >= 1)
        source.down = True
        reader = asyncio.ensure_future(follower.next_items())
        await asyncio.sleep(0.03)
        for text in "bcdef":
            delta(s.handle, text)
        source.down = False
        items = list(await asyncio.wait_for(reader, 5))
        assert isinstance(items[0], Reconnected)
        assert isinstance(items[1], GapResume) and items[1].gap.reason == "trimmed"
        assert follower.gap_count == 1
        assert follower.cursor == s.handle.current_session_observation().cursor
        follower.close()


async def test_a_source_down_at_the_start_is_waited_for() -> None:
    async with await Scenario.create(backend="memory") as s:
        source = OutageSource(s.handle)
        source.down = True
        follower = SessionFollower(source, retry=FAST)
        reader = asyncio.ensure_future(follower.next_items())
        await asyncio.sleep(0.05)
        assert not reader.done()
        source.down = False
        items = list(await asyncio.wait_for(reader, 5))
        assert isinstance(items[0], Reconnected) and follower.reconnect_count == 1
        delta(s.handle, "x")
        items = await _items_until(follower, lambda got: len(got) >= 1)
        assert [e.payload.activity.event.text for e in items] == ["x"]
        follower.close()


async def test_give_up_raises_the_last_error() -> None:
    async with await Scenario.create(backend="memory") as s:
        source = OutageSource(s.handle)
        follower = SessionFollower(
            source, retry=RetryPolicy(initial_delay_s=0.01, max_delay_s=0.01, give_up_after_s=0.05)
        )
        await follower.catch_up()
        source.down = True
        with pytest.raises(LiveReplayStoreFailure, match="unreachable"):
            await asyncio.wait_for(follower.next_items(), 5)


async def test_without_a_policy_the_first_failure_is_raised() -> None:
    async with await Scenario.create(backend="memory") as s:
        source = OutageSource(s.handle)
        follower = SessionFollower(source)
        await follower.catch_up()
        source.down = True
        with pytest.raises(LiveReplayStoreFailure, match="unreachable"):
            await asyncio.wait_for(follower.next_items(), 5)
        assert follower.reconnect_count == 0


async def test_closing_the_follower_stops_the_retries() -> None:
    async with await Scenario.create(backend="memory") as s:
        source = OutageSource(s.handle)
        follower = SessionFollower(source, retry=FAST)
        await follower.catch_up()
        source.down = True
        reader = asyncio.ensure_future(follower.next_items())
        await asyncio.sleep(0.03)
        follower.close()
        with pytest.raises(Exception) as caught:
            await asyncio.wait_for(reader, 5)
        assert type(caught.value).__name__ == "ReplayClosed"


async def test_subscribe_connects_now_so_later_events_are_delivered() -> None:
    async with await Scenario.create(backend="memory") as s:
        source = OutageSource(s.handle)
        follower = SessionFollower(source)
        assert follower.cursor is None and not follower.connected
        assert await follower.subscribe() is True  # reads the tail, then subscribes
        assert follower.cursor == s.handle.current_session_observation().cursor
        assert await follower.subscribe() is True  # already connected: nothing more
        delta(s.handle, "after")
        items = await asyncio.wait_for(follower.next_items(), 5)
        assert [e.payload.activity.event.text for e in items] == ["after"]
        source.down = True
        follower.disconnect()
        with pytest.raises(LiveReplayStoreFailure, match="unreachable"):
            await follower.subscribe()  # no retry here: next_items retries
        follower.close()
        with pytest.raises(Exception) as caught:
            await follower.subscribe()
        assert type(caught.value).__name__ == "ReplayClosed"
