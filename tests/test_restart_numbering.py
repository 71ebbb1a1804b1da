"""Restart-safe numbering (issue 8, part 4): a cursor from before a store restart is replayed
correctly (a durable store keeps positions) or answered with an ``unavailable`` gap, never with a
silent replay of another store instance's events.

The rule is "Instance numbering" and gap rule 0 in ``LiveReplayStore`` (``lash_core/_replay.py``);
``InMemoryLiveReplayStore(instance_numbering=True)`` implements it, and
``Scenario.restart_store()`` of a memory scenario uses it.
"""

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lash_core import GapResume, SessionFollower
from lash_core._cursor import SessionCursor
from lash_core._errors import InvalidObservationError, LiveReplayStoreFailure
from lash_core._events import AssistantProseDelta, TurnActivity, TurnActivityPayload
from lash_core._gap import LiveReplayGapReason
from lash_core._replay import (
    POSITION_BASE_SHIFT,
    Gap,
    InMemoryLiveReplayStore,
    Replayed,
    Subscribed,
    instance_position_base,
)
from lash_core.testing import Scenario

UNAVAILABLE = LiveReplayGapReason.UNAVAILABLE
TRIMMED = LiveReplayGapReason.TRIMMED
WALL = 1_750_000_000.0  # a wall-clock reading, in seconds
BASE = instance_position_base(WALL)


def delta(text: str = "x") -> TurnActivityPayload:
    return TurnActivityPayload(TurnActivity.independent(AssistantProseDelta(text)))


def fill(store, count: int, session: str = "s") -> list:
    return [store.append(session, 0, delta(str(i))) for i in range(count)]


def positions(events) -> list[int]:
    return [e.live_position for e in events]


def numbered(wall: float = WALL, **kw) -> InMemoryLiveReplayStore:
    return InMemoryLiveReplayStore(instance_numbering=True, wall_clock=lambda: wall, **kw)


def gap_of(store, cursor):
    """The gap both replay and subscribe give for ``cursor`` (``None`` when neither gaps)."""
    replayed = store.replay_after_cursor(cursor)
    subscribed = store.subscribe_after_cursor(cursor)
    if isinstance(subscribed, Subscribed):
        subscribed.subscription.close()
    assert isinstance(replayed, Gap) == isinstance(subscribed, Gap)
    return replayed.reason if isinstance(replayed, Gap) else None


# -- the issue's scenario ---------------------------------------------------------------------------


def test_the_issues_scenario_with_rust_numbering_replays_the_wrong_events():
    """What the issue reports, kept as the default (Rust's numbering): a cursor at 24 from the
    old store replays the new store's 25..34 once its tail passes 24, skipping 1..24."""
    old = InMemoryLiveReplayStore()
    cursor = fill(old, 24)[-1].cursor
    old.close()
    new = InMemoryLiveReplayStore()  # a restart: a new, empty store
    fill(new, 34)
    result = new.replay_after_cursor(cursor)
    assert isinstance(result, Replayed) and positions(result.events) == list(range(25, 35))


def test_the_issues_scenario_with_instance_numbering_is_unavailable():
    old = InMemoryLiveReplayStore()
    cursor = fill(old, 24)[-1].cursor
    assert cursor.parse().live_position == 24
    old.close()
    new = numbered()
    events = fill(new, 34)
    assert positions(events) == list(range(BASE + 1, BASE + 35))  # never 25..34
    assert gap_of(new, cursor) is UNAVAILABLE
    assert gap_of(new, str(cursor)) is UNAVAILABLE  # the text form alike


async def test_the_issues_scenario_through_a_memory_scenario():
    s = await Scenario.create(session_id="chat", backend="memory", max_events=100)
    h = s.handle
    for i in range(24):
        h.record_queue_changed("enqueued", [f"old-{i}"])
    cursor = h.current_session_observation().cursor
    assert cursor.parse().live_position == 24  # the first store keeps Rust's numbering
    s.restart_store()
    for i in range(34):
        h.record_queue_changed("enqueued", [f"new-{i}"])
    assert gap_of(s.store, cursor) is UNAVAILABLE
    resumed = h.resume_session_observation(cursor)
    assert isinstance(resumed, GapResume) and resumed.gap.reason is UNAVAILABLE
    assert resumed.observation.cursor == h.current_session_observation().cursor
    latest = resumed.gap.latest_cursor.parse().live_position
    assert latest == s.store.position_base + 34 and latest > 2**POSITION_BASE_SHIFT


# -- positions per instance ---------------------------------------------------------------------


def test_positions_count_from_the_instance_base():
    store = numbered()
    assert store.instance_numbering and store.position_base == BASE == round(WALL * 1000) << 22
    assert store.current_cursor("s", 3) == SessionCursor.new("s", 3, BASE)  # never appended to
    assert gap_of(store, SessionCursor.new("s", 0, BASE)) is None  # this instance's own start
    assert store.replay_after_cursor(SessionCursor.new("s", 0, BASE)) == Replayed(())
    first, second = fill(store, 2)
    assert (first.live_position, second.live_position) == (BASE + 1, BASE + 2)
    assert store.current_cursor("s", 0) == SessionCursor.new("s", 0, BASE + 2)
    result = store.replay_after_cursor(SessionCursor.new("s", 0, BASE))
    assert isinstance(result, Replayed) and positions(result.events) == [BASE + 1, BASE + 2]
    assert gap_of(store, SessionCursor.new("s", 0, BASE + 3)) is UNAVAILABLE  # from the future
    assert gap_of(store, SessionCursor.new("other", 0, BASE)) is None  # each session alike
    assert "position_base=" in repr(store)


def test_an_instance_started_a_second_later_starts_above_every_position_of_the_earlier():
    earlier = numbered(WALL)
    handed_out = fill(earlier, 50)
    later = numbered(WALL + 1.0)
    assert later.position_base > handed_out[-1].live_position
    fill(later, 5)
    for event in handed_out:
        assert gap_of(later, event.cursor) is UNAVAILABLE
    assert gap_of(later, earlier.current_cursor("s", 0)) is UNAVAILABLE
    assert gap_of(later, earlier.current_cursor("never-seen", 0)) is UNAVAILABLE


def test_old_cursors_stay_valid_lashsc1_cursors_and_come_back_unavailable():
    old = numbered(WALL)
    old_events = fill(old, 3)
    new = numbered(WALL + 60)
    fill(new, 3)
    for cursor in [e.cursor for e in old_events] + [SessionCursor.new("s", 9, 0), SessionCursor.new("s", 0, 1)]:
        parsed = SessionCursor(str(cursor)).parse()  # still parses: a well-formed lashsc1: cursor
        assert str(cursor).startswith("lashsc1:") and parsed.session_id == "s"
        assert gap_of(new, cursor) is UNAVAILABLE


def test_default_numbering_is_rusts():
    for store in (InMemoryLiveReplayStore(), InMemoryLiveReplayStore.with_bounds(8, 30.0)):
        assert not store.instance_numbering and store.position_base == 0
        assert store.current_cursor("s", 0) == SessionCursor.new("s", 0, 0)
        assert positions(fill(store, 3)) == [1, 2, 3]
        assert store.replay_after_cursor(SessionCursor.new("s", 0, 0)) != Gap(UNAVAILABLE)
        assert store.statistics().forgotten_floor == 0
        assert "position_base" not in repr(store)


def test_with_bounds_takes_the_opt_in():
    store = InMemoryLiveReplayStore.with_bounds(
        4, 30.0, instance_numbering=True, wall_clock=lambda: WALL
    )
    assert store.position_base == BASE and store.config.max_events_per_session == 4


def test_bad_numbering_arguments_are_refused_before_a_store_exists():
    with pytest.raises(InvalidObservationError, match="instance_numbering must be a bool"):
        InMemoryLiveReplayStore(instance_numbering=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidObservationError, match="wall_clock must be a callable"):
        InMemoryLiveReplayStore(instance_numbering=True, wall_clock=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidObservationError, match="out of range"):
        numbered(-1.0)
    with pytest.raises(InvalidObservationError, match="out of range"):
        numbered(float(2**42) / 1000)  # past 2109: the base would not fit a u64
    with pytest.raises(LiveReplayStoreFailure, match="not finite"):
        numbered(float("nan"))  # the clock read refuses it first

    def broken() -> float:
        raise OSError("no wall clock")

    with pytest.raises(LiveReplayStoreFailure, match="no wall clock"):
        InMemoryLiveReplayStore(instance_numbering=True, wall_clock=broken)
    calls = []
    InMemoryLiveReplayStore(wall_clock=lambda: calls.append(1) or WALL)  # not read when off
    assert calls == []


def test_the_wall_clock_is_read_once_and_the_monotonic_clock_keeps_measuring_ages():
    reads = []
    now = [100.0]

    def wall() -> float:
        reads.append(1)
        return WALL + len(reads)  # would move the base, were it read again

    store = InMemoryLiveReplayStore.with_bounds(
        100, 10.0, clock=lambda: now[0], instance_numbering=True, wall_clock=wall
    )
    base = store.position_base
    fill(store, 3)
    now[0] += 11.0  # ages on the monotonic clock: everything expires
    store.trim_session("s")
    assert reads == [1] and store.position_base == base
    assert gap_of(store, SessionCursor.new("s", 0, base + 1)) is TRIMMED
    assert gap_of(store, SessionCursor.new("s", 0, base - 1)) is UNAVAILABLE


# -- statistics and tombstones keep working --------------------------------------------------------


def test_statistics_and_tombstones_with_instance_numbering():
    now = [0.0]
    store = InMemoryLiveReplayStore.with_bounds(
        2, 10.0, clock=lambda: now[0], instance_numbering=True, wall_clock=lambda: WALL
    )
    unknown = store.statistics("nobody")
    assert (unknown.tail_position, unknown.forgotten_floor, unknown.retained_events) == (BASE, BASE, 0)
    fill(store, 5, "a")
    stats = store.statistics("a")
    assert (stats.oldest_position, stats.newest_position, stats.tail_position) == (BASE + 4, BASE + 5, BASE + 5)
    assert (stats.retained_events, stats.evicted_total) == (2, 3)
    now[0] = 11.0
    store.trim_session("a")  # everything expires: the session is forgotten, its tail kept
    forgotten = store.statistics("a")
    assert (forgotten.sessions, forgotten.forgotten_sessions) == (0, 1)
    assert (forgotten.tail_position, forgotten.evicted_total) == (BASE + 5, 5)
    assert store._tombstones["a"] == BASE + 5  # the short form: evicted == tail - base
    assert store.current_cursor("a", 0).parse().live_position == BASE + 5
    assert gap_of(store, SessionCursor.new("a", 0, BASE + 2)) is TRIMMED
    assert gap_of(store, SessionCursor.new("a", 0, BASE + 5)) is None
    assert gap_of(store, SessionCursor.new("a", 0, 2)) is UNAVAILABLE  # an earlier instance's
    # the log opens again from the tombstone, with its evicted count
    assert store.append("a", 0, delta()).live_position == BASE + 6
    assert store.statistics("a").evicted_total == 5 and store.statistics().evicted_total == 5
    now[0] = 30.0
    store.trim_session("a")  # forgotten again: still every position since the base evicted
    assert store._tombstones["a"] == BASE + 6 and store.statistics("a").evicted_total == 6


def test_pushed_out_tombstones_raise_the_floor_from_the_base():
    now = [0.0]
    store = InMemoryLiveReplayStore.with_bounds(
        1, 1.0, clock=lambda: now[0], instance_numbering=True, wall_clock=lambda: WALL
    )
    store._max_forgotten = 1
    fill(store, 3, "a")
    fill(store, 1, "b")
    now[0] = 5.0
    store.trim_session("a")
    store.trim_session("b")  # pushes a's tombstone out: the floor rises to a's tail
    stats = store.statistics()
    assert stats.forgotten_floor == BASE + 3 and stats.forgotten_sessions == 1
    assert store.current_cursor("a", 0).parse().live_position == BASE + 3  # from the floor
    assert store.append("c", 0, delta()).live_position == BASE + 4  # new sessions too
    assert gap_of(store, SessionCursor.new("a", 0, 3)) is UNAVAILABLE
    now[0] = 10.0
    store.trim_session("c")  # it started at the floor: evicted 1, not tail - base (the long form)
    assert store._tombstones["c"] == (BASE + 4, 1) and store.statistics("c").evicted_total == 1


# -- the property -----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    before=st.integers(0, 60),
    old_numbered=st.booleans(),
    later_by=st.floats(1.0, 10**6),
    after=st.integers(0, 80),
    pick=st.data(),
)
def test_any_old_cursor_is_unavailable_after_a_restart_whatever_is_appended(
    before, old_numbered, later_by, after, pick
):
    old = numbered(WALL) if old_numbered else InMemoryLiveReplayStore()
    fill(old, before)
    base = old.position_base
    position = pick.draw(st.integers(0, base + before), label="old cursor position")
    if old_numbered and position < base:  # a cursor the old store would not have handed out
        position = pick.draw(st.integers(base, base + before), label="old cursor position")
    cursor = SessionCursor.new("s", pick.draw(st.integers(0, 2**64 - 1)), position)
    old.close()
    new = numbered(WALL + later_by)
    events = fill(new, after)
    assert all(e.live_position > base + before for e in events)
    assert gap_of(new, cursor) is UNAVAILABLE
    # and the new instance's own cursors keep replaying
    own = new.current_cursor("s", 0) if not events else events[0].cursor
    assert gap_of(new, own) is None


# -- the simulator: Scenario.restart_store, SimulatedClient, SessionFollower ------------------------


async def test_restart_store_of_a_memory_scenario_numbers_per_instance():
    s = await Scenario.create(session_id="chat", backend="memory")
    first = s.store
    assert not first.instance_numbering and first.position_base == 0  # Rust's numbering
    s.handle.record_queue_changed("enqueued", ["a"])
    s.restart_store()
    second = s.store
    assert first.closed and second is not first and s.handle.live_replay_store is second
    assert second.instance_numbering and second.config == first.config and second.clock is first.clock
    # on a fake clock the base comes from its wall reading: deterministic
    assert second.position_base == instance_position_base(s.clock.ms() / 1000)
    s.restart_store()  # again within the same second: still strictly above
    third = s.store
    assert third.position_base == second.position_base + 2**POSITION_BASE_SHIFT
    s.clock.advance(3600)
    s.restart_store()
    assert s.store.position_base == instance_position_base(s.clock.ms() / 1000)


async def test_a_simulated_client_reports_unavailable_and_adopts_the_fresh_observation():
    s = await Scenario.create(session_id="chat", backend="memory")
    client = s.client("c")
    await s.handle.run_turn("hello")
    client.pump()
    old_cursor = client.cursor
    assert client.view_matches_server()
    client.disconnect()
    s.restart_store()
    for i in range(40):  # the new store's tail passes the old cursor's position, and more
        s.handle.record_queue_changed("enqueued", [str(i)])
    received = client.received
    outcome = client.reconnect()
    assert outcome.kind == "gap" and outcome.gap.reason is UNAVAILABLE
    assert outcome.replayed == () and client.received == received  # nothing replayed
    assert outcome.gap.requested_cursor == old_cursor
    fresh = s.handle.current_session_observation()
    assert outcome.observation.cursor == fresh.cursor == client.cursor  # adopted
    assert client.view_matches_server()
    s.handle.record_queue_changed("enqueued", ["after"])
    (event,) = client.pump()
    assert event.live_position == s.store.position_base + 41
    assert event.payload.batch_ids == ("after",)


async def test_a_follower_through_a_restart_meets_unavailable_then_follows_the_new_store():
    s = await Scenario.create(session_id="chat", backend="memory")
    follower = SessionFollower(s.handle)
    for i in range(24):
        s.handle.record_queue_changed("enqueued", [str(i)])
    assert len(await follower.next_items()) == 24
    s.restart_store()  # closes the old store: the follower resubscribes with its cursor
    for i in range(34):
        s.handle.record_queue_changed("enqueued", [f"new-{i}"])
    items = await asyncio.wait_for(follower.next_items(), 5)
    assert isinstance(items[0], GapResume) and items[0].gap.reason is UNAVAILABLE
    assert follower.cursor == s.handle.current_session_observation().cursor
    assert all(not hasattr(i, "live_position") or i.live_position > 24 + 34 for i in items)
    s.handle.record_queue_changed("enqueued", ["live"])
    (event,) = await asyncio.wait_for(follower.next_items(), 5)
    assert event.payload.batch_ids == ("live",) and follower.gap_count == 1


async def test_a_sqlite_scenario_restart_keeps_positions_and_replays():
    """The durable side of the rule: the same file, positions continue, the old cursor replays."""
    async with await Scenario.create(session_id="chat") as s:
        assert s.backend == "sqlite"
        h = s.handle
        for i in range(24):
            h.record_queue_changed("enqueued", [str(i)])
        cursor = h.current_session_observation().cursor
        s.restart_store()
        for i in range(34):
            h.record_queue_changed("enqueued", [f"new-{i}"])
        result = s.store.replay_after_cursor(cursor)
        assert isinstance(result, Replayed) and positions(result.events) == list(range(25, 59))
        assert [e.payload.batch_ids[0] for e in result.events] == [f"new-{i}" for i in range(34)]
