"""The in-memory live replay store's own rules: statistics, configuration, memory bounds
(forgetting sessions, tombstones, the floor, compaction) and its internals.

What every ``LiveReplayStore`` must do (spec section 3) is checked once, for every backend, by
``tests/conformance/test_live_replay.py``; ``InMemoryReplayModel`` below extends its
``ReplayModel`` with the in-memory store's forgetting.
"""

import asyncio
import collections
import datetime
import gc
import inspect

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

from conformance.backends import InMemoryReplayStoreFactory
from conformance.replay_model import ReplayModel, run_replay_model

from lash_core._cursor import SessionCursor
from lash_core._errors import (
    InvalidObservationError,
    LiveReplayStoreError,
    LiveReplayStoreFailure,
    MalformedCursorError,
    SubscriberLagged,
)
from lash_core._events import AssistantProseDelta, Committed, TurnActivity, TurnActivityPayload
from lash_core._gap import LiveReplayGapReason
from lash_core._replay import (
    MAX_FORGOTTEN_SESSIONS,
    Gap,
    InMemoryLiveReplayStore,
    InMemoryLiveReplayStoreConfig,
    LiveReplayStore,
    Replayed,
    _COMPACT_SLACK,
)

TRIMMED = LiveReplayGapReason.TRIMMED
UNAVAILABLE = LiveReplayGapReason.UNAVAILABLE


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def delta(text: str) -> TurnActivityPayload:
    return TurnActivityPayload(TurnActivity.independent(AssistantProseDelta(text)))


def texts(events) -> list[str]:
    return [e.payload.activity.event.text for e in events]


def positions(events) -> list[int]:
    return [e.cursor.parse().live_position for e in events]


def store(n=16, age=120.0, backlog=2048):
    clock = Clock()
    return InMemoryLiveReplayStore.with_bounds(n, age, clock=clock, subscriber_backlog=backlog), clock


def test_defaults_match_the_spec():
    config = InMemoryLiveReplayStoreConfig()
    assert (config.max_events_per_session, config.max_age) == (2048, 120.0)
    assert InMemoryLiveReplayStoreConfig(max_age=datetime.timedelta(seconds=5)).max_age == 5.0
    assert isinstance(InMemoryLiveReplayStore(), LiveReplayStore)
    with pytest.raises(ValueError):
        InMemoryLiveReplayStoreConfig(max_events_per_session=-1)
    with pytest.raises(ValueError):
        InMemoryLiveReplayStoreConfig(max_age=-1)


def test_trim_session_applies_retention_now_and_statistics_count_evictions():
    s, clock = store(n=3, age=10)
    for t in "abcde":
        s.append("s", 0, delta(t))
    stats = s.statistics("s")
    assert (stats.retained_events, stats.oldest_position, stats.newest_position) == (3, 3, 5)
    assert stats.evicted_total == 2
    clock.now += 11
    s.trim_session("s")
    stats = s.statistics("s")
    assert (stats.retained_events, stats.oldest_position, stats.evicted_total) == (0, None, 5)
    assert stats.tail_position == 5


def test_append_validates_arguments():
    s, _ = store()
    with pytest.raises(InvalidObservationError, match="non-empty"):
        s.append("", 0, delta("a"))
    with pytest.raises(InvalidObservationError, match="payload must be an EventPayload, not str"):
        s.append("s", 0, "not a payload")  # type: ignore[arg-type]
    with pytest.raises(InvalidObservationError, match="revision out of range"):
        s.append("s", -1, delta("a"))
    assert s.statistics("s").tail_position == 0  # nothing half-appended
    assert s.statistics().sessions == 0  # and no log opened for the refused calls


def test_large_buffers_compact_without_losing_positions():
    s, _ = store(n=100, backlog=10)
    start = None
    for i in range(5000):
        e = s.append("s", 0, delta(str(i)))
        if i == 4899:
            start = e.cursor
    replay = s.replay_after_cursor(start).events
    assert texts(replay) == [str(i) for i in range(4900, 5000)]
    assert positions(replay) == list(range(4901, 5001))
    log = s._sessions["s"]
    assert len(log.events) < 2000  # the dead head was cut off


# -- statistics of subscriptions -------------------------------------------------------------------


async def test_statistics_count_subscribers_and_lags():
    s, _ = store(backlog=4)
    sub = s.subscribe_after_cursor(s.current_cursor("s", 0)).subscription
    assert s.statistics("s").subscribers == 1
    for i in range(10):
        s.append("s", 0, delta(str(i)))
    with pytest.raises(SubscriberLagged):
        await sub.next_event()
    assert s.statistics("s").lag_events == 1
    sub.close()
    assert s.statistics("s").subscribers == 0


async def test_a_batch_that_took_an_event_leaves_a_lag_for_the_next_read(monkeypatch):
    """``next_batch`` waits for one event, then takes what else is ready; if the live part lagged
    in between (an append burst from another thread), that event is returned, not lost, and the
    lag is raised by the next read."""
    s, _ = store(backlog=2)
    sub = s.subscribe_after_cursor(s.current_cursor("s", 0)).subscription
    original = type(sub).next_event

    async def next_event_then_burst(self):
        event = await original(self)
        for i in range(5):  # what another thread could append right after the wake
            s.append("s", 0, delta(f"burst{i}"))
        return event

    monkeypatch.setattr(type(sub), "next_event", next_event_then_burst)
    reader = asyncio.create_task(sub.next_batch(10))
    await asyncio.sleep(0)
    s.append("s", 0, delta("first"))
    assert texts(await asyncio.wait_for(reader, 1)) == ["first"]
    with pytest.raises(SubscriberLagged) as info:
        sub.next_batch_nowait()
    assert info.value.count == 3
    assert texts(sub.next_batch_nowait()) == ["burst3", "burst4"]


# -- the stateful model, with the in-memory store's forgetting -------------------------------------


class InMemoryReplayModel(ReplayModel):
    """``ReplayModel`` (tests/conformance/replay_model.py) plus what only the in-memory store does:
    forgetting empty, unobserved sessions into a tombstone map (made tiny here, so that the
    store-wide floor rises within a run), and its statistics."""

    @initialize(
        n=st.integers(min_value=0, max_value=6),
        age=st.sampled_from([0.0, 1.0, 2.5, 10.0]),
        backlog=st.integers(min_value=1, max_value=6),
        max_forgotten=st.integers(min_value=1, max_value=3),
    )
    def setup(self, n, age, backlog, max_forgotten):
        self.start(n, age, backlog)
        self.store._max_forgotten = self.max_forgotten = max_forgotten
        self.tombs = collections.OrderedDict()  # forgotten: session -> (tail, evicted)
        self.floor = 0

    def _tail(self, sid):
        if sid in self.logs:
            return self.logs[sid]["tail"]
        if sid in self.tombs:
            return self.tombs[sid][0]
        return self.floor

    def _revive(self, sid):
        return self.tombs.pop(sid) if sid in self.tombs else (self.floor, 0)

    def _settle(self, sid):
        log = self.logs.get(sid)
        if log is not None and log["first"] > log["tail"] and not self._subscribed(sid):
            del self.logs[sid]
            if log["tail"] > self.floor:
                self.tombs[sid] = (log["tail"], log["evicted"])
                while len(self.tombs) > self.max_forgotten:
                    _, (tail, _) = self.tombs.popitem(last=False)
                    self.floor = max(self.floor, tail)

    def _after_drop(self, sid):
        self._settle(sid)  # the store forgets it at its next call (the invariants make one)

    def _after_append(self, sid):
        if sid in self.logs and not self._subscribed(sid):
            # without subscribers the list holds retention's window and a bounded dead head
            stats = self.store.statistics(sid)
            assert stats.held_events <= 2 * stats.retained_events + _COMPACT_SLACK

    @invariant()
    def statistics_agree(self):
        if self.store is None:
            return
        for sid in self.SESSIONS:
            stats = self.store.statistics(sid)
            assert stats.tail_position == self._tail(sid)
            assert stats.forgotten_floor == self.floor
            if sid in self.logs:
                log = self.logs[sid]
                assert (stats.sessions, stats.forgotten_sessions) == (1, 0)
                assert stats.retained_events == log["tail"] - log["first"] + 1
                assert stats.evicted_total == log["evicted"]
            else:
                assert (stats.sessions, stats.retained_events, stats.held_events) == (0, 0, 0)
                assert stats.forgotten_sessions == int(sid in self.tombs)
                assert stats.evicted_total == (self.tombs[sid][1] if sid in self.tombs else 0)
        total = self.store.statistics()
        assert total.sessions == len(self.logs)
        assert total.forgotten_sessions == len(self.tombs)
        assert total.subscribers == len(self.subs)


def test_in_memory_replay_model():
    run_replay_model(InMemoryReplayStoreFactory(), InMemoryReplayModel)


def test_reconfigure_changes_retention_from_the_next_operation():
    s, clock = store(n=10, age=100)
    start = s.current_cursor("s", 0)
    for i in range(5):
        s.append("s", 0, delta(str(i)))
    config = s.reconfigure(max_events_per_session=2)
    assert config.max_events_per_session == 2 and config.max_age == 100
    assert s.replay_after_cursor(start) == Gap(TRIMMED)
    assert texts(s.replay_after_cursor(SessionCursor.new("s", 0, 3)).events) == ["3", "4"]
    s.reconfigure(max_age=datetime.timedelta(seconds=1))
    clock.now += 2
    s.trim_session("s")
    assert s.statistics("s").retained_events == 0
    with pytest.raises(ValueError):
        s.reconfigure(max_events_per_session=-5)
    assert s.config.max_events_per_session == 2  # a refused change leaves the config alone


def test_a_failing_clock_leaves_nothing_half_appended():
    calls = {"n": 0}

    def flaky() -> float:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("clock source gone")
        return 5.0

    s = InMemoryLiveReplayStore(clock=flaky)
    s.append("s", 0, delta("a"))
    with pytest.raises(LiveReplayStoreFailure, match="clock"):
        s.append("s", 0, delta("b"))
    e = s.append("s", 0, delta("c"))
    assert e.cursor.parse().live_position == 2  # the failed append used no position
    assert texts(s.replay_after_cursor(SessionCursor.new("s", 0, 0)).events) == ["a", "c"]
    bad = InMemoryLiveReplayStore(clock=lambda: float("nan"))
    with pytest.raises(LiveReplayStoreFailure, match="nan"):
        bad.append("s", 0, delta("x"))


def test_config_is_read_only_and_refuses_nan():
    s, _ = store()
    with pytest.raises(AttributeError):
        s.config = InMemoryLiveReplayStoreConfig(subscriber_backlog=10_000)  # type: ignore[misc]
    with pytest.raises(ValueError, match="max_age"):
        InMemoryLiveReplayStoreConfig(max_age=float("nan"))
    with pytest.raises(ValueError, match="max_age"):
        s.reconfigure(max_age=float("nan"))


# -- refused arguments: a typed error, and nothing changes -----------------------------------------

def _refusals():
    """(label, call(store, subscription), error, match) for the in-memory store's own methods and
    messages; the protocol's refusals are in tests/conformance/test_live_replay.py."""
    cases = []
    for sid in [5, b"s", "", "\ud800", "a\udfffb"]:  # statistics(None) is the store-wide snapshot
        cases.append((f"statistics({sid!r})", lambda s, sub, v=sid: s.statistics(v),
                      InvalidObservationError, "session id"))
    for cursor, match in (
        (42, "must be a SessionCursor or str, not int"),
        (None, "SessionCursor or str, not NoneType"),
        ("lashsc1:0:3:\ud800", "not valid UTF-8"),
        (SessionCursor("lashsc1:0:0:x\udcff"), "not valid UTF-8"),
    ):
        for name in ("replay_after_cursor", "subscribe_after_cursor"):
            cases.append((f"{name}({cursor!r})",
                          lambda s, sub, v=cursor, n=name: getattr(s, n)(v),
                          MalformedCursorError, match))
    for kwargs, match in (
        ({"max_events_per_session": -1}, "max_events_per_session"),
        ({"max_events_per_session": 2.5}, "max_events_per_session"),
        ({"max_events_per_session": True}, "max_events_per_session"),
        ({"max_events_per_session": "3"}, "max_events_per_session"),
        ({"max_events_per_session": 2**64}, "max_events_per_session"),
        ({"max_age": -1}, "max_age"),
        ({"max_age": float("nan")}, "max_age"),
        ({"max_age": "1"}, "max_age"),
        ({"max_age": True}, "max_age"),
        ({"max_age": 10**400}, "max_age"),
        ({"max_age": datetime.timedelta(seconds=-1)}, "max_age"),
        ({"max_events_per_session": 1, "max_age": -1}, "max_age"),  # one bad value: no change
    ):
        cases.append((f"reconfigure({kwargs})", lambda s, sub, k=kwargs: s.reconfigure(**k),
                      InvalidObservationError, match))
    for args, kwargs, match in (
        ((-1, 1), {}, "max_events_per_session"),
        ((2.5, 1), {}, "max_events_per_session"),
        ((True, 1), {}, "max_events_per_session"),
        ((10**30, 1), {}, "max_events_per_session"),
        ((1, "x"), {}, "max_age"),
        ((1, -1), {}, "max_age"),
        ((1, float("nan")), {}, "max_age"),
        ((1, 1), {"subscriber_backlog": 0}, "subscriber_backlog"),
        ((1, 1), {"subscriber_backlog": 1.5}, "subscriber_backlog"),
        ((1, 1), {"clock": "not callable"}, "clock"),
    ):
        cases.append((f"with_bounds{args}{kwargs}",
                      lambda s, sub, a=args, k=kwargs: InMemoryLiveReplayStore.with_bounds(*a, **k),
                      InvalidObservationError, match))
    cases.append(("InMemoryLiveReplayStore(config=dict)",
                  lambda s, sub: InMemoryLiveReplayStore({"max_age": 1}),  # type: ignore[arg-type]
                  InvalidObservationError, "config"))
    return cases


REFUSALS = _refusals()


@pytest.mark.parametrize(
    "call,error,match", [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS]
)
async def test_a_refused_call_changes_nothing(call, error, match):
    s, _ = store(n=8, backlog=4)
    start = s.current_cursor("s", 0)
    for i in range(3):
        s.append("s", 0, delta(str(i)))
    sub = s.subscribe_after_cursor(start).subscription
    assert texts(sub.next_batch_nowait(2)) == ["0", "1"]  # mid-way through the replay part
    s.append("s", 0, delta("3"))
    before = (s.statistics(), s.statistics("s"), s.config, repr(sub))

    with pytest.raises(error, match=match) as info:
        result = call(s, sub)
        if inspect.isawaitable(result):
            await result
    assert isinstance(info.value, LiveReplayStoreError)  # one family for the observation stream
    if error is InvalidObservationError:
        assert isinstance(info.value, ValueError)

    assert (s.statistics(), s.statistics("s"), s.config, repr(sub)) == before
    # the subscriber continues exactly where it was: the rest of the replay, then live events
    assert texts(sub.next_batch_nowait(10)) == ["2"]
    assert texts(sub.next_batch_nowait(10)) == ["3"]
    s.append("s", 0, delta("4"))
    assert positions(sub.next_batch_nowait(10)) == [5]


def test_str_subclass_session_ids_are_stored_as_plain_str():
    class Sid(str):
        pass

    s, _ = store()
    event = s.append(Sid("s"), 0, delta("a"))
    assert type(event.session_id) is str and list(s._sessions) == ["s"]
    assert type(s._sessions["s"].session_id) is str
    assert s.current_cursor(Sid("s"), 0) == SessionCursor.new("s", 0, 1)


# -- bounded memory ------------------------------------------------------------------------------


def test_expired_sessions_are_forgotten_but_keep_their_tail():
    s, clock = store(age=1.0)
    for sid, count in (("a", 1), ("b", 3), ("c", 2)):
        for i in range(count):
            s.append(sid, 0, delta(f"{sid}{i}"))
    clock.now += 2
    for sid in "abc":
        s.trim_session(sid)
    total = s.statistics()
    assert (total.sessions, total.forgotten_sessions, total.retained_events) == (0, 3, 0)
    assert (total.held_events, total.evicted_total, total.forgotten_floor) == (0, 6, 0)
    assert s._sessions == {}
    stats = s.statistics("b")
    assert (stats.sessions, stats.forgotten_sessions, stats.tail_position) == (0, 1, 3)
    assert (stats.retained_events, stats.evicted_total, stats.oldest_position) == (0, 3, None)
    # a tombstone answers like an empty log with its tail
    assert s.current_cursor("b", 7) == SessionCursor.new("b", 7, 3)
    assert s.replay_after_cursor(SessionCursor.new("b", 0, 3)) == Replayed(())
    assert s.replay_after_cursor(SessionCursor.new("b", 0, 2)) == Gap(TRIMMED)
    assert s.replay_after_cursor(SessionCursor.new("b", 0, 0)) == Gap(TRIMMED)
    assert s.replay_after_cursor(SessionCursor.new("b", 0, 4)) == Gap(UNAVAILABLE)
    assert s.subscribe_after_cursor(SessionCursor.new("b", 0, 2)) == Gap(TRIMMED)
    assert s.statistics().sessions == 0  # answering from a tombstone opens nothing
    # positions continue from the tail
    assert s.append("b", 0, delta("b3")).cursor == SessionCursor.new("b", 0, 4)
    stats = s.statistics("b")
    assert (stats.sessions, stats.forgotten_sessions, stats.evicted_total) == (1, 0, 3)
    assert s.statistics().forgotten_sessions == 2
    # a subscriber at a tombstone's tail opens the log again and sees what comes next
    sub = s.subscribe_after_cursor(SessionCursor.new("c", 0, 2)).subscription
    s.append("c", 0, delta("c2"))
    assert positions(sub.next_batch_nowait()) == [3]


def test_forgetting_waits_for_subscribers_and_closing_the_last_one_forgets():
    s, clock = store(age=1.0)
    s.append("s", 0, delta("a"))
    first = s.subscribe_after_cursor(SessionCursor.new("s", 0, 1)).subscription
    second = s.subscribe_after_cursor(SessionCursor.new("s", 0, 1)).subscription
    clock.now += 2
    s.trim_session("s")
    assert s.statistics("s").sessions == 1  # observed: kept, though nothing is retained
    first.close()
    assert s.statistics("s").sessions == 1
    second.close()
    stats = s.statistics("s")
    assert (stats.sessions, stats.forgotten_sessions, stats.tail_position) == (0, 1, 1)


def test_a_dropped_subscription_lets_the_session_be_forgotten():
    s, clock = store(age=1.0)
    s.append("s", 0, delta("a"))
    sub = s.subscribe_after_cursor(SessionCursor.new("s", 0, 0)).subscription
    assert s.statistics("s").subscribers == 1
    del sub  # never closed
    gc.collect()
    assert s.statistics("s").subscribers == 0
    clock.now += 2
    assert s.replay_after_cursor(SessionCursor.new("s", 0, 0)) == Gap(TRIMMED)  # retention ran
    assert s.statistics("s").forgotten_sessions == 1


def test_pushed_out_tombstones_raise_a_floor_that_rules_out_reused_positions():
    s, clock = store(age=1.0)
    s._max_forgotten = 2
    old = {}
    for sid, count in (("a", 2), ("b", 5), ("c", 3), ("d", 4)):
        for i in range(count):
            old[sid] = s.append(sid, 0, delta(f"{sid}{i}")).cursor
    early = SessionCursor.new("b", 0, 0)  # taken before b's first event
    clock.now += 2
    for sid in "abcd":
        s.trim_session(sid)  # c pushes a out (floor 2), d pushes b out (floor 5)
    total = s.statistics()
    assert (total.forgotten_sessions, total.forgotten_floor, total.evicted_total) == (2, 5, 14)
    assert list(s._tombstones) == ["c", "d"]
    # a session without log or tombstone reads like an empty log whose tail is the floor
    for sid in ("a", "b", "never-seen"):
        assert s.current_cursor(sid, 0) == SessionCursor.new(sid, 0, 5)
        assert s.statistics(sid).tail_position == 5
        assert s.replay_after_cursor(SessionCursor.new(sid, 0, 5)) == Replayed(())
        assert s.replay_after_cursor(SessionCursor.new(sid, 0, 6)) == Gap(UNAVAILABLE)
    # a cursor from a forgotten history replays nothing only when nothing can have been missed
    assert s.replay_after_cursor(old["b"]) == Replayed(())  # b's tail is the floor
    assert s.replay_after_cursor(old["a"]) == Gap(TRIMMED)  # 2 < floor: a may have missed some
    assert s.replay_after_cursor(early) == Gap(TRIMMED)  # 0 < floor: b's five events are gone
    assert s.subscribe_after_cursor(early) == Gap(TRIMMED)
    # positions continue above the floor, so no session ever hands out a position twice
    assert s.append("b", 0, delta("b5")).cursor.parse().live_position == 6
    assert s.append("a", 0, delta("a2")).cursor.parse().live_position == 6
    assert s.append("fresh", 0, delta("f")).cursor.parse().live_position == 6
    assert s.replay_after_cursor(old["a"]) == Gap(TRIMMED)
    assert s.replay_after_cursor(early) == Gap(TRIMMED)
    assert texts(s.replay_after_cursor(old["b"]).events) == ["b5"]
    # tombstones still held keep their exact tails, below the floor or not
    assert s.replay_after_cursor(old["c"]) == Replayed(())
    assert s.append("d", 0, delta("d4")).cursor.parse().live_position == 5


def test_a_session_at_the_floor_needs_no_tombstone():
    s, clock = store(age=1.0)
    s._max_forgotten = 1
    sub = s.subscribe_after_cursor(s.current_cursor("z", 0)).subscription  # opens z at tail 0
    assert s.statistics().sessions == 1
    sub.close()
    total = s.statistics()
    assert (total.sessions, total.forgotten_sessions) == (0, 0)  # tail 0 is what the floor says
    s.append("a", 0, delta("a"))
    clock.now += 2
    s.trim_session("a")
    assert list(s._tombstones) == ["a"] and s.statistics().forgotten_floor == 0
    assert s.append("z", 0, delta("z")).cursor.parse().live_position == 1
    assert MAX_FORGOTTEN_SESSIONS == 65_536


def test_without_subscribers_only_the_retained_window_is_held():
    s, _ = store(n=1)
    for i in range(3000):
        s.append("s", 0, delta(str(i)))
    stats = s.statistics("s")
    assert (stats.retained_events, stats.tail_position) == (1, 3000)
    assert stats.held_events <= 2 + _COMPACT_SLACK  # was 3000 (then ~1024 once compacted)
    assert texts(s.replay_after_cursor(SessionCursor.new("s", 0, 2999)).events) == ["2999"]


async def test_subscribers_keep_only_what_they_can_still_read():
    s, _ = store(n=1, backlog=8)
    sub = s.subscribe_after_cursor(s.current_cursor("s", 0)).subscription
    for i in range(6):
        s.append("s", 0, delta(str(i)))
    assert texts(sub.next_batch_nowait()) == list("012345")  # within the backlog: nothing lost
    for i in range(6, 40):
        s.append("s", 0, delta(str(i)))
    with pytest.raises(SubscriberLagged) as info:  # lag semantics unchanged
        sub.next_nowait()
    assert info.value.count == 40 - 8 - 6
    assert texts(sub.next_batch_nowait()) == [str(i) for i in range(32, 40)]
    # caught up: the window it can no longer read is cut as appends go on
    for i in range(40, 100):
        s.append("s", 0, delta(str(i)))
        assert positions([sub.next_nowait()]) == [i + 1]
    assert s.statistics("s").held_events <= 2 + _COMPACT_SLACK + 1
    # a second, idle subscriber holds the backlog window again, no more
    idle = s.subscribe_after_cursor(s.current_cursor("s", 0)).subscription
    for i in range(100, 200):
        s.append("s", 0, delta(str(i)))
    assert s.statistics("s").held_events <= 2 * 8 + _COMPACT_SLACK + 2
    with pytest.raises(SubscriberLagged):
        idle.next_nowait()
    assert positions(idle.next_batch_nowait()) == list(range(193, 201))
    with pytest.raises(SubscriberLagged):
        sub.next_nowait()
    assert positions(sub.next_batch_nowait()) == list(range(193, 201))


async def test_closing_the_subscribers_lets_the_window_go():
    s, _ = store(n=1, backlog=64)
    sub = s.subscribe_after_cursor(s.current_cursor("s", 0)).subscription
    for i in range(200):
        s.append("s", 0, delta(str(i)))
    assert s.statistics("s").held_events >= 64  # unread by the subscriber
    sub.close()
    s.append("s", 0, delta("x"))
    assert s.statistics("s").held_events <= 2 + _COMPACT_SLACK


def test_narrowing_retention_frees_the_list_at_the_next_append():
    s, _ = store(n=10_000)
    for i in range(5000):
        s.append("s", 0, delta(str(i)))
    s.reconfigure(max_events_per_session=2)
    s.append("s", 0, delta("x"))
    stats = s.statistics("s")
    assert (stats.retained_events, stats.evicted_total) == (2, 4999)
    assert stats.held_events <= 2 * 2 + _COMPACT_SLACK


async def test_the_replay_part_is_released_once_read():
    s, _ = store()
    start = s.current_cursor("s", 0)
    for i in range(5):
        s.append("s", 0, delta(str(i)))
    sub = s.subscribe_after_cursor(start).subscription
    assert texts([sub.next_nowait(), await sub.next_event()]) == ["0", "1"]
    assert len(sub._replay) == 5
    assert texts(sub.next_batch_nowait(3)) == ["2", "3", "4"]
    assert sub._replay == ()  # the snapshot is not pinned for the subscription's lifetime


def test_dropped_subscriptions_on_closed_loops_leave_no_waiters():
    s, _ = store()
    s.append("s", 0, delta("kept"))  # retained, so the session stays live

    async def wait_then_drop() -> None:
        sub = s.subscribe_after_cursor(SessionCursor.new("s", 0, 1)).subscription
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(sub.next_event(), 0.01)
        # dropped without close(); its loop closes when asyncio.run returns

    for _ in range(5):
        asyncio.run(wait_then_drop())
        gc.collect()
        waiters = s._sessions["s"].waiters or {}
        assert len(waiters) <= 1  # was one per closed loop, kept forever
        assert s.statistics("s").subscribers == 0
    s.trim_session("s")
    assert not s._sessions["s"].waiters
    # a live loop's waiter still works after all that
    async def live() -> list[str]:
        sub = s.subscribe_after_cursor(SessionCursor.new("s", 0, 1)).subscription
        reader = asyncio.create_task(sub.next_event())
        await asyncio.sleep(0.01)
        s.append("s", 0, delta("late"))
        return texts([await asyncio.wait_for(reader, 1)])

    assert asyncio.run(live()) == ["late"]


def test_sessions_whose_subscriptions_were_dropped_are_forgotten_at_the_next_call():
    import gc

    store = InMemoryLiveReplayStore()
    for i in range(200):
        result = store.subscribe_after_cursor(SessionCursor.new(f"s{i}", 0, 0))
        del result  # dropped without close()
    gc.collect()
    store.current_cursor("other", 0)
    store.append("other", 0, Committed(None))  # any later call sweeps what was dropped
    stats = store.statistics()
    assert stats.sessions == 1 and stats.subscribers == 0
    assert store.current_cursor("s7", 0) == SessionCursor.new("s7", 0, 0)


@pytest.mark.parametrize("reading", [10**400, float("inf"), float("-inf"), float("nan"), "1", None])
def test_a_clock_that_reads_no_finite_seconds_is_a_store_failure(reading):
    store = InMemoryLiveReplayStore(clock=lambda: reading)
    with pytest.raises(LiveReplayStoreFailure, match="finite seconds"):
        store.append("s", 0, Committed(None))
    assert store.statistics().sessions == 0
