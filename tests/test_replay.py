"""Scenarios for every rule of the live replay store (spec section 3), plus a stateful model."""

import asyncio
import collections
import datetime
import gc
import inspect

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from lash_core._cursor import SessionCursor
from lash_core._errors import (
    InvalidObservationError,
    LiveReplayStoreError,
    LiveReplayStoreFailure,
    MalformedCursorError,
    ReplayClosed,
    SubscriberLagged,
)
from lash_core._events import AssistantProseDelta, TurnActivity, TurnActivityPayload
from lash_core._gap import LiveReplayGapReason
from lash_core._replay import (
    MAX_FORGOTTEN_SESSIONS,
    Gap,
    InMemoryLiveReplayStore,
    InMemoryLiveReplayStoreConfig,
    LiveReplayStore,
    Replayed,
    Subscribed,
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


def test_append_assigns_per_session_positions_and_cursors():
    s, _ = store()
    assert str(s.current_cursor("a", 0)) == "lashsc1:0:0:a"
    e1 = s.append("a", 3, delta("x"))
    e2 = s.append("b", 1, delta("y"))
    e3 = s.append("a", 4, delta("z"))
    assert [str(e.cursor) for e in (e1, e2, e3)] == [
        "lashsc1:3:1:a",
        "lashsc1:1:1:b",
        "lashsc1:4:2:a",
    ]
    assert (e3.session_id, e3.revision) == ("a", 4)
    assert str(s.current_cursor("a", 9)) == "lashsc1:9:2:a"


def test_replays_after_cursor_in_order_and_revision_is_ignored():
    s, _ = store()
    start = s.current_cursor("s", 0)
    for t in "abc":
        s.append("s", 0, delta(t))
    assert texts(s.replay_after_cursor(start).events) == ["a", "b", "c"]
    # a cursor naming another revision at the same position replays the same events
    assert texts(s.replay_after_cursor(SessionCursor.new("s", 77, 1)).events) == ["b", "c"]
    assert s.replay_after_cursor(s.current_cursor("s", 0)) == Replayed(())


def test_unknown_session():
    s, _ = store()
    assert s.replay_after_cursor(SessionCursor.new("ghost", 0, 0)) == Replayed(())
    assert s.replay_after_cursor(SessionCursor.new("ghost", 0, 1)) == Gap(UNAVAILABLE)
    assert s.subscribe_after_cursor(SessionCursor.new("ghost", 0, 3)) == Gap(UNAVAILABLE)


def test_cursor_from_the_future_is_unavailable():
    s, _ = store()
    s.append("s", 0, delta("a"))
    assert s.replay_after_cursor(SessionCursor.new("s", 0, 99)) == Gap(UNAVAILABLE)
    assert s.subscribe_after_cursor(SessionCursor.new("s", 0, 2)) == Gap(UNAVAILABLE)


def test_capacity_trim_gives_trimmed_gap():
    s, _ = store(n=1)
    start = s.current_cursor("s", 0)
    s.append("s", 0, delta("a"))
    s.append("s", 0, delta("b"))
    assert s.replay_after_cursor(start) == Gap(TRIMMED)
    assert s.subscribe_after_cursor(start) == Gap(TRIMMED)
    # the cursor just before the first retained event still replays
    assert texts(s.replay_after_cursor(SessionCursor.new("s", 0, 1)).events) == ["b"]


def test_age_trim_gives_trimmed_gap_only_when_strictly_older():
    s, clock = store(age=5.0)
    start = s.current_cursor("s", 0)
    s.append("s", 0, delta("a"))
    clock.now += 5.0
    assert texts(s.replay_after_cursor(start).events) == ["a"]  # exactly max_age: kept
    clock.now += 0.001
    assert s.replay_after_cursor(start) == Gap(TRIMMED)
    assert s.subscribe_after_cursor(start) == Gap(TRIMMED)
    # a cursor at the tail is no gap even when the buffer is empty
    assert s.replay_after_cursor(SessionCursor.new("s", 0, 1)) == Replayed(())


def test_empty_buffer_below_tail_is_trimmed():
    s, clock = store(age=1.0)
    for t in "ab":
        s.append("s", 0, delta(t))
    clock.now += 2
    s.trim_session("s")
    assert s.statistics("s").retained_events == 0
    assert s.replay_after_cursor(SessionCursor.new("s", 0, 1)) == Gap(TRIMMED)
    assert s.replay_after_cursor(SessionCursor.new("s", 0, 2)) == Replayed(())


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


def test_positions_never_reused_after_trim():
    s, clock = store(n=2, age=1)
    for t in "abc":
        s.append("s", 0, delta(t))
    clock.now += 5
    e = s.append("s", 0, delta("d"))
    assert e.cursor.parse().live_position == 4


def test_malformed_cursor_raises_typed_error():
    s, _ = store()
    with pytest.raises(MalformedCursorError, match="missing cursor prefix"):
        s.replay_after_cursor(SessionCursor("nope"))
    with pytest.raises(MalformedCursorError):
        s.subscribe_after_cursor("lashsc1:x:1:s")
    with pytest.raises(MalformedCursorError, match="must be a SessionCursor or str, not int"):
        s.replay_after_cursor(42)  # type: ignore[arg-type]


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


# -- subscriptions -----------------------------------------------------------------------------------


async def test_subscription_yields_replay_then_live():
    s, _ = store()
    start = s.current_cursor("s", 0)
    s.append("s", 0, delta("a"))
    result = s.subscribe_after_cursor(start)
    assert isinstance(result, Subscribed)
    sub = result.subscription
    assert texts([await sub.next_event()]) == ["a"]
    s.append("s", 0, delta("b"))
    assert texts([await sub.next_event()]) == ["b"]
    assert s.statistics("s").subscribers == 1
    sub.close()
    assert s.statistics("s").subscribers == 0
    with pytest.raises(ReplayClosed):
        await sub.next_event()


async def test_subscription_waits_for_live_events():
    s, _ = store()
    sub = s.subscribe_after_cursor(s.current_cursor("s", 0)).subscription
    reader = asyncio.create_task(sub.next_event())
    await asyncio.sleep(0.01)
    assert not reader.done()
    s.append("s", 0, delta("late"))
    assert texts([await asyncio.wait_for(reader, 1)]) == ["late"]


async def test_seam_between_replay_and_live_has_no_loss_or_duplicate():
    s, _ = store()
    for i in range(5):
        s.append("s", 0, delta(str(i)))
    sub = s.subscribe_after_cursor(SessionCursor.new("s", 0, 2)).subscription
    for i in range(5, 8):
        s.append("s", 0, delta(str(i)))
    got = [await sub.next_event() for _ in range(5)]
    assert positions(got) == [3, 4, 5, 6, 7]
    assert sub.next_nowait() is not None  # position 8
    assert sub.next_nowait() is None


async def test_lagging_subscriber_is_told_then_continues_from_oldest_held():
    s, _ = store(backlog=4)
    sub = s.subscribe_after_cursor(s.current_cursor("s", 0)).subscription
    for i in range(10):
        s.append("s", 0, delta(str(i)))
    with pytest.raises(SubscriberLagged, match="lagged by 6 events") as info:
        await sub.next_event()
    assert info.value.count == 6
    assert texts([await sub.next_event() for _ in range(4)]) == ["6", "7", "8", "9"]
    assert s.statistics("s").lag_events == 1


async def test_backlog_is_independent_of_retention():
    # retention keeps 1 event, but a live subscriber still gets everything within its backlog
    s, _ = store(n=1, backlog=8)
    sub = s.subscribe_after_cursor(s.current_cursor("s", 0)).subscription
    for i in range(5):
        s.append("s", 0, delta(str(i)))
    assert texts([await sub.next_event() for _ in range(5)]) == list("01234")


async def test_closing_the_store_drains_then_ends_subscriptions():
    s, _ = store()
    sub = s.subscribe_after_cursor(s.current_cursor("s", 0)).subscription
    waiting = s.subscribe_after_cursor(s.current_cursor("s", 0)).subscription
    reader = asyncio.create_task(waiting.next_event())
    await asyncio.sleep(0)
    s.append("s", 0, delta("last"))
    s.close()
    assert texts([await reader]) == ["last"]
    assert texts([await sub.next_event()]) == ["last"]
    with pytest.raises(ReplayClosed):
        await sub.next_event()
    with pytest.raises(LiveReplayStoreFailure, match="closed"):
        s.append("s", 0, delta("x"))
    with pytest.raises(LiveReplayStoreFailure):
        s.replay_after_cursor(s.current_cursor("s", 0))


async def test_async_for_ends_cleanly_on_close_and_async_with_closes():
    s, _ = store()
    start = s.current_cursor("s", 0)
    s.append("s", 0, delta("a"))

    async def produce():
        await asyncio.sleep(0.01)
        s.append("s", 0, delta("b"))
        s.close()

    task = asyncio.create_task(produce())
    async with s.subscribe_after_cursor(start).subscription as sub:
        seen = [e async for e in sub]
    await task
    assert texts(seen) == ["a", "b"]
    assert sub.closed


async def test_cancelled_reader_does_not_break_other_readers():
    s, _ = store()
    a = s.subscribe_after_cursor(s.current_cursor("s", 0)).subscription
    b = s.subscribe_after_cursor(s.current_cursor("s", 0)).subscription
    ta = asyncio.create_task(a.next_event())
    tb = asyncio.create_task(b.next_event())
    await asyncio.sleep(0.01)
    ta.cancel()
    s.append("s", 0, delta("x"))
    assert texts([await asyncio.wait_for(tb, 1)]) == ["x"]
    # the cancelled reader's subscription still works
    assert texts([await a.next_event()]) == ["x"]


async def test_appends_from_another_thread_wake_subscribers():
    s, _ = store()
    sub = s.subscribe_after_cursor(s.current_cursor("s", 0)).subscription
    reader = asyncio.create_task(sub.next_event())
    await asyncio.sleep(0.01)
    await asyncio.to_thread(s.append, "s", 0, delta("from-thread"))
    assert texts([await asyncio.wait_for(reader, 2)]) == ["from-thread"]


async def test_32_concurrent_producers_and_subscribers_lose_nothing_silently():
    s, _ = store(n=4096, backlog=256)
    sessions = ["s0", "s1"]
    per_producer = 200
    producers = 32
    subscribers = 32
    subs = [
        (sid, s.subscribe_after_cursor(s.current_cursor(sid, 0)).subscription)
        for i in range(subscribers)
        for sid in [sessions[i % 2]]
    ]

    async def produce(pid: int) -> None:
        sid = sessions[pid % 2]
        for i in range(per_producer):
            s.append(sid, 0, delta(f"{pid}:{i}"))
            if i % 7 == 0:
                await asyncio.sleep(0)

    async def consume(sid: str, sub) -> tuple[list[int], int]:
        seen: list[int] = []
        lagged = 0
        expected_total = per_producer * (producers // 2)
        while True:
            try:
                event = await sub.next_event()
            except SubscriberLagged as lag:
                lagged += lag.count
                continue
            except ReplayClosed:
                break
            seen.append(event.cursor.parse().live_position)
            if len(seen) + lagged == expected_total:
                break
        return seen, lagged

    consumers = [asyncio.create_task(consume(sid, sub)) for sid, sub in subs]
    await asyncio.gather(*(produce(p) for p in range(producers)))
    results = await asyncio.wait_for(asyncio.gather(*consumers), 30)
    expected_total = per_producer * (producers // 2)
    for seen, lagged in results:
        assert seen == sorted(seen)  # in order
        assert len(set(seen)) == len(seen)  # no duplicate
        assert len(seen) + lagged == expected_total  # every event seen or counted as lagged
        # what was seen is contiguous apart from announced lags
        assert seen[-1] == expected_total
    # per-producer order within a session is preserved
    final = s.replay_after_cursor(SessionCursor.new("s0", 0, 0)).events
    by_producer: dict[str, list[int]] = {}
    for t in texts(final):
        pid, i = t.split(":")
        by_producer.setdefault(pid, []).append(int(i))
    assert all(v == sorted(v) for v in by_producer.values())


# -- stateful model ----------------------------------------------------------------------------------


class ReplayModel(RuleBasedStateMachine):
    """The store against a naive model: every event ever appended kept with its time; retention,
    forgetting and gaps recomputed from scratch. The tombstone map is made tiny so that the
    store-wide floor rises within a run.

    Beyond matching the model exactly, every replay checks the property the rules exist for: a
    ``Replayed`` answer holds exactly the session's events after the cursor, over its whole
    history (a cursor from before a forgetting never silently replays other events)."""

    SESSIONS = ("a", "b:c", "ü")

    @initialize(
        n=st.integers(min_value=0, max_value=6),
        age=st.sampled_from([0.0, 1.0, 2.5, 10.0]),
        backlog=st.integers(min_value=1, max_value=6),
        max_forgotten=st.integers(min_value=1, max_value=3),
    )
    def setup(self, n, age, backlog, max_forgotten):
        self.clock = Clock()
        self.store = InMemoryLiveReplayStore.with_bounds(
            n, age, clock=self.clock, subscriber_backlog=backlog
        )
        self.store._max_forgotten = max_forgotten
        self.n, self.age, self.backlog, self.max_forgotten = n, age, backlog, max_forgotten
        self.history = {s: [] for s in self.SESSIONS}  # (position, time, text), never dropped
        self.logs = {}  # live sessions: {"tail", "first", "evicted"}
        self.tombs = collections.OrderedDict()  # forgotten: session -> (tail, evicted)
        self.floor = 0
        self.seen = {s: {0} for s in self.SESSIONS}  # positions of cursors handed out
        self.subs = []  # [session, subscription, expected replay list, next live position]
        self.counter = 0

    # -- the reference ---------------------------------------------------------------------------

    def _tail(self, sid):
        if sid in self.logs:
            return self.logs[sid]["tail"]
        if sid in self.tombs:
            return self.tombs[sid][0]
        return self.floor

    def _open(self, sid):
        tail, evicted = self.tombs.pop(sid) if sid in self.tombs else (self.floor, 0)
        self.logs[sid] = {"tail": tail, "first": tail + 1, "evicted": evicted}

    def _trim(self, sid):
        log = self.logs[sid]
        tail = log["tail"]
        first = max(log["first"], tail - self.n + 1)
        stamp = {pos: t for (pos, t, _) in self.history[sid]}
        while first <= tail and self.clock.now - stamp[first] > self.age:
            first += 1
        log["evicted"] += first - log["first"]
        log["first"] = first

    def _subscribed(self, sid):
        return any(entry[0] == sid for entry in self.subs)

    def _settle(self, sid):
        log = self.logs.get(sid)
        if log is not None and log["first"] > log["tail"] and not self._subscribed(sid):
            del self.logs[sid]
            if log["tail"] > self.floor:
                self.tombs[sid] = (log["tail"], log["evicted"])
                while len(self.tombs) > self.max_forgotten:
                    _, (tail, _) = self.tombs.popitem(last=False)
                    self.floor = max(self.floor, tail)

    def _expected(self, sid, p):
        """What a replay or subscribe answers (applying retention, as the store does)."""
        if sid in self.logs:
            self._trim(sid)
            tail, first = self.logs[sid]["tail"], self.logs[sid]["first"]
        else:
            tail = self._tail(sid)
            first = tail + 1
        if p > tail:
            return Gap(UNAVAILABLE)
        if p + 1 < first:
            return Gap(TRIMMED)
        return [t for (pos, _, t) in self.history[sid] if pos > p]

    def _cursor_position(self, sid, back, pick):
        if pick is None:
            return max(0, self._tail(sid) - back)
        seen = sorted(self.seen[sid])
        return seen[pick % len(seen)]

    # -- rules -----------------------------------------------------------------------------------

    @rule(sid=st.sampled_from(SESSIONS))
    def append(self, sid):
        self.counter += 1
        text = f"e{self.counter}"
        expected = self._tail(sid) + 1
        event = self.store.append(sid, 0, delta(text))
        position = event.cursor.parse().live_position
        assert position == expected
        assert all(pos < position for (pos, _, _) in self.history[sid])  # never reused
        if sid not in self.logs:
            self._open(sid)
        self.history[sid].append((position, self.clock.now, text))
        self.logs[sid]["tail"] = position
        self._trim(sid)
        self._settle(sid)
        self.seen[sid].add(position)
        if sid in self.logs and not self._subscribed(sid):
            # without subscribers the list holds retention's window and a bounded dead head
            stats = self.store.statistics(sid)
            assert stats.held_events <= 2 * stats.retained_events + _COMPACT_SLACK

    @rule(dt=st.sampled_from([0.5, 1.0, 3.0]))
    def advance(self, dt):
        self.clock.now += dt

    @rule(
        sid=st.sampled_from(SESSIONS),
        back=st.integers(min_value=-2, max_value=8),
        pick=st.none() | st.integers(min_value=0, max_value=50),
    )
    def replay(self, sid, back, pick):
        p = self._cursor_position(sid, back, pick)
        result = self.store.replay_after_cursor(SessionCursor.new(sid, 0, p))
        expected = self._expected(sid, p)
        self._settle(sid)
        if isinstance(expected, Gap):
            assert result == expected
        else:
            assert isinstance(result, Replayed)
            assert texts(result.events) == expected
            # the property: exactly the session's whole history after the cursor
            assert texts(result.events) == [t for (pos, _, t) in self.history[sid] if pos > p]

    @rule(
        sid=st.sampled_from(SESSIONS),
        back=st.integers(min_value=-1, max_value=6),
        pick=st.none() | st.integers(min_value=0, max_value=50),
    )
    def subscribe(self, sid, back, pick):
        p = self._cursor_position(sid, back, pick)
        expected = self._expected(sid, p)
        result = self.store.subscribe_after_cursor(SessionCursor.new(sid, 0, p))
        if isinstance(expected, Gap):
            assert result == expected
            self._settle(sid)
            return
        assert isinstance(result, Subscribed)
        if sid not in self.logs:
            self._open(sid)
        self.subs.append([sid, result.subscription, list(expected), self._tail(sid) + 1])

    @precondition(lambda self: self.subs)
    @rule(i=st.integers(min_value=0, max_value=50))
    def drain(self, i):
        entry = self.subs[i % len(self.subs)]
        sid, sub, replay, nxt = entry
        got = []
        while True:
            try:
                event = sub.next_nowait()
            except SubscriberLagged as lag:
                got.append(f"lag{lag.count}")
                continue
            if event is None:
                break
            got.append(event.payload.activity.event.text)
        expected = list(replay)
        tail = self._tail(sid)  # a subscribed session is live: never forgotten under a reader
        if nxt <= tail:
            oldest = max(tail - self.backlog + 1, 1)
            if nxt < oldest:
                expected.append(f"lag{oldest - nxt}")
                nxt = oldest
            expected += [t for (pos, _, t) in self.history[sid] if pos >= nxt]
        assert got == expected
        entry[2], entry[3] = [], tail + 1

    @precondition(lambda self: self.subs)
    @rule(i=st.integers(min_value=0, max_value=50))
    def close_subscription(self, i):
        sid, sub, _, _ = self.subs.pop(i % len(self.subs))
        sub.close()
        with pytest.raises(ReplayClosed):
            sub.next_nowait()
        self._settle(sid)  # closing the last subscription forgets an empty session

    @precondition(lambda self: self.subs)
    @rule(i=st.integers(min_value=0, max_value=50))
    def drop_subscription(self, i):
        # dropped without close(): the store stops counting it, and forgets the session the next
        # time retention runs on it (not now)
        self.subs.pop(i % len(self.subs))

    @rule(sid=st.sampled_from(SESSIONS))
    def trim(self, sid):
        self.store.trim_session(sid)
        if sid in self.logs:
            self._trim(sid)
            self._settle(sid)

    @rule()
    def expire_everything(self):
        """Every event expires and retention runs everywhere: unobserved sessions are forgotten.
        Then every interesting cursor gets the model's answer (checked by ``replay``)."""
        self.clock.now += self.age + 1
        for sid in self.SESSIONS:
            self.trim(sid)
        for sid in self.SESSIONS:
            tail = self._tail(sid)
            for p in sorted({0, max(0, tail - 1), tail, tail + 1} | self.seen[sid]):
                result = self.store.replay_after_cursor(SessionCursor.new(sid, 0, p))
                expected = self._expected(sid, p)
                self._settle(sid)
                if isinstance(expected, Gap):
                    assert result == expected, (sid, p)
                else:
                    assert result == Replayed(()), (sid, p)  # nothing is retained any more

    @invariant()
    def cursors_and_statistics_agree(self):
        for sid in self.SESSIONS:
            tail = self._tail(sid)
            cursor = self.store.current_cursor(sid, 5)
            assert cursor == SessionCursor.new(sid, 5, tail)
            self.seen[sid].add(tail)
            stats = self.store.statistics(sid)
            assert stats.tail_position == tail
            assert stats.forgotten_floor == self.floor
            if sid in self.logs:
                log = self.logs[sid]
                assert (stats.sessions, stats.forgotten_sessions) == (1, 0)
                assert stats.retained_events == tail - log["first"] + 1
                assert stats.evicted_total == log["evicted"]
            else:
                assert (stats.sessions, stats.retained_events, stats.held_events) == (0, 0, 0)
                assert stats.forgotten_sessions == int(sid in self.tombs)
                assert stats.evicted_total == (self.tombs[sid][1] if sid in self.tombs else 0)
        total = self.store.statistics()
        assert total.sessions == len(self.logs)
        assert total.forgotten_sessions == len(self.tombs)
        assert total.subscribers == len(self.subs)


TestReplayModel = ReplayModel.TestCase
TestReplayModel.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)


async def test_batch_reads_follow_the_same_rules():
    s, _ = store(backlog=4)
    start = s.current_cursor("s", 0)
    for i in range(3):
        s.append("s", 0, delta(str(i)))
    sub = s.subscribe_after_cursor(start).subscription
    assert texts(sub.next_batch_nowait(2)) == ["0", "1"]  # replay part, in slices
    assert texts(sub.next_batch_nowait(10)) == ["2"]
    assert sub.next_batch_nowait() == []
    for i in range(3, 10):
        s.append("s", 0, delta(str(i)))
    with pytest.raises(SubscriberLagged) as info:
        sub.next_batch_nowait()
    assert info.value.count == 3
    assert texts(sub.next_batch_nowait(3)) == ["6", "7", "8"]
    waiter = asyncio.create_task(sub.next_batch(10))
    await asyncio.sleep(0)
    assert texts(await waiter) == ["9"]
    waiter = asyncio.create_task(sub.next_batch(10))
    await asyncio.sleep(0.01)
    s.append("s", 0, delta("10"))
    s.append("s", 0, delta("11"))
    assert texts(await asyncio.wait_for(waiter, 1)) == ["10", "11"]
    with pytest.raises(ValueError):
        sub.next_batch_nowait(0)
    s.append("s", 0, delta("12"))
    s.close()
    assert texts(sub.next_batch_nowait()) == ["12"]  # drained after close
    with pytest.raises(ReplayClosed):
        sub.next_batch_nowait()


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


def test_concurrent_writer_threads_get_unique_contiguous_positions():
    import threading

    s, _ = store(n=100_000)
    per_thread, threads = 2000, 8
    seen: list[list[int]] = [[] for _ in range(threads)]

    def writer(i: int) -> None:
        for j in range(per_thread):
            event = s.append("s", 0, delta(f"{i}:{j}"))
            seen[i].append(event.cursor.parse().live_position)

    workers = [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    everything = sorted(p for positions in seen for p in positions)
    assert everything == list(range(1, per_thread * threads + 1))  # none lost, none repeated
    assert all(positions == sorted(positions) for positions in seen)  # each writer's order kept
    replayed = s.replay_after_cursor(SessionCursor.new("s", 0, 0)).events
    assert positions(replayed) == everything
    # the text stored at each position is the one its writer was told
    by_text = {e.payload.activity.event.text: e.cursor.parse().live_position for e in replayed}
    assert all(by_text[f"{i}:{j}"] == seen[i][j] for i in range(threads) for j in range(per_thread))


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

BAD_SESSION_IDS = [5, None, b"s", "", "\ud800", "a\udfffb"]
BAD_REVISIONS = [-1, 2**64, 1.5, True, "1", None]
BAD_READ_SIZES = [2.5, True, False, 0, -1, "3", None, 1.0]


def _refusals():
    """(label, call(store, subscription), error, match) for every argument of every public
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
            ("statistics", lambda s, sub, v=sid: s.statistics(v)),
        ):
            if name == "statistics" and sid is None:
                continue  # statistics(None) is the store-wide snapshot
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
    for cursor, match in (
        (42, "SessionCursor or str, not int"),
        (None, "SessionCursor or str, not NoneType"),
        ("nope", "missing cursor prefix"),
        ("lashsc1:0:-1:s", "invalid live replay position"),
        ("lashsc1:0:1:", "missing session id"),
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


async def test_a_bad_read_size_does_not_move_the_subscription():
    # the example: next_batch_nowait(2.5) used to leave the position at 3.5
    s, _ = store()
    sub = s.subscribe_after_cursor(s.current_cursor("s", 0)).subscription
    for i in range(3):
        s.append("s", 0, delta(str(i)))
    with pytest.raises(InvalidObservationError, match="max_events must be an int, not float"):
        sub.next_batch_nowait(2.5)
    assert sub._next == 1
    assert positions(sub.next_batch_nowait(2)) == [1, 2]
    with pytest.raises(InvalidObservationError, match="at least 1"):
        await sub.next_batch(0)
    assert positions(await sub.next_batch(10**30)) == [3]  # any positive size reads what is ready
    s.append("s", 0, delta("3"))
    assert positions([sub.next_nowait()]) == [4]


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
