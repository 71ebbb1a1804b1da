"""Live replay store conformance (spec section 3), run against every backend in ``backends.py``.

Each test names the Rust case it carries over (lash-core 0.1.0-alpha.39
``runtime/observation/replay.rs`` unit tests, and the alpha.40 ``live_replay_store`` conformance
suite, whose cases hold for alpha.39 too). Where Rust and our spec differ, the test follows the
spec and says so.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading

import pytest

from lash_core import (
    AssistantProseDelta,
    Gap,
    InvalidObservationError,
    LiveReplayGapReason,
    LiveReplayStore,
    LiveReplayStoreError,
    LiveReplayStoreFailure,
    LiveReplaySubscription,
    MalformedCursorError,
    ProcessChanged,
    QueueChanged,
    Replayed,
    ReplayClosed,
    SessionCursor,
    SessionProcessEventKind,
    SessionQueueEventKind,
    Subscribed,
    SubscriberLagged,
)

from .replay_model import delta, positions, run_replay_model, texts

TRIMMED = LiveReplayGapReason.TRIMMED
UNAVAILABLE = LiveReplayGapReason.UNAVAILABLE


@pytest.fixture
def open_store(replay_store_factory, clock):
    """``open_store(n=16, age=120.0, backlog=2048)``: a store of the backend on the test's clock."""

    def open_store(n: int = 16, age: float = 120.0, backlog: int = 2048):
        return replay_store_factory.open(
            clock=clock, max_events_per_session=n, max_age=age, subscriber_backlog=backlog
        )

    return open_store


def subscribe(store, cursor):
    result = store.subscribe_after_cursor(cursor)
    assert isinstance(result, Subscribed), result
    return result.subscription


def drain(sub) -> list:
    """Every ready event (a batch may stop where the replay part ends, so read until none)."""
    events: list = []
    while batch := sub.next_batch_nowait(10_000):
        events += batch
    return events


# --- appending and cursors --------------------------------------------------------------------------


async def test_store_and_subscription_satisfy_the_protocols(open_store):
    s = open_store()
    assert isinstance(s, LiveReplayStore)
    for name in ("append", "replay_after_cursor", "subscribe_after_cursor", "current_cursor"):
        assert not inspect.iscoroutinefunction(getattr(s, name)), f"{name} must be synchronous"
    sub = subscribe(s, s.current_cursor("s", 0))
    assert isinstance(sub, LiveReplaySubscription)
    assert inspect.iscoroutinefunction(sub.next_event)
    assert inspect.iscoroutinefunction(sub.next_batch)
    assert (sub.session_id, sub.closed) == ("s", False)
    sub.close()
    sub.close()  # idempotent
    assert sub.closed


def test_append_assigns_per_session_positions_and_cursors(open_store):
    s = open_store()
    assert s.current_cursor("a", 0) == SessionCursor("lashsc1:0:0:a")
    e1 = s.append("a", 3, delta("x"))
    e2 = s.append("b", 1, delta("y"))
    e3 = s.append("a", 4, delta("z"))
    assert [str(e.cursor) for e in (e1, e2, e3)] == [
        "lashsc1:3:1:a",
        "lashsc1:1:1:b",
        "lashsc1:4:2:a",
    ]
    assert [e.live_position for e in (e1, e2, e3)] == [1, 1, 2]
    assert (e3.session_id, e3.revision, texts([e3])) == ("a", 4, ["z"])
    assert s.current_cursor("a", 9) == SessionCursor.new("a", 9, 2)


def test_sessions_are_isolated_and_events_carry_their_revision(open_store):
    """Rust (alpha.40) ``live_replay_store_appends_replays_and_isolates_sessions``."""
    s = open_store()
    start_a, start_b = s.current_cursor("session-a", 7), s.current_cursor("session-b", 7)
    assert s.replay_after_cursor(start_a) == Replayed(())
    first = s.append("session-a", 7, delta("alpha one"))
    other = s.append("session-b", 7, ProcessChanged(SessionProcessEventKind.STARTED, ["proc-b"]))
    second = s.append("session-a", 8, QueueChanged(SessionQueueEventKind.ENQUEUED, ["batch-a"]))
    assert (first.session_id, first.revision, second.revision) == ("session-a", 7, 8)
    assert (other.session_id, other.revision) == ("session-b", 7)
    assert first.cursor != second.cursor
    replayed = s.replay_after_cursor(start_a).events
    assert [e.payload for e in replayed] == [first.payload, second.payload]
    assert replayed == (first, second)
    assert s.replay_after_cursor(first.cursor).events == (second,)
    assert s.replay_after_cursor(start_b).events == (other,)  # positions are per session
    assert other.live_position == 1
    assert s.replay_after_cursor(s.current_cursor("session-a", 9)) == Replayed(())


def test_session_ids_may_contain_colons_and_any_unicode(open_store):
    """Rust ``session_cursor_round_trips_and_debug_is_opaque``, through a store: the session id is
    everything after the third colon."""
    s = open_store()
    for sid in ("session:with:colon", "ü:ß", "a b"):
        event = s.append(sid, 3, delta(sid))
        decoded = SessionCursor(json.loads(json.dumps(str(event.cursor))))
        parsed = decoded.parse_for_session(sid)
        assert (parsed.session_id, parsed.revision, parsed.live_position) == (sid, 3, 1)
        assert repr(decoded) == "SessionCursor(<opaque>)"
        assert texts(s.replay_after_cursor(SessionCursor.new(sid, 0, 0)).events) == [sid]


def test_replays_after_cursor_in_order_and_revision_is_ignored(open_store):
    """Rust ``in_memory_replay_store_replays_after_cursor_in_order``."""
    s = open_store()
    start = s.current_cursor("s", 0)
    assert start.parse().live_position == 0
    for t in "abc":
        s.append("s", 0, delta(t))
    result = s.replay_after_cursor(start)
    assert isinstance(result, Replayed) and texts(result.events) == ["a", "b", "c"]
    assert isinstance(result.events[0].payload.activity.event, AssistantProseDelta)
    # a cursor naming another revision at the same position replays the same events
    assert texts(s.replay_after_cursor(SessionCursor.new("s", 77, 1)).events) == ["b", "c"]
    assert s.replay_after_cursor(s.current_cursor("s", 0)) == Replayed(())


def test_positions_never_reused_after_trim(open_store, clock):
    s = open_store(n=2, age=1)
    for t in "abc":
        s.append("s", 0, delta(t))
    clock.advance(5)
    s.trim_session("s")
    assert s.current_cursor("s", 0) == SessionCursor.new("s", 0, 3)
    assert s.append("s", 0, delta("d")).cursor == SessionCursor.new("s", 0, 4)


def test_concurrent_writer_threads_get_unique_contiguous_positions(open_store):
    s = open_store(n=100_000)
    per_thread, threads = 1000, 8
    seen: list[list[int]] = [[] for _ in range(threads)]

    def writer(i: int) -> None:
        for j in range(per_thread):
            seen[i].append(s.append("s", 0, delta(f"{i}:{j}")).cursor.parse().live_position)

    workers = [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    everything = sorted(p for ps in seen for p in ps)
    assert everything == list(range(1, per_thread * threads + 1))  # none lost, none repeated
    assert all(ps == sorted(ps) for ps in seen)  # each writer's order kept
    replayed = s.replay_after_cursor(SessionCursor.new("s", 0, 0)).events
    assert positions(replayed) == everything
    # the text stored at each position is the one its writer was told
    by_text = {e.payload.activity.event.text: e.cursor.parse().live_position for e in replayed}
    assert all(by_text[f"{i}:{j}"] == seen[i][j] for i in range(threads) for j in range(per_thread))


# --- gaps -------------------------------------------------------------------------------------------


def test_unknown_session(open_store):
    """Rust ``in_memory_replay_store_reports_unavailable_for_cursor_ahead_of_tail`` (nothing
    appended, cursor at 99)."""
    s = open_store()
    assert s.replay_after_cursor(SessionCursor.new("ghost", 0, 0)) == Replayed(())
    assert s.replay_after_cursor(SessionCursor.new("ghost", 0, 1)) == Gap(UNAVAILABLE)
    assert s.replay_after_cursor(SessionCursor.new("ghost", 0, 99)) == Gap(UNAVAILABLE)
    assert s.subscribe_after_cursor(SessionCursor.new("ghost", 0, 3)) == Gap(UNAVAILABLE)
    assert s.current_cursor("ghost", 0) == SessionCursor.new("ghost", 0, 0)  # asking created nothing


def test_cursor_from_the_future_is_unavailable(open_store):
    """Rust (alpha.40) ``..._reports_unavailable_for_cursor_ahead_of_tail``."""
    s = open_store()
    s.append("ahead-session", 0, delta("a"))
    assert s.replay_after_cursor(SessionCursor.new("ahead-session", 0, 99)) == Gap(UNAVAILABLE)
    assert s.subscribe_after_cursor(SessionCursor.new("ahead-session", 0, 99)) == Gap(UNAVAILABLE)
    assert s.subscribe_after_cursor(SessionCursor.new("ahead-session", 0, 2)) == Gap(UNAVAILABLE)


def test_capacity_trim_gives_trimmed_gap(open_store):
    """Rust ``..._reports_gap_after_capacity_trim``, ``in_memory_replay_subscription_reports_gap_
    after_capacity_trim`` and (alpha.40) ``live_replay_store_capacity_trim``."""
    s = open_store(n=1)
    start = s.current_cursor("s", 1)
    first = s.append("s", 1, delta("capacity one"))
    s.append("s", 1, delta("capacity two"))
    assert s.replay_after_cursor(start) == Gap(TRIMMED)
    assert s.subscribe_after_cursor(start) == Gap(TRIMMED)
    # p + 1 == first retained position is no gap
    assert texts(s.replay_after_cursor(first.cursor).events) == ["capacity two"]
    assert texts(drain(subscribe(s, first.cursor))) == ["capacity two"]


def test_age_trim_gives_trimmed_gap_only_when_strictly_older(open_store, clock):
    """Rust ``..._reports_gap_after_ttl_trim`` and ``in_memory_replay_subscription_reports_gap_
    after_ttl_trim``, on a fake clock instead of a sleep."""
    s = open_store(age=5.0)
    start = s.current_cursor("s", 0)
    s.append("s", 0, delta("a"))
    clock.advance(5.0)
    assert texts(s.replay_after_cursor(start).events) == ["a"]  # exactly max_age: kept
    clock.advance(0.001)
    assert s.replay_after_cursor(start) == Gap(TRIMMED)
    assert s.subscribe_after_cursor(start) == Gap(TRIMMED)
    # a cursor at the tail is no gap even when nothing is retained
    assert s.replay_after_cursor(SessionCursor.new("s", 0, 1)) == Replayed(())


def test_trim_session_applies_retention_now(open_store, clock):
    """Rust (alpha.40) ``live_replay_store_ttl_trim`` (explicit ``trim_session``)."""
    s = open_store(n=3, age=10)
    start = s.current_cursor("s", 0)
    for t in "abcde":
        s.append("s", 0, delta(t))
    assert s.replay_after_cursor(start) == Gap(TRIMMED)
    assert texts(s.replay_after_cursor(SessionCursor.new("s", 0, 2)).events) == ["c", "d", "e"]
    clock.advance(11)
    s.trim_session("s")
    s.trim_session("never-seen")  # nothing held: a no-op
    assert s.replay_after_cursor(start) == Gap(TRIMMED)
    assert s.subscribe_after_cursor(SessionCursor.new("s", 0, 4)) == Gap(TRIMMED)
    assert s.replay_after_cursor(s.current_cursor("s", 0)) == Replayed(())
    assert s.current_cursor("s", 0) == SessionCursor.new("s", 0, 5)


def test_empty_buffer_below_tail_is_trimmed(open_store, clock):
    s = open_store(age=1.0)
    for t in "ab":
        s.append("s", 0, delta(t))
    clock.advance(2)
    s.trim_session("s")
    assert s.replay_after_cursor(SessionCursor.new("s", 0, 0)) == Gap(TRIMMED)
    assert s.replay_after_cursor(SessionCursor.new("s", 0, 1)) == Gap(TRIMMED)
    assert s.replay_after_cursor(SessionCursor.new("s", 0, 2)) == Replayed(())
    assert s.replay_after_cursor(SessionCursor.new("s", 0, 3)) == Gap(UNAVAILABLE)
    sub = subscribe(s, SessionCursor.new("s", 0, 2))  # at the tail: live events only
    s.append("s", 0, delta("c"))
    assert texts(sub.next_batch_nowait()) == ["c"]


async def test_zero_capacity_keeps_nothing_but_live_subscribers_get_everything(open_store):
    """Rust's broadcast is independent of the buffer (inventory section 4, item 7)."""
    s = open_store(n=0, backlog=8)
    sub = subscribe(s, s.current_cursor("s", 0))
    for i in range(5):
        s.append("s", 0, delta(str(i)))
    assert texts(await sub.next_batch(10)) == list("01234")
    assert s.replay_after_cursor(SessionCursor.new("s", 0, 5)) == Replayed(())
    assert s.replay_after_cursor(SessionCursor.new("s", 0, 4)) == Gap(TRIMMED)


# --- refused arguments: a typed error, and nothing changes ------------------------------------------

BAD_SESSION_IDS = [5, None, b"s", "", "\ud800", "a\udfffb"]
BAD_REVISIONS = [-1, 2**64, 1.5, True, "1", None]
BAD_READ_SIZES = [2.5, True, False, 0, -1, "3", None, 1.0]
BAD_CURSORS = [
    (42, MalformedCursorError, None),
    (None, MalformedCursorError, None),
    ("nope", MalformedCursorError, "missing cursor prefix"),
    ("not-a-session-cursor", MalformedCursorError, "missing cursor prefix"),
    ("lashsc1:x:1:s", MalformedCursorError, "invalid session revision"),
    ("lashsc1:0:-1:s", MalformedCursorError, "invalid live replay position"),
    ("lashsc1:0:1:", MalformedCursorError, "missing session id"),
    ("lashsc1:0:3:\ud800", MalformedCursorError, None),
    (SessionCursor("lashsc1:0:0:x\udcff"), MalformedCursorError, None),
]


def _refusals():
    """(label, call(store, subscription), error, match) for every argument of every protocol
    method of the store and the subscription."""
    cases = []
    for size in BAD_READ_SIZES:
        cases.append((f"next_batch_nowait({size!r})", lambda s, sub, v=size: sub.next_batch_nowait(v),
                      InvalidObservationError, "max_events"))
        cases.append((f"next_batch({size!r})", lambda s, sub, v=size: sub.next_batch(v),
                      InvalidObservationError, "max_events"))
    for sid in BAD_SESSION_IDS:
        for name, call in (
            ("append", lambda s, sub, v=sid: s.append(v, 0, delta("x"))),
            ("current_cursor", lambda s, sub, v=sid: s.current_cursor(v, 0)),
            ("trim_session", lambda s, sub, v=sid: s.trim_session(v)),
        ):
            cases.append((f"{name}({sid!r})", call, InvalidObservationError, "session id"))
    for revision in BAD_REVISIONS:
        cases.append((f"append(revision={revision!r})",
                      lambda s, sub, v=revision: s.append("s", v, delta("x")),
                      InvalidObservationError, "revision"))
        cases.append((f"current_cursor(revision={revision!r})",
                      lambda s, sub, v=revision: s.current_cursor("s", v),
                      InvalidObservationError, "revision"))
    for payload in ("x", None, delta("x").activity):
        cases.append((f"append(payload={type(payload).__name__})",
                      lambda s, sub, v=payload: s.append("s", 0, v),
                      InvalidObservationError, "payload"))
    for cursor, error, match in BAD_CURSORS:
        for name in ("replay_after_cursor", "subscribe_after_cursor"):
            cases.append((f"{name}({cursor!r})",
                          lambda s, sub, v=cursor, n=name: getattr(s, n)(v), error, match))
    return cases


REFUSALS = _refusals()


@pytest.mark.parametrize("call,error,match", [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS])
async def test_a_refused_call_changes_nothing(open_store, call, error, match):
    """Rust (alpha.40) ``live_replay_store_rejects_malformed_cursors`` and
    ``session_cursor_rejects_malformed_and_wrong_session``, for every argument."""
    s = open_store(n=8, backlog=4)
    start = s.current_cursor("s", 0)
    for i in range(3):
        s.append("s", 0, delta(str(i)))
    sub = subscribe(s, start)
    assert texts(sub.next_batch_nowait(2)) == ["0", "1"]  # mid-way through the replay part
    s.append("s", 0, delta("3"))

    def observed():
        return s.current_cursor("s", 0), s.replay_after_cursor(start)

    before = observed()
    with pytest.raises(error, match=match) as info:
        result = call(s, sub)
        if inspect.isawaitable(result):
            await result
    assert isinstance(info.value, LiveReplayStoreError)  # one family for the observation stream
    if error is InvalidObservationError:
        assert isinstance(info.value, ValueError)
    assert observed() == before
    # the subscriber continues exactly where it was: the rest of the replay, then live events
    assert texts(drain(sub)) == ["2", "3"]
    s.append("s", 0, delta("4"))
    assert positions(sub.next_batch_nowait(10)) == [5]


async def test_a_bad_read_size_does_not_move_the_subscription(open_store):
    s = open_store()
    sub = subscribe(s, s.current_cursor("s", 0))
    for i in range(3):
        s.append("s", 0, delta(str(i)))
    with pytest.raises(InvalidObservationError, match="max_events"):
        sub.next_batch_nowait(2.5)
    assert positions(sub.next_batch_nowait(2)) == [1, 2]
    with pytest.raises(InvalidObservationError, match="max_events"):
        await sub.next_batch(0)
    assert positions(await sub.next_batch(10**30)) == [3]  # any positive size reads what is ready
    s.append("s", 0, delta("3"))
    assert positions([sub.next_nowait()]) == [4]


# --- subscriptions ----------------------------------------------------------------------------------


async def test_subscription_yields_replay_then_live(open_store):
    """Rust ``in_memory_replay_subscription_yields_replay_then_live`` and (alpha.40)
    ``..._subscribe_replays_then_yields_live_events``."""
    s = open_store()
    start = s.current_cursor("s", 0)
    s.append("s", 0, delta("buffered one"))
    s.append("s", 0, delta("buffered two"))
    sub = subscribe(s, start)
    first = await sub.next_event()
    assert first.session_id == "s"
    assert texts([first, await sub.next_event()]) == ["buffered one", "buffered two"]
    assert sub.next_nowait() is None
    s.append("s", 0, delta("live three"))
    assert texts([await asyncio.wait_for(sub.next_event(), 1)]) == ["live three"]
    sub.close()
    with pytest.raises(ReplayClosed):
        await sub.next_event()


async def test_subscription_waits_for_live_events(open_store):
    s = open_store()
    sub = subscribe(s, s.current_cursor("s", 0))
    reader = asyncio.create_task(sub.next_event())
    await asyncio.sleep(0.01)
    assert not reader.done()
    s.append("s", 0, delta("late"))
    assert texts([await asyncio.wait_for(reader, 1)]) == ["late"]


async def test_subscribing_to_a_session_never_appended_to_gets_its_appends(open_store):
    """Rust creates the entry on subscribe (inventory section 4, item 2); any store must deliver."""
    s = open_store()
    sub = subscribe(s, SessionCursor.new("fresh", 0, 0))
    assert sub.next_batch_nowait() == []
    event = s.append("fresh", 2, delta("first"))
    assert event.cursor == SessionCursor.new("fresh", 2, 1)
    assert await asyncio.wait_for(sub.next_event(), 1) == event


async def test_seam_between_replay_and_live_has_no_loss_or_duplicate(open_store):
    s = open_store()
    for i in range(5):
        s.append("s", 0, delta(str(i)))
    sub = subscribe(s, SessionCursor.new("s", 0, 2))
    for i in range(5, 8):
        s.append("s", 0, delta(str(i)))
    got = [await sub.next_event() for _ in range(5)]
    assert positions(got) == [3, 4, 5, 6, 7]
    assert positions([sub.next_nowait()]) == [8]
    assert sub.next_nowait() is None


async def test_subscribe_racing_appends_from_threads_loses_and_repeats_nothing(open_store):
    """Subscribe atomicity under real concurrency: every subscriber sees exactly the positions
    after its cursor, whichever side of the seam each one fell on."""
    s = open_store(n=10_000, backlog=10_000)
    stop = threading.Event()

    def writer() -> None:
        for _ in range(5_000):  # within retention and backlog: no gap, no lag
            if stop.is_set():
                return
            s.append("s", 0, delta("x"))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        subs = []
        for _ in range(50):
            cursor = s.current_cursor("s", 0)
            subs.append((cursor.parse().live_position, subscribe(s, cursor)))
    finally:
        stop.set()
        thread.join()
    tail = s.current_cursor("s", 0).parse().live_position
    for start, sub in subs:
        assert positions(drain(sub)) == list(range(start + 1, tail + 1))


async def test_lagging_subscriber_is_told_once_then_continues_from_oldest_held(open_store):
    """tokio broadcast semantics (Rust ``next_event`` maps ``Lagged(n)``), with the backlog the
    store is configured with (Rust fixes it at 2048: inventory section 4, item 4)."""
    s = open_store(backlog=4)
    sub = subscribe(s, s.current_cursor("s", 0))
    for i in range(10):
        s.append("s", 0, delta(str(i)))
    with pytest.raises(SubscriberLagged, match="lagged by 6 events") as info:
        await sub.next_event()
    assert info.value.count == 6
    assert texts([await sub.next_event() for _ in range(4)]) == ["6", "7", "8", "9"]
    assert sub.next_nowait() is None


async def test_the_replay_part_never_lags(open_store):
    """Lag applies to the live part only, once the replay part is read (inventory section 4,
    item 4)."""
    s = open_store(n=100, backlog=2)
    start = s.current_cursor("s", 0)
    for i in range(6):
        s.append("s", 0, delta(str(i)))
    sub = subscribe(s, start)
    for i in range(6, 9):
        s.append("s", 0, delta(str(i)))
    assert texts(sub.next_batch_nowait(100)) == list("012345")
    with pytest.raises(SubscriberLagged) as info:  # live part: 7..9 held, 2 slots
        sub.next_batch_nowait()
    assert info.value.count == 1
    assert texts(sub.next_batch_nowait()) == ["7", "8"]


async def test_backlog_is_independent_of_retention(open_store):
    # retention keeps 1 event, but a live subscriber still gets everything within its backlog
    s = open_store(n=1, backlog=8)
    sub = subscribe(s, s.current_cursor("s", 0))
    for i in range(5):
        s.append("s", 0, delta(str(i)))
    assert texts([await sub.next_event() for _ in range(5)]) == list("01234")


async def test_batch_reads_follow_the_same_rules(open_store):
    s = open_store(backlog=4)
    start = s.current_cursor("s", 0)
    for i in range(3):
        s.append("s", 0, delta(str(i)))
    sub = subscribe(s, start)
    assert texts(sub.next_batch_nowait(2)) == ["0", "1"]  # replay part, in slices
    assert texts(sub.next_batch_nowait(10)) == ["2"]
    assert sub.next_batch_nowait() == []
    for i in range(3, 10):
        s.append("s", 0, delta(str(i)))
    with pytest.raises(SubscriberLagged) as info:
        sub.next_batch_nowait()
    assert info.value.count == 3
    assert texts(sub.next_batch_nowait(3)) == ["6", "7", "8"]
    assert texts(await sub.next_batch(10)) == ["9"]
    waiter = asyncio.create_task(sub.next_batch(10))
    await asyncio.sleep(0.01)
    s.append("s", 0, delta("10"))
    s.append("s", 0, delta("11"))
    assert texts(await asyncio.wait_for(waiter, 1)) == ["10", "11"]
    s.append("s", 0, delta("12"))
    s.close()
    assert texts(sub.next_batch_nowait()) == ["12"]  # drained after close
    with pytest.raises(ReplayClosed):
        sub.next_batch_nowait()
    with pytest.raises(ReplayClosed):
        sub.next_nowait()


async def test_closing_a_subscription_ends_it_and_wakes_its_reader(open_store):
    s = open_store()
    sub = subscribe(s, s.current_cursor("s", 0))
    s.append("s", 0, delta("unread"))
    other = subscribe(s, s.current_cursor("s", 0))
    reader = asyncio.create_task(other.next_event())
    await asyncio.sleep(0.01)
    sub.close()
    other.close()
    with pytest.raises(ReplayClosed):
        await asyncio.wait_for(reader, 1)
    for closed in (sub, other):
        assert closed.closed
        with pytest.raises(ReplayClosed):
            closed.next_nowait()  # unread events are dropped
        with pytest.raises(ReplayClosed):
            closed.next_batch_nowait()
        with pytest.raises(ReplayClosed):
            await closed.next_batch()
        assert [e async for e in closed] == []
    s.append("s", 0, delta("after"))  # the store carries on
    assert texts(drain(subscribe(s, SessionCursor.new("s", 0, 1)))) == ["after"]


async def test_closing_the_store_drains_then_ends_subscriptions(open_store):
    """Python addition: Rust has no ``close()`` (inventory section 4, item 1); like tokio, events
    appended before the end are still delivered."""
    s = open_store()
    sub = subscribe(s, s.current_cursor("s", 0))
    waiting = subscribe(s, s.current_cursor("s", 0))
    reader = asyncio.create_task(waiting.next_event())
    idle = subscribe(s, s.current_cursor("s", 0))
    idle_reader = asyncio.create_task(idle.next_event())
    await asyncio.sleep(0)
    s.append("s", 0, delta("last"))
    assert texts([await asyncio.wait_for(idle_reader, 1)]) == ["last"]
    idle_reader = asyncio.create_task(idle.next_event())
    await asyncio.sleep(0.01)
    s.close()
    s.close()  # idempotent
    assert texts([await asyncio.wait_for(reader, 1)]) == ["last"]
    with pytest.raises(ReplayClosed):
        await asyncio.wait_for(idle_reader, 1)  # a read waiting at the close wakes
    assert texts([await sub.next_event()]) == ["last"]
    with pytest.raises(ReplayClosed):
        await sub.next_event()
    with pytest.raises(LiveReplayStoreFailure):
        s.append("s", 0, delta("x"))
    with pytest.raises(LiveReplayStoreFailure):
        s.replay_after_cursor(SessionCursor.new("s", 0, 0))
    with pytest.raises(LiveReplayStoreFailure):
        s.subscribe_after_cursor(SessionCursor.new("s", 0, 1))
    with pytest.raises(LiveReplayStoreFailure):
        s.trim_session("s")


async def test_async_for_ends_cleanly_on_close_and_async_with_closes(open_store):
    s = open_store()
    start = s.current_cursor("s", 0)
    s.append("s", 0, delta("a"))

    async def produce():
        await asyncio.sleep(0.01)
        s.append("s", 0, delta("b"))
        s.close()

    task = asyncio.create_task(produce())
    async with subscribe(s, start) as sub:
        seen = [e async for e in sub]
    await task
    assert texts(seen) == ["a", "b"]
    assert sub.closed


async def test_async_for_raises_lag_and_iterating_again_continues(open_store):
    s = open_store(backlog=2)
    sub = subscribe(s, s.current_cursor("s", 0))
    for i in range(5):
        s.append("s", 0, delta(str(i)))
    seen = []
    with pytest.raises(SubscriberLagged):
        async for event in sub:
            seen.append(event)
    async with sub:
        async for event in sub:
            seen.append(event)
            if len(seen) == 2:
                break
    assert texts(seen) == ["3", "4"] and sub.closed


async def test_cancelled_reader_does_not_break_other_readers(open_store):
    s = open_store()
    a = subscribe(s, s.current_cursor("s", 0))
    b = subscribe(s, s.current_cursor("s", 0))
    ta = asyncio.create_task(a.next_event())
    tb = asyncio.create_task(b.next_event())
    await asyncio.sleep(0.01)
    ta.cancel()
    s.append("s", 0, delta("x"))
    assert texts([await asyncio.wait_for(tb, 1)]) == ["x"]
    # the cancelled read took no event: the subscription still has it
    assert texts([await a.next_event()]) == ["x"]


async def test_appends_from_another_thread_wake_subscribers(open_store):
    s = open_store()
    sub = subscribe(s, s.current_cursor("s", 0))
    reader = asyncio.create_task(sub.next_event())
    await asyncio.sleep(0.01)
    await asyncio.to_thread(s.append, "s", 0, delta("from-thread"))
    assert texts([await asyncio.wait_for(reader, 2)]) == ["from-thread"]


async def test_32_concurrent_producers_and_subscribers_lose_nothing_silently(open_store):
    s = open_store(n=4096, backlog=256)
    sessions = ["s0", "s1"]
    per_producer, producers, subscribers = 200, 32, 32
    expected_total = per_producer * (producers // 2)
    subs = [
        (sid, subscribe(s, s.current_cursor(sid, 0)))
        for i in range(subscribers)
        for sid in [sessions[i % 2]]
    ]

    async def produce(pid: int) -> None:
        sid = sessions[pid % 2]
        for i in range(per_producer):
            s.append(sid, 0, delta(f"{pid}:{i}"))
            if i % 7 == 0:
                await asyncio.sleep(0)

    async def consume(sub) -> tuple[list[int], int]:
        seen: list[int] = []
        lagged = 0
        while len(seen) + lagged < expected_total:
            try:
                event = await sub.next_event()
            except SubscriberLagged as lag:
                lagged += lag.count
                continue
            seen.append(event.cursor.parse().live_position)
        return seen, lagged

    consumers = [asyncio.create_task(consume(sub)) for _, sub in subs]
    await asyncio.gather(*(produce(p) for p in range(producers)))
    results = await asyncio.wait_for(asyncio.gather(*consumers), 30)
    for seen, lagged in results:
        assert seen == sorted(seen) and len(set(seen)) == len(seen)  # in order, no duplicate
        assert len(seen) + lagged == expected_total  # every event seen or counted as lagged
        assert seen[-1] == expected_total
    final = s.replay_after_cursor(SessionCursor.new("s0", 0, 0)).events
    by_producer: dict[str, list[int]] = {}
    for t in texts(final):
        pid, i = t.split(":")
        by_producer.setdefault(pid, []).append(int(i))
    assert all(v == sorted(v) for v in by_producer.values())  # per-producer order kept


# --- reopen (durable backends) ----------------------------------------------------------------------


def test_reopen_continues_tails_and_never_replays_wrongly(replay_store_factory, clock):
    """A durable store opened again on its data: positions continue (never reused), and a cursor
    from before either replays exactly what followed it or gets a gap."""
    s = replay_store_factory.open(clock=clock, max_events_per_session=16, max_age=120.0)
    start = s.current_cursor("s", 0)
    a = s.append("s", 0, delta("a"))
    b = s.append("s", 0, delta("b"))
    s = replay_store_factory.reopen(s)
    assert s.current_cursor("s", 0) == SessionCursor.new("s", 0, 2)
    c = s.append("s", 0, delta("c"))
    assert c.cursor == SessionCursor.new("s", 0, 3)
    for cursor, after in ((start, [a, b, c]), (a.cursor, [b, c]), (b.cursor, [c])):
        result = s.replay_after_cursor(cursor)
        if isinstance(result, Replayed):
            assert result.events == tuple(after)
        else:
            assert result == Gap(TRIMMED)


# --- the stateful model -----------------------------------------------------------------------------


def test_replay_model(replay_store_factory):
    """``ReplayModel`` (moved from tests/test_replay.py): the store against a naive reference."""
    run_replay_model(replay_store_factory)
