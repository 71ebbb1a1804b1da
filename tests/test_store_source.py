"""StoreSource: a SessionFollower on a bare store gets what a RuntimeHandle gives, gaps included."""

from __future__ import annotations

import pytest

from lash_core import (
    AssistantProseDelta,
    Committed,
    GapResume,
    InMemoryLiveReplayStore,
    InvalidObservationError,
    LiveReplayGapReason,
    MalformedCursorError,
    Replayed,
    SessionCursor,
    SessionFollower,
    StoreSource,
    TurnActivity,
    TurnActivityPayload,
    WrongSessionError,
)
from lash_core.testing import FakeClock


def delta(text: str = "x") -> TurnActivityPayload:
    return TurnActivityPayload(TurnActivity.independent(AssistantProseDelta(text)))


def test_follower_on_a_store_reads_every_event_then_a_trimmed_gap():
    clock = FakeClock()
    store = InMemoryLiveReplayStore.with_bounds(4, 60.0, clock=clock)
    source = StoreSource(store, "s")
    follower = SessionFollower(source)
    assert follower.cursor.parse().live_position == 0
    for i in range(3):
        store.append("s", 0, delta(str(i)))
    store.append("s", 0, Committed(None))
    result = follower.connect()
    assert isinstance(result, Replayed)
    assert [e.live_position for e in result.events] == [1, 2, 3, 4]
    assert source.current_session_observation().read_view.messages == ()
    follower.disconnect()
    for i in range(10):
        store.append("s", 0, delta())
    result = follower.resume()
    assert isinstance(result, GapResume)
    assert result.gap.reason is LiveReplayGapReason.TRIMMED
    assert result.gap.latest_cursor.parse().live_position == 14
    assert follower.cursor.parse().live_position == 14


def test_cursor_from_the_future_is_unavailable_and_foreign_cursors_are_refused():
    store = InMemoryLiveReplayStore()
    source = StoreSource(store, "s")
    result = source.resume_session_observation(SessionCursor.new("s", 0, 5))
    assert isinstance(result, GapResume) and result.gap.reason is LiveReplayGapReason.UNAVAILABLE
    with pytest.raises(WrongSessionError):
        source.resume_session_observation(SessionCursor.new("other", 0, 0))
    with pytest.raises(MalformedCursorError):
        source.subscribe_session_observation("not a cursor")
    with pytest.raises(InvalidObservationError):
        StoreSource(store, "")
    with pytest.raises(InvalidObservationError):
        StoreSource(object(), "s")  # type: ignore[arg-type]


async def test_async_follower_on_a_store_gets_live_events():
    store = InMemoryLiveReplayStore()
    follower = SessionFollower(StoreSource(store, "s"))
    store.append("s", 0, delta())
    items = await follower.next_items()
    store.append("s", 0, delta())
    items += await follower.next_items()
    assert [i.live_position for i in items] == [1, 2]


def test_a_commit_without_a_view_never_replaces_a_richer_view_with_an_empty_one():
    from lash_core import ObservationSummary

    store = InMemoryLiveReplayStore()
    follower = SessionFollower(StoreSource(store, "s"))
    follower.connect()
    store.append("s", 1, Committed(ObservationSummary("s", 3)))
    follower.poll()
    assert follower.read_view.turn_index == 3 and not follower.view_stale
    store.append("s", 2, Committed(None))  # read back from a durable store or the wire
    follower.poll()
    # the store alone knows no transcript: the richer view stays, marked stale
    assert follower.read_view.turn_index == 3 and follower.view_stale
    store.append("s", 3, Committed(ObservationSummary("s", 4)))
    follower.poll()
    assert follower.read_view.turn_index == 4 and not follower.view_stale
