"""SessionFollower: the one client of a session's stream (resume, subscribe, gap and lag policy)."""

from __future__ import annotations

import asyncio

import pytest

from lash_core import (
    AssistantProseDelta,
    Committed,
    GapResume,
    Lagged,
    LiveReplayGapReason,
    LiveReplayStoreFailure,
    MalformedCursorError,
    ObservationSource,
    Replayed,
    ReplayClosed,
    SessionCursor,
    SessionFollower,
    SessionObservationEvent,
    TurnActivity,
    WrongSessionError,
)
from lash_core.testing import Scenario
from sources import MovingOnSource


def delta(handle, text="x"):
    handle.record_turn_activity(TurnActivity.independent(AssistantProseDelta(text)))


class AsyncSource:
    """The handle behind awaitables, as a client of a remote service would be."""

    def __init__(self, handle):
        self.handle = handle
        self.session_id = handle.session_id

    async def current_session_observation(self):
        return self.handle.current_session_observation()

    async def resume_session_observation(self, cursor):
        return self.handle.resume_session_observation(cursor)

    async def subscribe_session_observation(self, cursor):
        return self.handle.subscribe_session_observation(cursor)


async def test_sources_satisfy_the_protocol():
    s = await Scenario.create()
    assert isinstance(s.handle, ObservationSource)
    assert isinstance(AsyncSource(s.handle), ObservationSource)


async def test_starts_at_the_current_observation_and_catches_up():
    s = await Scenario.create(session_id="chat")
    follower = SessionFollower(s.handle)
    assert follower.cursor == s.handle.current_session_observation().cursor
    assert follower.observation.read_view == s.handle.observe().read_view
    await s.handle.run_turn("hello")
    result = await follower.catch_up()
    assert isinstance(result, Replayed) and result.events
    assert follower.cursor == result.events[-1].cursor == s.handle.observe().cursor
    assert follower.read_view == s.handle.observe().read_view  # rebuilt from the commit
    assert follower.received == len(result.events)
    assert (await follower.catch_up()).events == ()


async def test_a_cursor_of_another_session_or_malformed_is_refused_up_front():
    s = await Scenario.create(session_id="chat")
    with pytest.raises(WrongSessionError):
        SessionFollower(s.handle, SessionCursor.new("other", 0, 0))
    with pytest.raises(MalformedCursorError):
        SessionFollower(s.handle, "nonsense")


async def test_a_gap_replaces_the_view_moves_the_cursor_and_is_recorded():
    s = await Scenario.create(session_id="chat", max_events=2)
    follower = SessionFollower(s.handle)
    start = follower.cursor
    await s.handle.run_turn("hello")
    result = await follower.catch_up()
    assert isinstance(result, GapResume) and result.gap.reason is LiveReplayGapReason.TRIMMED
    assert result.gap.requested_cursor == start
    assert follower.cursor == result.observation.cursor == s.handle.current_session_observation().cursor
    assert follower.read_view == s.handle.observe().read_view
    assert list(follower.gaps) == [result.gap] and follower.gap_count == 1


async def test_live_iteration_yields_events_in_order():
    s = await Scenario.create(session_id="chat")
    follower = SessionFollower(s.handle)
    seen = []

    async def read():
        async for item in follower:
            seen.append(item)
            if isinstance(item, SessionObservationEvent) and isinstance(item.payload, Committed):
                return

    reader = asyncio.create_task(read())
    await asyncio.sleep(0)
    await s.handle.run_turn("hello")
    await asyncio.wait_for(reader, 5)
    positions = [e.live_position for e in seen]
    assert positions == list(range(1, len(seen) + 1))
    assert follower.connected and follower.cursor == seen[-1].cursor
    follower.close()
    assert follower.closed and not follower.connected
    with pytest.raises(ReplayClosed):
        await follower.next_items()


async def test_lag_is_recorded_and_the_missed_events_are_replayed():
    s = await Scenario.create(session_id="chat", subscriber_backlog=4)
    follower = SessionFollower(s.handle)
    follower.poll()  # subscribed
    for i in range(10):
        delta(s.handle, str(i))
    items = follower.poll()
    lags = [i for i in items if isinstance(i, Lagged)]
    events = [i for i in items if isinstance(i, SessionObservationEvent)]
    assert len(lags) == 1 and lags[0].count == 6 and lags[0].resumed_from == SessionCursor.new("chat", 0, 0)
    # retention (2048) still held them: the resubscribe replayed every one, none lost
    assert [e.live_position for e in events] == list(range(1, 11))
    assert (follower.lag_count, follower.lagged_events, follower.gap_count) == (1, 6, 0)


async def test_lag_past_retention_becomes_an_explicit_gap():
    s = await Scenario.create(session_id="chat", subscriber_backlog=4, max_events=3)
    follower = SessionFollower(s.handle)
    follower.poll()
    for i in range(10):
        delta(s.handle, str(i))
    items = follower.poll()
    kinds = [type(i).__name__ for i in items]
    assert kinds[:2] == ["Lagged", "GapResume"]
    assert follower.gap_count == 1 and follower.cursor == s.handle.current_session_observation().cursor


async def test_two_gaps_in_a_row_are_both_recorded_and_following_continues():
    s = await Scenario.create(session_id="chat", max_age=5.0)
    source = MovingOnSource(s, times=2)
    follower = SessionFollower(source)
    delta(s.handle, "before")
    s.clock.advance(10.0)
    outcome = follower.connect()  # gap, then the resubscribe gaps again, then it subscribes
    assert isinstance(outcome, GapResume)
    assert follower.gap_count == 2 and len(follower.gaps) == 2
    assert [g.reason for g in follower.gaps] == [LiveReplayGapReason.TRIMMED] * 2
    assert follower.gaps[1].requested_cursor == follower.gaps[0].latest_cursor
    assert follower.connected and source.subscribes == 3
    delta(s.handle, "after")
    assert [e.payload.activity.event.text for e in follower.poll()] == ["after"]

    # the same through the async path
    source.times = 2
    follower.disconnect()
    items = await follower.next_items()
    assert [type(i).__name__ for i in items] == ["GapResume", "GapResume"]
    assert follower.gap_count == 4


async def test_a_source_that_never_stops_gapping_is_a_typed_failure():
    s = await Scenario.create(session_id="chat", max_age=5.0)
    source = MovingOnSource(s, times=10_000)
    delta(s.handle)
    s.clock.advance(10.0)
    follower = SessionFollower(source, SessionCursor.new("chat", 0, 0))
    with pytest.raises(LiveReplayStoreFailure, match="gaps in a row"):
        follower.connect()
    assert follower.gap_count == 8 and not follower.connected
    with pytest.raises(LiveReplayStoreFailure, match="gaps in a row"):
        await follower.next_items()
    assert follower.gap_count == 16


async def test_a_restarted_store_is_followed_through_an_unavailable_gap():
    s = await Scenario.create(session_id="chat", backend="memory")
    follower = SessionFollower(s.handle)
    for _ in range(3):
        delta(s.handle)
    assert len(await follower.next_items()) == 3
    s.restart_store()  # the old store closes; the handle now appends to a fresh one
    delta(s.handle, "fresh")
    items = await asyncio.wait_for(follower.next_items(), 5)
    assert isinstance(items[0], GapResume) and items[0].gap.reason is LiveReplayGapReason.UNAVAILABLE
    assert follower.gap_count == 1


async def test_a_closed_store_ends_iteration_and_keeps_the_cursor():
    s = await Scenario.create(session_id="chat")
    follower = SessionFollower(s.handle)
    delta(s.handle)
    await follower.next_items()
    cursor = follower.cursor
    follower2 = SessionFollower(s.handle, cursor)
    follower2.poll()  # subscribed before the close
    s.store.close()
    assert [item async for item in follower] == []
    assert not follower.connected and follower.cursor == cursor
    with pytest.raises(ReplayClosed) as info:
        await follower2.next_items()
    assert isinstance(info.value.__cause__, LiveReplayStoreFailure)
    with pytest.raises(LiveReplayStoreFailure, match="closed"):  # a new attempt: the store is closed
        await follower2.next_items()


async def test_an_async_source_works_through_the_async_methods_only():
    s = await Scenario.create(session_id="chat")
    source = AsyncSource(s.handle)
    follower = SessionFollower(source)
    assert follower.cursor is None  # read at the first await
    delta(s.handle)
    result = await follower.catch_up()
    assert isinstance(result, Replayed) and follower.cursor is not None
    # events appended after catch_up arrive through the subscription
    delta(s.handle, "live")
    items = await follower.next_items()
    assert [e.payload.activity.event.text for e in items] == ["live"]
    for call in (follower.connect, follower.poll, follower.resume):
        with pytest.raises(TypeError, match="asynchronous"):
            call()


async def test_the_gap_log_is_bounded_and_counts_everything():
    s = await Scenario.create(session_id="chat", max_events=1)
    follower = SessionFollower(s.handle, keep_gaps=3)
    for _ in range(10):
        delta(s.handle)
        delta(s.handle)
        assert isinstance(follower.resume(), GapResume)
        follower._cursor = SessionCursor.new("chat", 0, 0)  # as a client that lost its cursor
    assert follower.gap_count == 10 and len(follower.gaps) == 3


async def test_every_gap_of_a_connect_is_reported_and_recorded_by_the_simulated_client():
    from lash_core.testing import SimulatedClient
    from sources import MovingOnSource, delta as add

    s = await Scenario.create(session_id="chat", max_age=5.0)
    client = SimulatedClient(s.handle, "c")
    client.disconnect()
    add(s.handle)
    s.clock.advance(10.0)
    source = MovingOnSource(s, times=2)
    client.follower._source = source  # the store moves on twice while it reconnects
    outcome = client.connect()
    assert outcome.kind == "gap"
    assert len(client.follower.last_gaps) == 2 and client.gap_count == 2
    assert [o.kind for o in list(client.outcomes)[-2:]] == ["gap", "gap"]
    assert len(client.gaps) == 2


async def test_synchronous_calls_before_an_async_source_was_read_are_a_type_error():
    s = await Scenario.create(session_id="chat")
    follower = SessionFollower(AsyncSource(s.handle))
    for call in (follower.connect, follower.poll, follower.resume):
        with pytest.raises(TypeError, match="asynchronous"):
            call()
