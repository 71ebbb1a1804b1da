"""Scenarios for every rule of the live replay store (spec section 3), plus a stateful model."""

import asyncio
import datetime

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from lash_core._cursor import SessionCursor
from lash_core._errors import (
    LiveReplayStoreFailure,
    MalformedCursorError,
    ReplayClosed,
    SubscriberLagged,
)
from lash_core._events import AssistantProseDelta, TurnActivity, TurnActivityPayload
from lash_core._gap import LiveReplayGapReason
from lash_core._replay import (
    Gap,
    InMemoryLiveReplayStore,
    InMemoryLiveReplayStoreConfig,
    LiveReplayStore,
    Replayed,
    Subscribed,
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
    with pytest.raises(ValueError):
        s.append("", 0, delta("a"))
    with pytest.raises(TypeError):
        s.append("s", 0, "not a payload")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        s.append("s", -1, delta("a"))
    assert s.statistics("s").tail_position == 0  # nothing half-appended


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
    """The store against a naive model: every event kept forever with its time; retention and
    gaps recomputed from scratch by filtering."""

    SESSIONS = ("a", "b:c", "ü")

    @initialize(
        n=st.integers(min_value=0, max_value=6),
        age=st.sampled_from([0.0, 1.0, 2.5, 10.0]),
        backlog=st.integers(min_value=1, max_value=6),
    )
    def setup(self, n, age, backlog):
        self.clock = Clock()
        self.store = InMemoryLiveReplayStore.with_bounds(
            n, age, clock=self.clock, subscriber_backlog=backlog
        )
        self.n, self.age, self.backlog = n, age, backlog
        self.log = {s: [] for s in self.SESSIONS}  # (position, time, text)
        self.first = {s: 1 for s in self.SESSIONS}  # model's first retained position
        self.known = set()
        self.subs = []  # (session, store subscription, expected replay list, next live position)
        self.counter = 0

    def _trim(self, sid):
        log = self.log[sid]
        tail = len(log)
        first = max(self.first[sid], tail - self.n + 1)
        while first <= tail and self.clock.now - log[first - 1][1] > self.age:
            first += 1
        self.first[sid] = first

    def _expected(self, sid, p):
        if sid not in self.known:
            return Gap(UNAVAILABLE) if p > 0 else []
        self._trim(sid)
        tail, first = len(self.log[sid]), self.first[sid]
        if p > tail:
            return Gap(UNAVAILABLE)
        if first > tail:
            return Gap(TRIMMED) if p < tail else []
        if p + 1 < first:
            return Gap(TRIMMED)
        return [t for (pos, _, t) in self.log[sid] if pos > p and pos >= first]

    @rule(sid=st.sampled_from(SESSIONS))
    def append(self, sid):
        self.counter += 1
        text = f"e{self.counter}"
        event = self.store.append(sid, 0, delta(text))
        self.known.add(sid)
        self.log[sid].append((len(self.log[sid]) + 1, self.clock.now, text))
        self._trim(sid)
        assert event.cursor.parse().live_position == len(self.log[sid])

    @rule(dt=st.sampled_from([0.5, 1.0, 3.0]))
    def advance(self, dt):
        self.clock.now += dt

    @rule(sid=st.sampled_from(SESSIONS), back=st.integers(min_value=-2, max_value=8))
    def replay(self, sid, back):
        p = max(0, len(self.log[sid]) - back)
        result = self.store.replay_after_cursor(SessionCursor.new(sid, 0, p))
        expected = self._expected(sid, p)
        if isinstance(expected, Gap):
            assert result == expected
        else:
            assert isinstance(result, Replayed)
            assert texts(result.events) == expected

    @rule(sid=st.sampled_from(SESSIONS), back=st.integers(min_value=-1, max_value=6))
    def subscribe(self, sid, back):
        p = max(0, len(self.log[sid]) - back)
        expected = self._expected(sid, p)
        result = self.store.subscribe_after_cursor(SessionCursor.new(sid, 0, p))
        if isinstance(expected, Gap):
            assert result == expected
            return
        assert isinstance(result, Subscribed)
        self.known.add(sid)
        self.subs.append([sid, result.subscription, list(expected), len(self.log[sid]) + 1])

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
        tail = len(self.log[sid])
        if nxt <= tail:
            oldest = max(tail - self.backlog + 1, 1)
            if nxt < oldest:
                expected.append(f"lag{oldest - nxt}")
                nxt = oldest
            expected += [t for (pos, _, t) in self.log[sid] if pos >= nxt]
        assert got == expected
        entry[2], entry[3] = [], tail + 1

    @precondition(lambda self: self.subs)
    @rule(i=st.integers(min_value=0, max_value=50))
    def close_subscription(self, i):
        _, sub, _, _ = self.subs.pop(i % len(self.subs))
        sub.close()
        with pytest.raises(ReplayClosed):
            sub.next_nowait()

    @rule(sid=st.sampled_from(SESSIONS))
    def trim(self, sid):
        self.store.trim_session(sid)
        if sid in self.known:
            self._trim(sid)

    @invariant()
    def cursors_and_statistics_agree(self):
        for sid in self.SESSIONS:
            tail = len(self.log[sid])
            assert self.store.current_cursor(sid, 5) == SessionCursor.new(sid, 5, tail)
            if sid in self.known:
                stats = self.store.statistics(sid)
                assert stats.tail_position == tail
                assert stats.retained_events == tail - self.first[sid] + 1
                assert stats.evicted_total == self.first[sid] - 1


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
