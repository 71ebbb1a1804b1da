#!/usr/bin/env python3
"""Benchmark ``InMemoryLiveReplayStore`` against a bare ``collections.deque`` baseline.

Run from the repository root::

    python benchmarks/replay_store.py            # full run (about 70 s on 2 cores)
    python benchmarks/replay_store.py --quick    # fewer events and repetitions, same rows (~20 s)
    python benchmarks/replay_store.py --json out.json
    python benchmarks/replay_store.py --memory-only  # section 4 alone (~10 s)

Three timed measurements, each beside a baseline timed in the same process (interleaved with it),
and a memory section:

1. appends/s into one session, steady state: the store is prefilled to ``N`` events with
   ``max_events_per_session=N`` (and an age limit far beyond the run, so retention is bound by
   count only), then whole multiples of ``N`` appends are timed, so each batch contains the same
   number of head compactions of the store's list;
2. replay latency from a cursor at the retained buffer's start (returns all ``N`` events), middle
   (``N/2``) and end (none), median of several samples, also per returned event;
3. fan-out: ``K`` appends, every subscriber reading every event, with 1, 10 and 100 subscribers.
   The synchronous rows drain after each chunk of appends (chunk far below the subscriber
   backlog, so nobody lags), so they measure the store, not asyncio: once event by event with
   ``next_nowait()``, once in batches with ``next_batch_nowait(chunk)`` (each subscriber calls it
   until it returns ``[]``: one full batch and one empty call per chunk). Two async rows use 100
   real subscriber tasks, one awaiting ``next_event()``, one awaiting ``next_batch(chunk)``.
4. memory (``tracemalloc``, no baseline: the figures are bytes, compared run against run): the
   peak during, and what stays allocated after, four scenarios where memory used to outgrow what
   retention holds: (a) 50,000 sessions with one event each, all expired and trimmed; (b)
   ``max_events_per_session=1``, 3,000 appends, no subscriber; (c) 200 subscriptions that each
   waited on their own ``asyncio.run`` loop and were dropped without ``close()``; (d) a
   ``SimulatedClient(keep_events=16)`` reconnecting 2,000 times (one new event each time,
   retention 16), counted from after the client connected. Payloads
   are built inside the traced region there, as a runtime would. Each row also prints what the
   store reports (retained, held events, sessions and tombstones, waiter entries, outcomes kept);
   new statistics fields are read with ``getattr`` so the section runs on older stores too.

The baseline is the naive port of the Rust original: a ``deque(maxlen=N)`` of a frozen slotted
``Record(position, appended_at, event)``; replay parses the cursor, checks for a gap and scans the
deque keeping ``position > p``; fan-out keeps one queue per subscriber and appends each event to
every one of them (``collections.deque`` for the synchronous rows, ``asyncio.Queue`` for the async
rows). Batch reads get the same queues, read in batches the same way as the store: a synchronous
batch take (``deque_take_batch``) returns ``list(q)`` and ``q.clear()`` when at most ``max_events``
are queued (always the case here, at C speed), else ``max_events`` ``popleft()`` calls, and the
subscriber loop calls it until it returns ``[]``, as it calls ``next_batch_nowait``; the async
batch read (``queue_get_batch``) is ``await q.get()`` then ``q.get_nowait()`` while the queue is
not empty, up to ``max_events`` (``asyncio.Queue`` has no bulk get). It builds the very same ``SessionObservationEvent`` (same
cursor string, same ``SessionRevision``) on the same clock as the store, so a ratio measures the
store's own bookkeeping (validation, lock, retention, compaction, subscription protocol) against
the bare data structure, not event construction.

Payloads are ``TurnActivityPayload(TurnActivity.independent(AssistantProseDelta("token ")))``,
built before any timing. The cyclic garbage collector is paused while timing (as ``timeit`` does;
``--keep-gc`` leaves it running). Every measurement asserts what it measured: retained and
replayed counts, positions of the first and last replayed event, per-subscriber delivery counts,
the identity of the last delivered event, and that no subscriber lagged.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import functools
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import tracemalloc
from typing import Any, Callable, Sequence

try:
    import lash_core  # noqa: F401  (installed, e.g. editable in the dev venv)
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lash_core._cursor import CURSOR_PREFIX, SessionCursor, SessionRevision, as_cursor
from lash_core._errors import SubscriberLagged
from lash_core._events import (
    AssistantProseDelta,
    EventPayload,
    SessionObservationEvent,
    TurnActivity,
    TurnActivityPayload,
)
from lash_core._replay import (
    DEFAULT_LIVE_REPLAY_CAPACITY,
    DEFAULT_SUBSCRIBER_BACKLOG,
    Gap,
    InMemoryLiveReplayStore,
    InMemoryLiveReplayStoreConfig,
    Replayed,
    Subscribed,
)

SESSION = "bench-session"
REVISION = 7
#: Far beyond any run, so retention in sections 1 and 2 is bound by count alone.
LONG_AGE = 10.0 * 24 * 3600
#: Distinct payloads built ahead of time and cycled through.
PAYLOAD_POOL = 4096


# --- profiles -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    sizes: tuple[int, ...]
    append_min_batch: int  # timed appends per sample: the smallest multiple of N at least this
    append_warmup: int  # untimed batches first (list growth, fresh memory arenas)
    append_reps: int
    replay_min_sample_s: float  # a replay sample loops until it lasts at least this long
    replay_reps: int
    fanout_subscribers: tuple[int, ...]
    fanout_chunk: int  # appends between two drains; must stay below the subscriber backlog
    fanout_events: int
    fanout_reps: int
    fanout_batch_chunk: int  # batch rows: appends between two drains, also their max_events
    fanout_batch_events: int
    fanout_batch_reps: int
    async_subscribers: int
    async_chunk: int
    async_events: int
    async_reps: int
    async_batch_chunk: int  # async batch row: appends between producer yields, also max_events
    async_batch_events: int
    async_batch_reps: int


FULL = Profile(
    name="full",
    sizes=(2_000, 20_000, 200_000),
    append_min_batch=40_000,
    append_warmup=1,
    append_reps=7,
    replay_min_sample_s=0.004,
    replay_reps=15,
    fanout_subscribers=(1, 10, 100),
    fanout_chunk=256,
    fanout_events=20_000,
    fanout_reps=7,
    fanout_batch_chunk=256,
    fanout_batch_events=50_000,
    fanout_batch_reps=7,
    async_subscribers=100,
    async_chunk=16,
    async_events=10_000,
    async_reps=5,
    async_batch_chunk=16,
    async_batch_events=10_000,
    async_batch_reps=5,
)

QUICK = Profile(
    name="quick",
    sizes=(2_000, 20_000, 200_000),
    append_min_batch=10_000,
    append_warmup=0,
    append_reps=3,
    replay_min_sample_s=0.001,
    replay_reps=5,
    fanout_subscribers=(1, 10, 100),
    fanout_chunk=256,
    fanout_events=3_000,
    fanout_reps=3,
    fanout_batch_chunk=256,
    fanout_batch_events=10_000,
    fanout_batch_reps=3,
    async_subscribers=100,
    async_chunk=16,
    async_events=600,
    async_reps=2,
    async_batch_chunk=16,
    async_batch_events=600,
    async_batch_reps=2,
)


# --- the baseline ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    position: int
    appended_at: float
    event: SessionObservationEvent


class DequeBaseline:
    """One session, the Rust way: a bounded deque of records, replay by scanning it."""

    __slots__ = ("records", "tail", "max_age", "clock")

    def __init__(self, capacity: int, max_age: float, clock: Callable[[], float] = time.monotonic):
        self.records: collections.deque[Record] = collections.deque(maxlen=capacity)
        self.tail = 0
        self.max_age = max_age
        self.clock = clock

    def append(self, session_id: str, revision: int, payload: EventPayload) -> SessionObservationEvent:
        self.tail = tail = self.tail + 1
        cursor = SessionCursor(f"{CURSOR_PREFIX}{revision}:{tail}:{session_id}")
        event = SessionObservationEvent(session_id, SessionRevision(revision), cursor, payload)
        now = self.clock()
        records = self.records
        records.append(Record(tail, now, event))
        while now - records[0].appended_at > self.max_age:
            records.popleft()
        return event

    def replay_after_cursor(self, cursor: SessionCursor) -> list[SessionObservationEvent] | None:
        """The events after the cursor, or ``None`` for a gap."""
        p = as_cursor(cursor).parse().live_position
        if p > self.tail:
            return None
        records = self.records
        now = self.clock()
        while records and now - records[0].appended_at > self.max_age:
            records.popleft()
        if records and p + 1 < records[0].position:
            return None
        return [r.event for r in records if r.position > p]


class FanoutBaseline(DequeBaseline):
    """The deque baseline plus one plain queue per subscriber, each event appended to every one."""

    __slots__ = ("queues",)

    def __init__(self, capacity: int, max_age: float, clock: Callable[[], float] = time.monotonic):
        super().__init__(capacity, max_age, clock)
        self.queues: list[Any] = []

    def subscribe(self, queue: Any) -> Any:
        self.queues.append(queue)
        return queue

    def append(self, session_id: str, revision: int, payload: EventPayload) -> SessionObservationEvent:
        self.tail = tail = self.tail + 1
        cursor = SessionCursor(f"{CURSOR_PREFIX}{revision}:{tail}:{session_id}")
        event = SessionObservationEvent(session_id, SessionRevision(revision), cursor, payload)
        now = self.clock()
        records = self.records
        records.append(Record(tail, now, event))
        while now - records[0].appended_at > self.max_age:
            records.popleft()
        for queue in self.queues:
            queue.append(event)
        return event


class AsyncFanoutBaseline(FanoutBaseline):
    """Fan-out to ``asyncio.Queue`` per subscriber (what a naive async port would write)."""

    __slots__ = ()

    def append(self, session_id: str, revision: int, payload: EventPayload) -> SessionObservationEvent:
        self.tail = tail = self.tail + 1
        cursor = SessionCursor(f"{CURSOR_PREFIX}{revision}:{tail}:{session_id}")
        event = SessionObservationEvent(session_id, SessionRevision(revision), cursor, payload)
        now = self.clock()
        records = self.records
        records.append(Record(tail, now, event))
        while now - records[0].appended_at > self.max_age:
            records.popleft()
        for queue in self.queues:
            queue.put_nowait(event)
        return event


def deque_take_batch(queue: collections.deque, max_events: int) -> list[Any]:
    """The baseline's ``next_batch_nowait``: up to ``max_events`` queued events, oldest first
    (possibly none). When everything queued fits, one C-level copy and clear."""
    if len(queue) <= max_events:
        batch = list(queue)
        queue.clear()
        return batch
    popleft = queue.popleft
    return [popleft() for _ in range(max_events)]


async def queue_get_batch(queue: asyncio.Queue, max_events: int) -> list[Any]:
    """The baseline's ``await next_batch``: wait for one event, then take every ready one up to
    ``max_events`` (``asyncio.Queue`` has no bulk get, so one ``get_nowait`` per event)."""
    batch = [await queue.get()]
    get_nowait = queue.get_nowait
    while len(batch) < max_events and not queue.empty():
        batch.append(get_nowait())
    return batch


# --- helpers --------------------------------------------------------------------------------------


class BenchmarkError(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    """Like ``assert`` but not stripped by ``python -O``."""
    if not condition:
        raise BenchmarkError(message)


def position(event: SessionObservationEvent) -> int:
    return event.cursor.parse().live_position


def make_payloads(count: int) -> list[TurnActivityPayload]:
    return [
        TurnActivityPayload(TurnActivity.independent(AssistantProseDelta("token ")))
        for _ in range(count)
    ]


def payload_sequence(pool: Sequence[TurnActivityPayload], length: int) -> list[TurnActivityPayload]:
    reps = -(-length // len(pool))
    return (list(pool) * reps)[:length]


def run_appends(append: Callable[..., Any], payloads: Sequence[EventPayload]) -> float:
    """Seconds taken by ``append(SESSION, REVISION, p)`` for each payload (same loop for both)."""
    session, revision = SESSION, REVISION
    start = time.perf_counter()
    for payload in payloads:
        append(session, revision, payload)
    return time.perf_counter() - start


class Timing:
    """Pause the cyclic GC while timing unless told not to; collect before each timed block."""

    def __init__(self, keep_gc: bool) -> None:
        self.keep_gc = keep_gc

    def __enter__(self) -> None:
        gc.collect()
        if not self.keep_gc:
            gc.disable()

    def __exit__(self, *exc: object) -> None:
        gc.enable()


def per_call_samples(
    fns: Sequence[Callable[[], Any]], min_sample_s: float, reps: int
) -> list[tuple[list[float], int]]:
    """For each function: ``reps`` samples of seconds per call, interleaved across the functions
    so drift hits them alike. Each sample loops the call until it lasts ``min_sample_s``."""
    numbers = []
    for fn in fns:
        fastest = math.inf
        for _ in range(3):  # warm up, then calibrate on the fastest call
            start = time.perf_counter()
            fn()
            fastest = min(fastest, time.perf_counter() - start)
        numbers.append(max(1, min(1_000_000, math.ceil(min_sample_s / max(fastest, 1e-8)))))
    samples: list[list[float]] = [[] for _ in fns]
    for rep in range(reps):
        order = range(len(fns)) if rep % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            fn, number = fns[i], numbers[i]
            start = time.perf_counter()
            for _ in range(number):
                fn()
            samples[i].append((time.perf_counter() - start) / number)
    return list(zip(samples, numbers))


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> float:
    """(max - min) / median, a crude noise figure kept in the JSON."""
    m = median(values)
    return (max(values) - min(values)) / m if m else 0.0


# --- 1 and 2: appends and replay, per buffer size -------------------------------------------------


def bench_buffer(
    n: int, prof: Profile, pool: Sequence[TurnActivityPayload], keep_gc: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    store = InMemoryLiveReplayStore(
        InMemoryLiveReplayStoreConfig(max_events_per_session=n, max_age=LONG_AGE)
    )
    base = DequeBaseline(n, LONG_AGE)
    batch = n * max(1, -(-prof.append_min_batch // n))
    batch_payloads = payload_sequence(pool, batch)

    with Timing(keep_gc):
        prefill = payload_sequence(pool, n)
        run_appends(store.append, prefill)
        run_appends(base.append, prefill)
        del prefill
        for _ in range(prof.append_warmup):
            run_appends(store.append, batch_payloads)
            run_appends(base.append, batch_payloads)

    store_rates: list[float] = []
    base_rates: list[float] = []
    for rep in range(prof.append_reps):
        pair = [(store.append, store_rates), (base.append, base_rates)]
        if rep % 2:
            pair.reverse()
        for append, rates in pair:
            with Timing(keep_gc):
                seconds = run_appends(append, batch_payloads)
            rates.append(batch / seconds)

    tail = n + (prof.append_warmup + prof.append_reps) * batch
    first = tail - n + 1
    stats = store.statistics(SESSION)
    check(stats.tail_position == tail, f"store tail {stats.tail_position} != {tail}")
    check(stats.retained_events == n, f"store retains {stats.retained_events}, expected {n}")
    check(stats.oldest_position == first, f"store oldest {stats.oldest_position} != {first}")
    check(store.current_cursor(SESSION, REVISION).parse().live_position == tail, "store cursor")
    check(base.tail == tail and len(base.records) == n, "baseline retained count")
    check(base.records[0].position == first, "baseline oldest position")
    check(base.records[-1].event.cursor.parse().live_position == tail, "baseline newest event")

    append_row = {
        "buffer": n,
        "batch": batch,
        "reps": prof.append_reps,
        "store_appends_per_s": median(store_rates),
        "baseline_appends_per_s": median(base_rates),
        "ratio_store_over_baseline": median(store_rates) / median(base_rates),
        "store_us_per_append": 1e6 / median(store_rates),
        "baseline_us_per_append": 1e6 / median(base_rates),
        "store_samples_per_s": store_rates,
        "baseline_samples_per_s": base_rates,
    }

    replay_rows = []
    for where, p, expected in (
        ("start", first - 1, n),
        ("middle", first - 1 + n // 2, n - n // 2),
        ("end", tail, 0),
    ):
        cursor = SessionCursor.new(SESSION, REVISION, p)

        def store_replay(cursor: SessionCursor = cursor) -> Any:
            return store.replay_after_cursor(cursor)

        def base_replay(cursor: SessionCursor = cursor) -> Any:
            return base.replay_after_cursor(cursor)

        got = store_replay()
        check(isinstance(got, Replayed), f"store replay from {where} gave {got!r:.80}")
        check(len(got.events) == expected, f"store replayed {len(got.events)}, expected {expected}")
        got_base = base_replay()
        check(got_base is not None, f"baseline replay from {where} gave a gap")
        check(len(got_base) == expected, f"baseline replayed {len(got_base)}, expected {expected}")
        if expected:
            for events in (got.events, got_base):
                check(position(events[0]) == p + 1, f"replay from {where} starts wrong")
                check(position(events[-1]) == tail, f"replay from {where} ends wrong")
            check(got.events[0] is got_base[0] or position(got.events[0]) == position(got_base[0]),
                  "store and baseline disagree")
        del got, got_base

        with Timing(keep_gc):
            (s_samples, s_number), (b_samples, b_number) = per_call_samples(
                [store_replay, base_replay], prof.replay_min_sample_s, prof.replay_reps
            )
        s_med, b_med = median(s_samples), median(b_samples)
        replay_rows.append(
            {
                "buffer": n,
                "cursor": where,
                "cursor_position": p,
                "events_returned": expected,
                "store_us": s_med * 1e6,
                "baseline_us": b_med * 1e6,
                "ratio_store_over_baseline": s_med / b_med,
                "store_ns_per_event": s_med * 1e9 / expected if expected else None,
                "baseline_ns_per_event": b_med * 1e9 / expected if expected else None,
                "reps": prof.replay_reps,
                "calls_per_sample": {"store": s_number, "baseline": b_number},
                "store_samples_us": [s * 1e6 for s in s_samples],
                "baseline_samples_us": [s * 1e6 for s in b_samples],
                "store_spread": spread(s_samples),
                "baseline_spread": spread(b_samples),
            }
        )
    del store, base, batch_payloads
    gc.collect()
    return append_row, replay_rows


# --- 3: fan-out -----------------------------------------------------------------------------------


def chunked(payloads: Sequence[EventPayload], size: int) -> list[list[EventPayload]]:
    return [list(payloads[i : i + size]) for i in range(0, len(payloads), size)]


def fanout_store_sync(subscribers: int, chunks: list[list[EventPayload]], prefill: list) -> float:
    store = InMemoryLiveReplayStore()  # default config: 2048 events, 120 s, backlog 2048
    run_appends(store.append, prefill)
    subs = []
    for _ in range(subscribers):
        result = store.subscribe_after_cursor(store.current_cursor(SESSION, REVISION))
        check(isinstance(result, Subscribed), f"subscribe gave {result!r:.80}")
        subs.append(result.subscription)
    counts = [0] * subscribers
    lasts: list[Any] = [None] * subscribers
    append, session, revision = store.append, SESSION, REVISION
    last = None

    start = time.perf_counter()
    for chunk in chunks:
        for payload in chunk:
            last = append(session, revision, payload)
        for i, sub in enumerate(subs):
            next_nowait = sub.next_nowait
            got = 0
            seen = None
            while True:
                event = next_nowait()
                if event is None:
                    break
                got += 1
                seen = event
            counts[i] += got
            lasts[i] = seen
    seconds = time.perf_counter() - start

    total = sum(len(c) for c in chunks)
    check(all(c == total for c in counts), f"store delivered {set(counts)}, expected {total}")
    check(all(e is last for e in lasts), "a store subscriber did not end on the last event")
    stats = store.statistics(SESSION)
    check(stats.lag_events == 0, f"store subscribers lagged {stats.lag_events} times")
    check(stats.subscribers == subscribers, "store lost subscribers")
    for sub in subs:
        sub.close()
    return seconds


def fanout_baseline_sync(subscribers: int, chunks: list[list[EventPayload]], prefill: list) -> float:
    base = FanoutBaseline(DEFAULT_LIVE_REPLAY_CAPACITY, 120.0)
    run_appends(base.append, prefill)
    queues = [base.subscribe(collections.deque()) for _ in range(subscribers)]
    counts = [0] * subscribers
    lasts: list[Any] = [None] * subscribers
    append, session, revision = base.append, SESSION, REVISION
    last = None

    start = time.perf_counter()
    for chunk in chunks:
        for payload in chunk:
            last = append(session, revision, payload)
        for i, queue in enumerate(queues):
            popleft = queue.popleft
            got = 0
            seen = None
            while queue:
                seen = popleft()
                got += 1
            counts[i] += got
            lasts[i] = seen
    seconds = time.perf_counter() - start

    total = sum(len(c) for c in chunks)
    check(all(c == total for c in counts), f"baseline delivered {set(counts)}, expected {total}")
    check(all(e is last for e in lasts), "a baseline subscriber did not end on the last event")
    return seconds


def _check_batches(who: str, batches: list[int], misses: list[int], chunks: list[list]) -> None:
    """With ``max_events`` equal to the chunk and a drain after every chunk, each subscriber must
    get exactly one non-empty batch per chunk and end each drain on the chunk's last event."""
    check(all(b == len(chunks) for b in batches),
          f"{who} read {set(batches)} non-empty batches, expected one per chunk ({len(chunks)})")
    check(not any(misses), f"{who}: {sum(misses)} drains did not end on the chunk's last event")


def _drain_batches(
    read: Callable[[int], list[Any]],
    max_events: int,
    i: int,
    last: Any,
    counts: list[int],
    batches: list[int],
    misses: list[int],
    lasts: list[Any],
) -> None:
    """One subscriber's drain after a chunk, shared by store and baseline so both pay the same."""
    got = calls = 0
    seen = None
    while batch := read(max_events):
        got += len(batch)
        calls += 1
        seen = batch[-1]
    counts[i] += got
    batches[i] += calls
    if seen is not last:
        misses[i] += 1
    lasts[i] = seen


def fanout_store_sync_batch(
    subscribers: int, chunks: list[list[EventPayload]], prefill: list, max_events: int
) -> float:
    store = InMemoryLiveReplayStore()  # default config: 2048 events, 120 s, backlog 2048
    run_appends(store.append, prefill)
    subs = []
    for _ in range(subscribers):
        result = store.subscribe_after_cursor(store.current_cursor(SESSION, REVISION))
        check(isinstance(result, Subscribed), f"subscribe gave {result!r:.80}")
        subs.append(result.subscription)
    counts = [0] * subscribers
    batches = [0] * subscribers
    misses = [0] * subscribers
    lasts: list[Any] = [None] * subscribers
    append, session, revision = store.append, SESSION, REVISION
    last = None

    start = time.perf_counter()
    for chunk in chunks:
        for payload in chunk:
            last = append(session, revision, payload)
        for i, sub in enumerate(subs):
            _drain_batches(sub.next_batch_nowait, max_events, i, last, counts, batches, misses, lasts)
    seconds = time.perf_counter() - start

    total = sum(len(c) for c in chunks)
    check(all(c == total for c in counts), f"store delivered {set(counts)}, expected {total}")
    check(all(e is last for e in lasts), "a store subscriber did not end on the last event")
    _check_batches("store", batches, misses, chunks)
    stats = store.statistics(SESSION)
    check(stats.lag_events == 0, f"store subscribers lagged {stats.lag_events} times")
    check(stats.subscribers == subscribers, "store lost subscribers")
    for sub in subs:
        sub.close()
    return seconds


def fanout_baseline_sync_batch(
    subscribers: int, chunks: list[list[EventPayload]], prefill: list, max_events: int
) -> float:
    base = FanoutBaseline(DEFAULT_LIVE_REPLAY_CAPACITY, 120.0)
    run_appends(base.append, prefill)
    queues = [base.subscribe(collections.deque()) for _ in range(subscribers)]
    counts = [0] * subscribers
    batches = [0] * subscribers
    misses = [0] * subscribers
    lasts: list[Any] = [None] * subscribers
    append, session, revision = base.append, SESSION, REVISION
    take = deque_take_batch
    last = None

    start = time.perf_counter()
    for chunk in chunks:
        for payload in chunk:
            last = append(session, revision, payload)
        for i, queue in enumerate(queues):
            _drain_batches(
                functools.partial(take, queue), max_events, i, last, counts, batches, misses, lasts
            )
    seconds = time.perf_counter() - start

    total = sum(len(c) for c in chunks)
    check(all(c == total for c in counts), f"baseline delivered {set(counts)}, expected {total}")
    check(all(e is last for e in lasts), "a baseline subscriber did not end on the last event")
    _check_batches("baseline", batches, misses, chunks)
    return seconds


async def _fanout_async(
    append: Callable[..., Any],
    readers: list[Callable[[], Any]],
    chunks: list[list[EventPayload]],
    batched: bool = False,
) -> tuple[float, list[Any], Any, list[int]]:
    """``readers`` are awaitable next-event callables (next-batch callables when ``batched``),
    one per consumer task. The producer appends a chunk, then yields until every consumer has
    read it, so no one falls behind. Also returns each consumer's count of batches read."""
    total = sum(len(c) for c in chunks)
    reads = [0]
    batch_counts = [0] * len(readers)
    errors: list[BaseException] = []

    async def consume(read: Callable[[], Any]) -> Any:
        last = None
        try:
            for _ in range(total):
                last = await read()
                reads[0] += 1
        except BaseException as err:
            errors.append(err)
            raise
        return last

    async def consume_batches(index: int, read: Callable[[], Any]) -> Any:
        last = None
        got = 0
        calls = 0
        try:
            while got < total:
                batch = await read()
                n = len(batch)
                got += n
                reads[0] += n
                calls += 1
                last = batch[-1]
        except BaseException as err:
            errors.append(err)
            raise
        batch_counts[index] = calls
        return last

    if batched:
        tasks = [asyncio.create_task(consume_batches(i, read)) for i, read in enumerate(readers)]
    else:
        tasks = [asyncio.create_task(consume(read)) for read in readers]
    for _ in range(3):  # let every consumer park on its first await
        await asyncio.sleep(0)
    check(reads[0] == 0 and not errors, "consumers started early")
    session, revision = SESSION, REVISION
    target = 0
    last = None

    start = time.perf_counter()
    for chunk in chunks:
        for payload in chunk:
            last = append(session, revision, payload)
        target += len(chunk) * len(readers)
        while reads[0] < target:
            if errors:
                raise errors[0]
            await asyncio.sleep(0)
    results = await asyncio.gather(*tasks)
    seconds = time.perf_counter() - start

    check(reads[0] == total * len(readers), f"async consumers read {reads[0]} events")
    return seconds, results, last, batch_counts


def fanout_store_async(
    subscribers: int, chunks: list[list[EventPayload]], prefill: list, max_events: int | None = None
) -> float:
    """``await next_event()`` per event, or ``await next_batch(max_events)`` when given."""

    async def main() -> float:
        store = InMemoryLiveReplayStore()
        run_appends(store.append, prefill)
        subs = []
        for _ in range(subscribers):
            result = store.subscribe_after_cursor(store.current_cursor(SESSION, REVISION))
            check(isinstance(result, Subscribed), f"subscribe gave {result!r:.80}")
            subs.append(result.subscription)
        if max_events is None:
            readers = [sub.next_event for sub in subs]
        else:
            readers = [functools.partial(sub.next_batch, max_events) for sub in subs]
        seconds, results, last, batch_counts = await _fanout_async(
            store.append, readers, chunks, batched=max_events is not None
        )
        check(all(r is last for r in results), "an async store subscriber missed the last event")
        if max_events is not None:
            _check_batches("async store", batch_counts, [], chunks)
        stats = store.statistics(SESSION)
        check(stats.lag_events == 0, f"async store subscribers lagged {stats.lag_events} times")
        for sub in subs:
            sub.close()
        return seconds

    return asyncio.run(main())


def fanout_baseline_async(
    subscribers: int, chunks: list[list[EventPayload]], prefill: list, max_events: int | None = None
) -> float:
    """``await q.get()`` per event, or ``queue_get_batch(q, max_events)`` when given."""

    async def main() -> float:
        base = AsyncFanoutBaseline(DEFAULT_LIVE_REPLAY_CAPACITY, 120.0)
        run_appends(base.append, prefill)
        queues = [base.subscribe(asyncio.Queue()) for _ in range(subscribers)]
        if max_events is None:
            readers = [q.get for q in queues]
        else:
            readers = [functools.partial(queue_get_batch, q, max_events) for q in queues]
        seconds, results, last, batch_counts = await _fanout_async(
            base.append, readers, chunks, batched=max_events is not None
        )
        check(all(r is last for r in results), "an async baseline subscriber missed the last event")
        if max_events is not None:
            _check_batches("async baseline", batch_counts, [], chunks)
        return seconds

    return asyncio.run(main())


def bench_fanout(
    prof: Profile, pool: Sequence[TurnActivityPayload], keep_gc: bool
) -> list[dict[str, Any]]:
    prefill = payload_sequence(pool, DEFAULT_LIVE_REPLAY_CAPACITY)
    chunk, batch_chunk = prof.fanout_chunk, prof.fanout_batch_chunk
    cases: list[tuple[Any, ...]] = [
        ("sync next_nowait", s, chunk, None, prof.fanout_events, prof.fanout_reps,
         fanout_store_sync, fanout_baseline_sync, "collections.deque + popleft")
        for s in prof.fanout_subscribers
    ]
    cases += [
        ("sync next_batch_nowait", s, batch_chunk, batch_chunk, prof.fanout_batch_events,
         prof.fanout_batch_reps,
         functools.partial(fanout_store_sync_batch, max_events=batch_chunk),
         functools.partial(fanout_baseline_sync_batch, max_events=batch_chunk),
         "collections.deque + deque_take_batch (list(q); q.clear())")
        for s in prof.fanout_subscribers
    ]
    cases.append(
        ("async next_event", prof.async_subscribers, prof.async_chunk, None, prof.async_events,
         prof.async_reps, fanout_store_async, fanout_baseline_async, "asyncio.Queue + await get")
    )
    cases.append(
        ("async next_batch", prof.async_subscribers, prof.async_batch_chunk,
         prof.async_batch_chunk, prof.async_batch_events, prof.async_batch_reps,
         functools.partial(fanout_store_async, max_events=prof.async_batch_chunk),
         functools.partial(fanout_baseline_async, max_events=prof.async_batch_chunk),
         "asyncio.Queue + queue_get_batch (await get, then get_nowait while not empty)")
    )
    rows = []
    for mode, subscribers, chunk, max_events, events, reps, store_fn, base_fn, base_kind in cases:
        check(chunk < DEFAULT_SUBSCRIBER_BACKLOG, "fan-out chunk must stay below the backlog")
        chunks = chunked(payload_sequence(pool, events), chunk)
        store_s: list[float] = []
        base_s: list[float] = []
        for rep in range(reps):
            pair = [(store_fn, store_s), (base_fn, base_s)]
            if rep % 2:
                pair.reverse()
            for fn, out in pair:
                with Timing(keep_gc):
                    out.append(fn(subscribers, chunks, prefill))
        s_med, b_med = median(store_s), median(base_s)
        rows.append(
            {
                "mode": mode,
                "subscribers": subscribers,
                "events": events,
                "chunk": chunk,
                "max_events": max_events,
                "reps": reps,
                "baseline_queues": base_kind,
                "store_us_per_event": s_med * 1e6 / events,
                "baseline_us_per_event": b_med * 1e6 / events,
                "ratio_store_over_baseline": s_med / b_med,
                "store_ns_per_delivery": s_med * 1e9 / (events * subscribers),
                "baseline_ns_per_delivery": b_med * 1e9 / (events * subscribers),
                "store_samples_s": store_s,
                "baseline_samples_s": base_s,
            }
        )
    return rows


# --- 4: memory ------------------------------------------------------------------------------------


class ManualClock:
    """A monotonic clock the memory scenarios move by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def fresh_payload(text: str = "token ") -> TurnActivityPayload:
    return TurnActivityPayload(TurnActivity.independent(AssistantProseDelta(text)))


def traced(scenario: Callable[[], tuple[Any, dict[str, Any]]]) -> dict[str, Any]:
    """Run ``scenario`` under ``tracemalloc``: bytes at the peak and still allocated afterwards
    (with what the scenario returns kept alive), both over the traced memory before it started.
    The scenario returns ``(keep_alive, counts)``."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        keep, counts = scenario()
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del keep
    gc.collect()
    return {"peak_bytes": peak - base, "retained_bytes": current - base, **counts}


def _held(store: InMemoryLiveReplayStore, session_id: str | None = None) -> int:
    """Events the store's lists reference (``held_events`` where the store reports it)."""
    stats = store.statistics(session_id)
    held = getattr(stats, "held_events", None)
    if held is not None:
        return held
    logs = store._sessions.values() if session_id is None else [store._sessions[session_id]]
    return sum(len(log.events) for log in logs)


def memory_expired_sessions(sessions: int) -> tuple[Any, dict[str, Any]]:
    clock = ManualClock()
    store = InMemoryLiveReplayStore(InMemoryLiveReplayStoreConfig(max_age=120.0), clock=clock)
    ids = [f"session-{i:06d}" for i in range(sessions)]
    for session_id in ids:
        store.append(session_id, REVISION, fresh_payload())
    clock.now += 121.0
    for session_id in ids:
        store.trim_session(session_id)
    stats = store.statistics()
    check(stats.retained_events == 0, f"{stats.retained_events} events still retained")
    check(all(store.current_cursor(i, 0).parse().live_position == 1 for i in ids[:100]),
          "a forgotten session lost its tail")
    del ids
    return store, {
        "retained_events": stats.retained_events,
        "held_events": _held(store),
        "live_sessions": stats.sessions,
        "tombstones": getattr(stats, "forgotten_sessions", 0),
    }


def memory_one_event_window(appends: int) -> tuple[Any, dict[str, Any]]:
    store = InMemoryLiveReplayStore(InMemoryLiveReplayStoreConfig(max_events_per_session=1))
    for _ in range(appends):
        store.append(SESSION, REVISION, fresh_payload())
    stats = store.statistics(SESSION)
    check(stats.retained_events == 1 and stats.tail_position == appends, "retention is not 1")
    return store, {"retained_events": stats.retained_events, "held_events": _held(store, SESSION)}


def memory_dropped_waiters(loops: int) -> tuple[Any, dict[str, Any]]:
    store = InMemoryLiveReplayStore()
    store.append(SESSION, REVISION, fresh_payload())  # retained: the session stays live

    async def wait_and_drop() -> None:
        sub = store.subscribe_after_cursor(store.current_cursor(SESSION, REVISION)).subscription
        try:
            await asyncio.wait_for(sub.next_event(), 0.001)
        except asyncio.TimeoutError:
            pass
        # dropped without close(); asyncio.run closes its loop

    for _ in range(loops):
        asyncio.run(wait_and_drop())
    gc.collect()
    waiters = store._sessions[SESSION].waiters or {}
    check(store.statistics(SESSION).subscribers == 0, "a dropped subscription is still counted")
    return store, {"waiter_entries": len(waiters), "closed_loops_held": sum(
        1 for loop in waiters if loop.is_closed())}


def memory_reconnecting_client(reconnects: int) -> tuple[Any, dict[str, Any]]:
    from lash_core.testing import Scenario, SimulatedClient

    scenario = asyncio.run(Scenario.create(session_id="memory", max_events=16, backend="memory"))
    handle = scenario.handle
    # keep_events=16: the client's own event window is bounded by design; what is measured is
    # what each reconnect leaves behind (its outcome, and the replayed events that outcome holds)
    client = SimulatedClient(handle, "c", keep_events=16)

    def run() -> tuple[Any, dict[str, Any]]:
        for i in range(reconnects):
            client.disconnect()
            handle.record_turn_activity(TurnActivity.independent(AssistantProseDelta(f"t{i}")))
            outcome = client.reconnect()
            check(outcome.gap is None and len(outcome.replayed) == 1, "reconnect did not replay")
        return None, {
            "outcomes_kept": len(client.outcomes),
            "reconnects_counted": getattr(client, "reconnects", len(client.outcomes)),
        }

    result = traced(run)  # traced from here: the scenario's own setup is not counted
    check(client.view_matches_server(), "the client's view drifted")
    return (scenario, client), result


def bench_memory() -> list[dict[str, Any]]:
    rows = []
    for name, fn, size in (
        ("a. expired sessions x 1 event", memory_expired_sessions, 50_000),
        ("b. max_events=1, no subscriber", memory_one_event_window, 3_000),
        ("c. dropped subs on closed loops", memory_dropped_waiters, 200),
    ):
        rows.append({"case": name, "size": size, **traced(lambda fn=fn, size=size: fn(size))})
    keep, row = memory_reconnecting_client(2_000)
    rows.append({"case": "d. SimulatedClient reconnects", "size": 2_000, **row})
    del keep
    gc.collect()
    return rows


# --- output ---------------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    right = right if right is not None else set(range(1, len(headers)))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def fmt_num(value: float, digits: int = 3) -> str:
    """Three significant digits, thousands separated, never scientific."""
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}" if decimals else f"{round(value, digits - 1 - magnitude):,.0f}"


def fmt_ratio(value: float) -> str:
    return fmt_num(value) if value >= 0.001 else f"{value:.2e}"


def size_label(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def report(results: dict[str, Any]) -> str:
    meta = results["meta"]
    out = [
        f"InMemoryLiveReplayStore vs bare deque baseline ({meta['profile']} profile)",
        f"{meta['python']} on {meta['platform']}, {meta['cpus']} CPUs; "
        f"gc {'running' if meta['keep_gc'] else 'paused'} while timing; store clock: time.monotonic (default)",
        "payload: TurnActivityPayload(TurnActivity.independent(AssistantProseDelta('token '))), "
        f"{PAYLOAD_POOL} distinct, built ahead",
        "baseline: deque(maxlen=N) of Record(position, appended_at, event), same event construction;"
        " replay = scan keeping position > p; fan-out = one queue per subscriber",
    ]
    if results["append"]:
        out += timing_report(results)
    out += memory_report(results["memory"])
    out.append("")
    out.append(f"all correctness checks passed; benchmark wall time {meta['wall_s']:.1f} s")
    return "\n".join(out)


def timing_report(results: dict[str, Any]) -> list[str]:
    out = [
        "",
        "1. Append throughput, one session, steady state (retention bound by count at N)",
        "   ratio = store/baseline appends per second: HIGHER is better for the store (1 = parity)",
    ]
    rows = []
    for r in results["append"]:
        rows.append(
            [
                size_label(r["buffer"]),
                f"{r['batch']:,} x {r['reps']}",
                fmt_num(r["store_appends_per_s"]),
                fmt_num(r["baseline_appends_per_s"]),
                fmt_ratio(r["ratio_store_over_baseline"]),
                fmt_num(r["store_us_per_append"]),
                fmt_num(r["baseline_us_per_append"]),
            ]
        )
    out.append(
        table(
            ["buffer", "timed appends", "store/s", "baseline/s", "ratio", "store us/op",
             "baseline us/op"],
            rows,
        )
    )

    out += [
        "",
        "2. Replay latency after a cursor (median per call; 'start' returns the whole buffer)",
        "   ratio = store/baseline time: LOWER is better for the store (1 = parity)",
    ]
    rows = []
    for r in results["replay"]:
        per = lambda v: "-" if v is None else fmt_num(v)  # noqa: E731
        rows.append(
            [
                size_label(r["buffer"]),
                r["cursor"],
                f"{r['events_returned']:,}",
                fmt_num(r["store_us"]),
                fmt_num(r["baseline_us"]),
                fmt_ratio(r["ratio_store_over_baseline"]),
                per(r["store_ns_per_event"]),
                per(r["baseline_ns_per_event"]),
            ]
        )
    out.append(
        table(
            ["buffer", "cursor", "returned", "store us", "baseline us", "ratio",
             "store ns/event", "baseline ns/event"],
            rows,
            right={2, 3, 4, 5, 6, 7},
        )
    )

    out += [
        "",
        "3. Fan-out: K appends, every subscriber reads every event (time per appended event)",
        "   ratio = store/baseline time: LOWER is better for the store (1 = parity)",
    ]
    rows = []
    for r in results["fanout"]:
        rows.append(
            [
                str(r["subscribers"]),
                r["mode"],
                f"{r['events']:,} / {r['chunk']}",
                fmt_num(r["store_us_per_event"]),
                fmt_num(r["baseline_us_per_event"]),
                fmt_ratio(r["ratio_store_over_baseline"]),
                fmt_num(r["store_ns_per_delivery"]),
                fmt_num(r["baseline_ns_per_delivery"]),
            ]
        )
    out.append(
        table(
            ["subs", "reader", "K / chunk", "store us/event", "baseline us/event", "ratio",
             "store ns/delivery", "baseline ns/delivery"],
            rows,
            right={0, 2, 3, 4, 5, 6, 7},
        )
    )
    out.append("   baseline per reader (same queues, same read pattern as the store's rows):")
    seen_modes: dict[str, str] = {}
    for r in results["fanout"]:
        seen_modes.setdefault(r["mode"], r["baseline_queues"])
    width = max(len(m) for m in seen_modes)
    out += [f"     {mode.ljust(width)}  {kind}" for mode, kind in seen_modes.items()]
    out.append(
        "   K / chunk: events appended / appends between two drains (sync) or producer yields (async)"
    )
    out.append(
        "   batch rows: max_events = chunk; each subscriber reads until an empty batch (sync) or"
        " awaits one batch per chunk (async)"
    )
    out.append(
        "   ns/delivery: time per appended event / subscribers (append included); no subscriber lagged"
    )
    return out


def fmt_bytes(value: int) -> str:
    if abs(value) >= 1 << 20:
        return f"{value / (1 << 20):,.1f} MiB"
    return f"{value / 1024:,.1f} KiB"


def memory_report(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    out = [
        "",
        "4. Memory (tracemalloc): peak during the scenario, and still allocated after it with the",
        "   store (or client) alive; LOWER is better. Counts are what the store and client report.",
    ]
    standard = {"case", "size", "peak_bytes", "retained_bytes"}
    table_rows = [
        [
            r["case"],
            f"{r['size']:,}",
            fmt_bytes(r["peak_bytes"]),
            fmt_bytes(r["retained_bytes"]),
            ", ".join(f"{k}={v:,}" for k, v in r.items() if k not in standard),
        ]
        for r in rows
    ]
    out.append(table(["case", "N", "peak", "retained after", "counts"], table_rows, right={1, 2, 3}))
    return out


# --- main -----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    parser.add_argument(
        "--keep-gc", action="store_true", help="leave the cyclic GC running while timing"
    )
    parser.add_argument(
        "--memory-only", action="store_true", help="run section 4 (memory) alone"
    )
    args = parser.parse_args(argv)
    prof = QUICK if args.quick else FULL

    wall = time.perf_counter()
    results: dict[str, Any] = {
        "meta": {
            "profile": prof.name,
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "platform": f"{platform.system()} {platform.machine()}",
            "cpus": os.cpu_count(),
            "keep_gc": args.keep_gc,
            "clock": "time.monotonic",
            "payload_pool": PAYLOAD_POOL,
            "profile_settings": dataclasses.asdict(prof),
        },
        "append": [],
        "replay": [],
        "fanout": [],
        "memory": [],
    }
    if args.memory_only:
        results["memory"] = bench_memory()
        results["meta"]["wall_s"] = time.perf_counter() - wall
        return finish(results, args.json)

    pool = make_payloads(PAYLOAD_POOL)

    # warm the interpreter's specialised paths on both implementations before timing anything
    warm = payload_sequence(pool, 5_000)
    warm_store = InMemoryLiveReplayStore(InMemoryLiveReplayStoreConfig(1_000, LONG_AGE))
    warm_base = DequeBaseline(1_000, LONG_AGE)
    run_appends(warm_store.append, warm)
    run_appends(warm_base.append, warm)
    for _ in range(50):
        warm_store.replay_after_cursor(warm_store.current_cursor(SESSION, REVISION))
        warm_base.replay_after_cursor(SessionCursor.new(SESSION, REVISION, warm_base.tail))
    del warm, warm_store, warm_base

    for n in prof.sizes:
        append_row, replay_rows = bench_buffer(n, prof, pool, args.keep_gc)
        results["append"].append(append_row)
        results["replay"].extend(replay_rows)
    results["fanout"] = bench_fanout(prof, pool, args.keep_gc)
    del pool
    results["memory"] = bench_memory()
    results["meta"]["wall_s"] = time.perf_counter() - wall
    return finish(results, args.json)


def finish(results: dict[str, Any], json_path: str | None) -> int:
    print(report(results))
    if json_path:
        with open(json_path, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)
            fh.write("\n")
        print(f"figures written to {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
