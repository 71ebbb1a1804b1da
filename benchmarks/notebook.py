#!/usr/bin/env python3
"""Benchmark the notebook toolkit (``lash_nb``) against naive pandas code in the same process.

Run from the repository root::

    python benchmarks/notebook.py            # full run: 100k events, 5 repetitions; 10 s monitor runs
    python benchmarks/notebook.py --quick    # 100k events, 1 repetition, smaller naive-concat row; 3 s runs
    python benchmarks/notebook.py --part part2_monitor --seconds 5   # one part only
    python benchmarks/notebook.py --part part3_grid                  # grid vs HTML at 5,000 events/s
    python benchmarks/notebook.py --json out.json

Part 1, events to DataFrames (each row beside a baseline timed in the same process):

1. ``to_frame(events)`` for 100k events, against the naive way: a bare loop building one plain
   dict per event, then ``pandas.DataFrame.from_records``;
2. ``EventHistory.append`` in batches of 100 and then ``.frame()``, against the same naive
   records built batch by batch and one ``from_records`` at the end; also the append cost at the
   start and at the end of the history (it must not grow with the history: O(batch));
3. the naive *incremental* history, ``pandas.concat`` of the old frame and the new batch on every
   append, which is O(history) per batch (on a prefix of the events; it is quadratic).

The baselines compute the same column values (they call the same text summary, so the ratio
measures building the frame, not summarising events) but leave pandas to infer dtypes: object
columns, no nullable integers. Events are built before any timing; the cyclic garbage collector
is paused while timing (as ``timeit`` does). Every measurement checks what it built.

Part 2, a live ``SessionMonitor`` under a sustained stream (inside ``asyncio.run``; real ipywidgets,
no frontend attached, so this is the Python-side cost only):

4. a task on the loop appends ``--rate`` (1,000) events/s through the handle
   (``record_turn_activity`` of one ``AssistantProseDelta`` each), in bursts of about 10 paced
   against a monotonic schedule, for 10 s (``--quick``: 3 s); once into a monitor with
   ``controls=False`` and once with ``controls=True`` (its reconnect simulator's two clients pump on
   every batch). The monitor's ``ingest`` and ``redraw`` are wrapped to time them. Printed: events
   appended, achieved rate, delivered, lagged (asserted: delivered == appended, in order, 0 lagged);
   redraws and redraws/s (asserted <= 10/s x wall + 1, and the last batch drawn); time per redraw
   (median, p95, max); time per ingest batch (redraws run inline excluded) and per event; the
   monitor's CPU share, (ingest + redraw) / wall, and the whole process's; latency from append to
   the event being in the history, for every 50th event;
5. the baseline, the naive monitor a notebook user might write first, fed by the same producer:
   for every event one more row dict, then ``pandas.DataFrame(rows).tail(40).to_html()`` into an
   ``ipywidgets.HTML`` (unthrottled). It cannot keep up, so it gets a backlog large enough never to
   lag and is stopped when the producer's schedule ends; printed are its per-event cost, its
   redraws (one per event), what it left unread, and the ratio monitor cost per event / naive
   cost per event (lower is better). The cyclic GC stays on in part 2, as in a live notebook.
   (Part 2's monitors use the default view, ``grid="auto"``: the Perspective grid when it is
   installed.)

Part 3, the live Perspective grid beside today's HTML monitor, in the same run (inside
``asyncio.run``, no frontend attached):

6. the same producer appends ``--grid-rate`` (5,000) events/s, woken every 10 ms, for 10 s
   (``--quick``: 3 s; ``--seconds``) into ``SessionMonitor(grid="perspective", controls=False)``
   and then into ``SessionMonitor(grid="html", controls=False)``, both with ``max_rows`` = the
   events of the run (nothing rolls over; ``rolled over`` is printed all the same). Each is
   preceded by an untimed 0.3 s run of both kinds (first-use costs). Printed for each: events
   appended, achieved rate, delivered to the history, lagged, lost (appended - delivered: events
   that never reached the history, lagged ones among them), rolled over; for the grid also rows
   handed to its table, rows held and appended - handed (never in the grid). Asserted for the
   grid: lost == lagged == never-in-the-grid == 0, the table holds every event in order.
7. redraws and view updates (grid: ``Table.update`` calls; html: table redraws) per second,
   asserted <= ``max_redraw_hz`` x wall + 1; rows per update;
8. bytes per update: grid, ``bytes_sent / updates`` and the median / p95 of each update's
   ``last_update_bytes``, and bytes per row; html, the UTF-8 length of the table HTML plus the
   header HTML set per redraw (what would cross the comm). Proportional to the batch, not the
   history: Pearson's r of bytes against rows in the update, r of bytes per row against the rows
   held before it, medians in five bands of the history (0 .. ``max_rows``), and the median
   update of the last second against the first (asserted for the grid: its growth at most the
   batch's growth x 1.10; numbers get longer as positions grow). No browser is attached: the
   grid's bytes are the payloads handed to the table in the kernel; in a browser Perspective
   then sends a small "updated" notification and the browser pulls only its viewport, which is
   not measured here.
9. kernel CPU per event: ``time.process_time()`` over the run (every thread, producer and store
   included) / events delivered; the monitor's own CPU (ingest + redraw, by ``process_time``
   around each call) per event; the view's CPU (grid: ``_push_grid``; html: the table render)
   per update, per row (by history band) and per event; the ratios grid / html.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Sequence

try:
    import lash_nb  # noqa: F401  (installed, e.g. editable in the dev venv)
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ipywidgets as widgets
import pandas as pd

from lash_core import (
    AssistantProseDelta,
    Committed,
    ModelRequestStarted,
    ProcessChanged,
    QueueChanged,
    SessionCursor,
    SessionObservationEvent,
    SessionProcessEventKind,
    SessionQueueEventKind,
    SessionRevision,
    TokenUsage,
    ToolCallCompleted,
    ToolCallStarted,
    TurnActivity,
    TurnActivityPayload,
    Usage,
)
from lash_core.testing import Scenario
from lash_nb import COLUMNS, EventHistory, SessionMonitor, schema_mismatches, to_frame
from lash_nb._frames import event_text

STAMP = pd.Timestamp("2025-06-15 12:00:00", tz="UTC")
SESSION = "bench-session"
BATCH = 100


# --- fixtures -------------------------------------------------------------------------------------


def make_events(count: int) -> list[SessionObservationEvent]:
    """A turn-shaped mix: per 20 events a request, 12 prose deltas, a tool call and its result,
    usage, a queue change, a process change and a commit (read view omitted, as on the wire)."""

    def activity(event: Any, correlation: str) -> TurnActivityPayload:
        return TurnActivityPayload(TurnActivity(f"a{len(out)}", correlation, event))

    usage = TokenUsage(input_tokens=120, output_tokens=40)
    out: list[SessionObservationEvent] = []
    revision = 0
    while len(out) < count:
        turn = len(out) // 20
        corr = f"turn-{turn}"
        payloads: list[Any] = [activity(ModelRequestStarted(0), corr)]
        payloads += [activity(AssistantProseDelta(f"word {i} of turn {turn} "), corr) for i in range(12)]
        payloads += [
            activity(ToolCallStarted(f"c{turn}", "add", {"a": turn, "b": 2}), f"tool:c{turn}"),
            activity(
                ToolCallCompleted(f"c{turn}", "add", {"a": turn, "b": 2}, {"status": "success", "payload": turn + 2}, 3),
                f"tool:c{turn}",
            ),
            activity(Usage(0, usage, usage), corr),
            QueueChanged(SessionQueueEventKind.ENQUEUED, (f"qwb-{turn}",)),
            ProcessChanged(SessionProcessEventKind.STARTED, (f"proc-{turn}",)),
            activity(AssistantProseDelta("done."), corr),
        ]
        revision += 1
        payloads.append(Committed(None))
        for payload in payloads:
            position = len(out) + 1
            cursor = SessionCursor.new(SESSION, revision, position)
            out.append(SessionObservationEvent(SESSION, SessionRevision(revision), cursor, payload))
    return out[:count]


# --- the naive baseline -----------------------------------------------------------------------------


def naive_record(event: SessionObservationEvent, received_at: Any) -> dict[str, Any]:
    """What a notebook user would write first: one dict per event, every field by hand."""
    payload = event.payload
    activity = getattr(payload, "activity", None)
    frame_id = getattr(payload, "frame_id", None)
    return {
        "position": event.cursor.parse().live_position,
        "revision": int(event.revision),
        "cursor": str(event.cursor),
        "session_id": event.session_id,
        "payload_type": payload.type,
        "event_type": activity.event.type if activity is not None else None,
        "text": event_text(event),
        "batch_ids": tuple(getattr(payload, "batch_ids", ())),
        "process_ids": tuple(getattr(payload, "process_ids", ())),
        "frame_id": frame_id,
        "correlation_id": activity.correlation_id if activity is not None else None,
        "received_at": received_at,
    }


def naive_frame(events: list[SessionObservationEvent]) -> pd.DataFrame:
    records = []
    for event in events:
        records.append(naive_record(event, STAMP))
    return pd.DataFrame.from_records(records)


# --- timing helpers --------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, result
    finally:
        gc.enable()


def median_of(repeats: int, fn: Callable[[], Any], check: Callable[[Any], None]) -> dict[str, Any]:
    samples = []
    for _ in range(repeats):
        seconds, result = timed(fn)
        check(result)
        samples.append(seconds)
    return {"median_s": statistics.median(samples), "samples_s": samples}


def row(label: str, ours: float, base: float | None, rows: int) -> str:
    ratio = f"{ours / base:6.2f}x" if base else "      "
    base_text = f"{base * 1000:9.1f} ms" if base is not None else " " * 12
    return f"  {label:<44} {ours * 1000:9.1f} ms {base_text} {ratio}  {rows / ours / 1e6:5.2f} M rows/s"


# --- part 1: events to DataFrames ------------------------------------------------------------------


def check_frame(expected_rows: int) -> Callable[[pd.DataFrame], None]:
    def check(frame: pd.DataFrame) -> None:
        assert len(frame) == expected_rows, len(frame)
        assert tuple(frame.columns) == COLUMNS
        assert schema_mismatches(frame) == ()  # categorical columns carry their own categories
        assert int(frame["position"].iloc[-1]) == expected_rows
    return check


def check_naive(expected_rows: int) -> Callable[[pd.DataFrame], None]:
    def check(frame: pd.DataFrame) -> None:
        assert len(frame) == expected_rows and tuple(frame.columns) == COLUMNS
        assert int(frame["position"].iloc[-1]) == expected_rows
    return check


def measure_to_frame(events: list[SessionObservationEvent], repeats: int) -> dict[str, Any]:
    n = len(events)
    ours = median_of(repeats, lambda: to_frame(events, STAMP), check_frame(n))
    base = median_of(repeats, lambda: naive_frame(events), check_naive(n))
    return {"rows": n, "to_frame": ours, "baseline_from_records": base}


def measure_history(events: list[SessionObservationEvent], repeats: int) -> dict[str, Any]:
    n = len(events)
    batches = [events[i : i + BATCH] for i in range(0, n, BATCH)]
    append_costs: list[float] = []

    def ours() -> tuple[float, float, pd.DataFrame]:
        history = EventHistory(max_rows=n)
        append_costs.clear()
        clock = time.perf_counter
        start = clock()
        for batch in batches:
            t0 = clock()
            history.append(batch, STAMP)
            append_costs.append(clock() - t0)
        appended = clock()
        frame = history.frame()
        return appended - start, clock() - appended, frame

    def naive() -> pd.DataFrame:
        records: list[dict[str, Any]] = []
        for batch in batches:
            for event in batch:
                records.append(naive_record(event, STAMP))
        return pd.DataFrame.from_records(records)

    samples = []
    check = check_frame(n)
    for _ in range(repeats):
        seconds, (append_s, frame_s, frame) = timed(ours)
        check(frame)
        tenth = max(len(append_costs) // 10, 1)
        samples.append(
            {
                "total_s": seconds,
                "append_s": append_s,
                "frame_s": frame_s,
                "append_us_first_tenth": statistics.median(append_costs[:tenth]) * 1e6,
                "append_us_last_tenth": statistics.median(append_costs[-tenth:]) * 1e6,
            }
        )
    best = sorted(samples, key=lambda s: s["total_s"])[len(samples) // 2]
    base = median_of(repeats, naive, check_naive(n))
    return {"rows": n, "batch": BATCH, "history": best, "samples": samples, "baseline_from_records": base}


def measure_naive_concat(events: list[SessionObservationEvent]) -> dict[str, Any]:
    """The naive incremental history: concat the old frame with each new batch (O(history))."""
    n = len(events)
    batches = [events[i : i + BATCH] for i in range(0, n, BATCH)]

    def naive() -> pd.DataFrame:
        frame = pd.DataFrame(columns=list(COLUMNS))
        for batch in batches:
            new = pd.DataFrame.from_records([naive_record(e, STAMP) for e in batch])
            frame = pd.concat([frame, new], ignore_index=True) if len(frame) else new
        return frame

    def ours() -> pd.DataFrame:
        history = EventHistory(max_rows=n)
        for batch in batches:
            history.append(batch, STAMP)
            history.frame()  # a frame after every batch, as the naive code has
        return history.frame()

    base = median_of(1, naive, check_naive(n))
    mine = median_of(1, ours, check_frame(n))
    return {"rows": n, "naive_concat": base, "history_frame_every_batch": mine}


def part1(args: argparse.Namespace) -> dict[str, Any]:
    repeats = 1 if args.quick else 5
    print(f"building {args.events} events ...", flush=True)
    events = make_events(args.events)
    to_frame(events[:1_000], STAMP)  # warm up pandas' code paths so the first timing is fair
    naive_frame(events[:1_000])
    print(f"\npart 1: events to DataFrames ({args.events} events, median of {repeats}; lower is better)")
    print(f"  {'measurement':<44} {'lash_nb':>12} {'baseline':>12} {'ratio':>7}")
    result: dict[str, Any] = {}

    r = measure_to_frame(events, repeats)
    result["to_frame"] = r
    print(row("to_frame(events)  vs from_records(dicts)", r["to_frame"]["median_s"], r["baseline_from_records"]["median_s"], r["rows"]))

    r = measure_history(events, repeats)
    result["history"] = r
    h = r["history"]
    print(row(f"EventHistory.append x{len(events) // BATCH} + frame()", h["total_s"], r["baseline_from_records"]["median_s"], r["rows"]))
    print(row("  of which append (all batches)", h["append_s"], None, r["rows"]))
    print(row("  of which frame()", h["frame_s"], None, r["rows"]))
    print(
        f"  append of one {BATCH}-event batch: {h['append_us_first_tenth']:.0f} µs in the first tenth of the "
        f"history, {h['append_us_last_tenth']:.0f} µs in the last (O(batch): flat)"
    )

    prefix = events[: args.concat_events]
    r = measure_naive_concat(prefix)
    result["naive_concat"] = r
    print(
        row(
            f"frame after every append ({len(prefix)} events)",
            r["history_frame_every_batch"]["median_s"],
            r["naive_concat"]["median_s"],
            r["rows"],
        )
        + "   (baseline: pandas.concat per batch)"
    )
    return result


# --- part 2: a live monitor under a sustained stream ---------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return ordered[int(rank) - 1]


def spread(samples: list[float], scale: float) -> dict[str, float]:
    """median / p95 / max / mean of ``samples`` times ``scale`` (zeros when there are none)."""
    if not samples:
        return {"n": 0, "median": 0.0, "p95": 0.0, "max": 0.0, "mean": 0.0}
    return {
        "n": len(samples),
        "median": statistics.median(samples) * scale,
        "p95": percentile(samples, 95) * scale,
        "max": max(samples) * scale,
        "mean": statistics.fmean(samples) * scale,
    }


def activity_delta(text: str) -> TurnActivity:
    return TurnActivity.independent(AssistantProseDelta(text))


class Producer:
    """Appends ``rate`` events/s through the handle for ``seconds``, from a task on the loop.

    Paced against a monotonic schedule: every wake-up appends every event due by now (a burst of
    about ``burst``), then sleeps until the next burst is due, so a late wake-up is caught up and
    the achieved rate stays on target. Every ``stamp_every``-th event is stamped with the time
    just after its append (for latency); ``stamps`` holds ``(ordinal, time)`` in order.
    """

    def __init__(self, handle: Any, rate: float, seconds: float, *, burst: int = 10, stamp_every: int = 50) -> None:
        self.handle = handle
        self.rate = rate
        self.total = int(round(rate * seconds))
        self.burst = burst
        self.stamp_every = stamp_every
        self.produced = 0
        self.bursts = 0
        self.max_burst = 0
        self.stamps: collections.deque[tuple[int, float]] = collections.deque()
        self.started = self.finished = 0.0

    async def run(self) -> None:
        clock = time.perf_counter
        record = self.handle.record_turn_activity
        token = activity_delta  # a fresh activity per event, as a streaming turn makes them
        self.started = start = clock()
        while self.produced < self.total:
            due = min(self.total, int((clock() - start) * self.rate) + 1)
            self.bursts += 1
            self.max_burst = max(self.max_burst, due - self.produced)
            while self.produced < due:
                self.produced += 1
                record(token("tok "))
                if self.produced % self.stamp_every == 0:
                    self.stamps.append((self.produced, clock()))
            if self.produced < self.total:
                next_burst = start + (self.produced + self.burst - 1) / self.rate
                await asyncio.sleep(max(0.0, next_burst - clock()))
        self.finished = clock()

    def summary(self) -> dict[str, Any]:
        """The producer's figures, as every report row carries them."""
        return {
            "produced": self.produced,
            "achieved_rate": self.achieved_rate,
            "produce_s": self.finished - self.started,
            "bursts": self.bursts,
            "max_burst": self.max_burst,
        }

    @property
    def achieved_rate(self) -> float:
        span = self.finished - self.started
        # n events paced at rate r span (n - 1) / r seconds: count the intervals, not the events
        return (self.produced - 1) / span if span > 0 else float("inf")


class LatencyProbe:
    """Append-to-delivery latency of the producer's stamped events, given a delivered count."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.samples: list[float] = []

    def delivered(self, count: int) -> None:
        stamps = self.producer.stamps
        if stamps and stamps[0][0] <= count:
            now = time.perf_counter()
            while stamps and stamps[0][0] <= count:
                self.samples.append(now - stamps.popleft()[1])


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.001)


async def run_monitor(rate: float, seconds: float, *, controls: bool) -> dict[str, Any]:
    """A real ``SessionMonitor`` fed by the producer; its ``ingest`` and ``redraw`` are wrapped
    (instance attributes, which the monitor's task and throttle timer look up) to time them."""
    scenario = await Scenario.create(session_id=SESSION, fake_clock=False, backend="memory")
    monitor = SessionMonitor(scenario.handle, clock=scenario.clock, controls=controls)
    await asyncio.sleep(0.05)  # the monitor's task subscribes and waits; side-panel refreshes finish
    producer = Producer(scenario.handle, rate, seconds)
    probe = LatencyProbe(producer)
    clock = time.perf_counter
    redraw_times: list[float] = []
    redraw_starts: list[float] = []
    ingest_times: list[float] = []  # each excludes any redraw the ingest ran inline
    batch_sizes: list[int] = []
    in_redraw = [0.0]
    last = {"ingest": 0.0, "redraw": 0.0}
    base_count = monitor.event_count
    original_redraw, original_ingest = monitor.redraw, monitor.ingest

    def redraw() -> None:
        t0 = clock()
        original_redraw()
        t1 = clock()
        redraw_times.append(t1 - t0)
        redraw_starts.append(t0)
        in_redraw[0] += t1 - t0
        last["redraw"] = t1

    def ingest(batch: Any) -> None:
        batch = list(batch)
        nested = in_redraw[0]
        t0 = clock()
        original_ingest(batch)
        t1 = clock()
        ingest_times.append((t1 - t0) - (in_redraw[0] - nested))
        batch_sizes.append(len(batch))
        last["ingest"] = t0  # a redraw that ends after this drew the batch (one run inline too)
        probe.delivered(monitor.event_count - base_count)

    monitor.redraw, monitor.ingest = redraw, ingest
    gc.collect()
    cpu0, wall0 = time.process_time(), clock()
    await producer.run()
    await wait_until(lambda: monitor.event_count - base_count >= producer.produced, 5.0, "delivery")
    await wait_until(lambda: not monitor.redraw_pending, 5.0, "the trailing redraw")
    wall, cpu = clock() - wall0, time.process_time() - cpu0
    monitor.redraw, monitor.ingest = original_redraw, original_ingest

    # checks: every event delivered once, in order, none lost or lagged, the last one drawn
    delivered = monitor.event_count - base_count
    stats = scenario.store.statistics(SESSION)
    rows = monitor.history.rows()
    positions = [r[0] for r in rows]
    assert delivered == producer.produced == producer.total, (delivered, producer.produced)
    assert sum(batch_sizes) == delivered and monitor.lagged == 0 and monitor.gaps == 0
    assert monitor.history.total_rows == delivered == len(rows) + monitor.dropped_rows
    assert positions == list(range(positions[0], positions[0] + len(positions))), "rows out of order"
    assert positions[-1] == stats.newest_position, (positions[-1], stats.newest_position)
    assert last["redraw"] >= last["ingest"], "the last batch was never drawn"
    assert f"{delivered} events" in monitor.header.value
    assert len(probe.samples) == producer.total // producer.stamp_every
    if controls:
        assert monitor.simulator is not None
        for client in monitor.simulator.clients.values():
            assert len(client.events) == delivered and client.lagged == 0, client
    # the throttle: checked here, reported at the end of part 2 (so every row still prints)
    redraws = len(redraw_times)
    hz = monitor.max_redraw_hz
    limit = hz * wall + 1
    spacing = [b - a for a, b in zip(redraw_starts, redraw_starts[1:])]
    early = [g for g in spacing if g < 1 / hz - 0.001]  # 1 ms of slack for timer granularity
    label = f"SessionMonitor(controls={controls})"
    failures = []
    if redraws > limit:
        failures.append(f"{label}: {redraws} redraws in {wall:.2f} s, over {hz:g}/s x wall + 1 = {limit:.1f}")
    if early:
        failures.append(
            f"{label}: {len(early)} redraw(s) less than 1/{hz:g} s after the previous one "
            f"(closest {min(early) * 1e3:.1f} ms): throttle broken"
        )
    monitor.stop()
    scenario.store.close()

    busy = sum(ingest_times) + sum(redraw_times)
    return {
        "controls": controls,
        "target_rate": rate,
        **producer.summary(),
        "delivered": delivered,
        "lagged": monitor.lagged,
        "wall_s": wall,
        "redraws": redraws,
        "redraws_per_s": redraws / wall,
        "redraw_limit": limit,
        "redraw_min_spacing_ms": min(spacing) * 1e3 if spacing else None,
        "early_redraws": len(early),
        "failures": failures,
        "redraw_ms": spread(redraw_times, 1e3),
        "batches": len(batch_sizes),
        "mean_batch": delivered / len(batch_sizes),
        "ingest_us_per_batch": spread(ingest_times, 1e6),
        "ingest_us_per_event": sum(ingest_times) / delivered * 1e6,
        "monitor_us_per_event": busy / delivered * 1e6,
        "monitor_cpu_share": busy / wall,
        "process_cpu_share": cpu / wall,
        "latency_ms": spread(probe.samples, 1e3),
    }


class NaiveMonitor:
    """What a notebook user might write first: for every event, one more row dict, then the
    whole table rebuilt and rendered into an ``ipywidgets.HTML`` (no batching, no throttle)."""

    def __init__(self, handle: Any) -> None:
        self.rows: list[dict[str, Any]] = []
        self.html = widgets.HTML()
        self.redraws = 0
        subscribed = handle.subscribe_session_observation(handle.current_session_observation().cursor)
        self.subscription = subscribed.subscription

    def on_event(self, event: SessionObservationEvent) -> None:
        self.rows.append(naive_record(event, pd.Timestamp.now(tz="UTC")))
        self.html.value = pd.DataFrame(self.rows).tail(40).to_html()
        self.redraws += 1


async def run_naive(rate: float, seconds: float) -> dict[str, Any]:
    """The naive monitor fed by the same producer. It cannot keep up, so it is given a backlog
    large enough never to lag and is stopped when the producer's schedule ends; what it had not
    reached by then is reported as its backlog."""
    total = int(round(rate * seconds))
    scenario = await Scenario.create(session_id=SESSION, fake_clock=False, backend="memory", subscriber_backlog=4 * total + 1024)
    naive = NaiveMonitor(scenario.handle)
    producer = Producer(scenario.handle, rate, seconds)
    probe = LatencyProbe(producer)
    clock = time.perf_counter
    costs: list[float] = []

    async def consume(deadline: float) -> None:
        async for event in naive.subscription:  # one event at a time, as a user would
            t0 = clock()
            naive.on_event(event)
            t1 = clock()
            costs.append(t1 - t0)
            probe.delivered(len(costs))
            if t1 >= deadline:
                return

    gc.collect()
    cpu0, wall0 = time.process_time(), clock()
    consumer = asyncio.ensure_future(consume(wall0 + seconds))
    await producer.run()
    await asyncio.wait_for(consumer, timeout=seconds + 30)
    wall, cpu = clock() - wall0, time.process_time() - cpu0
    naive.subscription.close()
    scenario.store.close()

    processed = len(costs)
    assert naive.redraws == processed == len(naive.rows) and producer.produced == total
    assert naive.rows[-1]["position"] == processed and "<table" in naive.html.value
    tenth = max(processed // 10, 1)
    return {
        "target_rate": rate,
        **producer.summary(),
        "processed": processed,
        "behind": producer.produced - processed,
        "wall_s": wall,
        "redraws": naive.redraws,
        "redraws_per_s": naive.redraws / wall,
        "us_per_event": sum(costs) / processed * 1e6,
        "us_per_event_first_tenth": statistics.fmean(costs[:tenth]) * 1e6,
        "us_per_event_last_tenth": statistics.fmean(costs[-tenth:]) * 1e6,
        "cpu_share": sum(costs) / wall,
        "process_cpu_share": cpu / wall,
        "latency_ms": spread(probe.samples, 1e3),
        "latency_samples_of": producer.total // producer.stamp_every,
    }


def print_monitor(label: str, r: dict[str, Any]) -> None:
    rd, ib, lat = r["redraw_ms"], r["ingest_us_per_batch"], r["latency_ms"]
    print(f"  {label}")
    print(
        f"    stream      {r['produced']} events appended in {r['produce_s']:.2f} s (achieved {r['achieved_rate']:.0f}/s, "
        f"{r['bursts']} bursts, largest {r['max_burst']}); {r['delivered']} delivered, {r['lagged']} lagged, "
        f"{r['produced'] - r['delivered']} lost"
    )
    print(
        f"    redraws     {r['redraws']} in {r['wall_s']:.2f} s = {r['redraws_per_s']:.2f}/s "
        f"(limit {r['redraw_limit']:.1f} = 10/s x wall + 1)"
    )
    print(
        f"    throttle    closest two redraws {r['redraw_min_spacing_ms']:.1f} ms apart (interval 100 ms); "
        f"{r['early_redraws']} early"
    )
    print(f"    redraw      median {rd['median']:.2f} ms, p95 {rd['p95']:.2f} ms, max {rd['max']:.2f} ms")
    print(
        f"    ingest      {r['batches']} batches of {r['mean_batch']:.1f} events: median {ib['median']:.0f} µs, "
        f"p95 {ib['p95']:.0f} µs per batch; {r['ingest_us_per_event']:.1f} µs per event (redraws excluded)"
    )
    print(
        f"    CPU share   monitor (ingest + redraw) {r['monitor_cpu_share'] * 100:.1f}% of wall = "
        f"{r['monitor_us_per_event']:.1f} µs per event; whole process {r['process_cpu_share'] * 100:.1f}%"
    )
    print(
        f"    latency     append -> in the history: median {lat['median']:.2f} ms, p95 {lat['p95']:.2f} ms, "
        f"max {lat['max']:.2f} ms ({lat['n']} stamped events)"
    )


def print_naive(r: dict[str, Any]) -> None:
    lat = r["latency_ms"]
    print("  baseline: naive monitor (row dict per event, DataFrame(rows).tail(40).to_html() per event)")
    print(
        f"    stream      {r['produced']} events appended in {r['produce_s']:.2f} s (achieved {r['achieved_rate']:.0f}/s, "
        f"{r['bursts']} bursts, largest {r['max_burst']}: it starves the loop); processed {r['processed']} "
        f"by the deadline, {r['behind']} still unread"
    )
    print(f"    redraws     {r['redraws']} in {r['wall_s']:.2f} s = {r['redraws_per_s']:.1f}/s (one per event)")
    print(
        f"    per event   {r['us_per_event']:.0f} µs mean ({r['us_per_event_first_tenth']:.0f} µs in the first tenth, "
        f"{r['us_per_event_last_tenth']:.0f} µs in the last: O(rows so far)); CPU share {r['cpu_share'] * 100:.1f}% of wall"
    )
    print(
        f"    latency     append -> in its rows: median {lat['median']:.0f} ms, p95 {lat['p95']:.0f} ms, "
        f"max {lat['max']:.0f} ms ({lat['n']} of {r['latency_samples_of']} stamped events reached)"
    )


def part2(args: argparse.Namespace) -> dict[str, Any]:
    rate, seconds = float(args.rate), (3.0 if args.quick else 10.0) if args.seconds is None else args.seconds
    print(
        f"\npart 2: SessionMonitor under a sustained stream ({rate:.0f} events/s for {seconds:g} s per run, "
        f"one asyncio loop, no frontend)"
    )

    async def runs() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for controls in (False, True):
            key = f"monitor_controls_{str(controls).lower()}"
            out[key] = await run_monitor(rate, seconds, controls=controls)
            print_monitor(f"lash_nb SessionMonitor(controls={controls})", out[key])
        out["naive"] = await run_naive(rate, seconds)
        print_naive(out["naive"])
        return out

    result = asyncio.run(runs())
    base = result["naive"]["us_per_event"]
    print("  ratio: monitor cost per event / naive cost per event (lower is better)")
    for controls in (False, True):
        r = result[f"monitor_controls_{str(controls).lower()}"]
        ratio = r["monitor_us_per_event"] / base
        r["ratio_to_naive"] = ratio
        print(
            f"    controls={controls!s:<5}  {r['monitor_us_per_event']:8.1f} µs / {base:8.0f} µs = {ratio:.4f}x"
            f"   ({r['redraws']} vs {result['naive']['redraws']} redraws)"
        )
    result["failures"] = [f for c in (False, True) for f in result[f"monitor_controls_{str(c).lower()}"]["failures"]]
    return result


# --- part 3: the Perspective grid against today's HTML monitor at 5,000 events/s -------------------


def correlation(xs: list[float], ys: list[float]) -> float | None:
    """Pearson's r, or ``None`` when either side is constant or too short."""
    try:
        return statistics.correlation(xs, ys)
    except statistics.StatisticsError:
        return None


def median_or_zero(samples: Sequence[float]) -> float:
    return statistics.median(samples) if samples else 0.0


async def run_view(rate: float, seconds: float, *, grid: str, max_rows: int) -> dict[str, Any]:
    """A ``SessionMonitor(grid=grid, controls=False, max_rows=max_rows)`` fed by the producer.

    Its ``ingest``, ``redraw`` and (grid) ``_push_grid`` are wrapped on the instance (html: the
    module's ``monitor_table_html``) to time them, in wall time and in process CPU time (the CPU
    figures hold up on a busy machine, the wall ones do not); after every redraw the grid's counters (grid) or the UTF-8 sizes of the table and
    header HTML values (html) are read. The producer appends ``rate`` events/s for ``seconds``,
    woken every 10 ms (bursts of rate / 100)."""
    from lash_nb import _render as render_module

    scenario = await Scenario.create(session_id=SESSION, fake_clock=False, backend="memory")
    monitor = SessionMonitor(scenario.handle, clock=scenario.clock, controls=False, grid=grid, max_rows=max_rows)
    assert (monitor.grid is not None) == (grid == "perspective"), "the monitor did not build the view asked for"
    await asyncio.sleep(0.05)
    producer = Producer(scenario.handle, rate, seconds, burst=max(10, int(round(rate / 100))))
    probe = LatencyProbe(producer)
    clock = time.perf_counter
    base_count = monitor.event_count
    cpu_clock = time.process_time  # every thread of the process (Perspective's engine included)
    redraw_times: list[float] = []
    redraw_cpu: list[float] = []
    redraw_starts: list[float] = []
    ingest_times: list[float] = []
    ingest_cpu: list[float] = []
    batch_sizes: list[int] = []
    view_times: list[float] = []  # grid: _push_grid (frame of the new rows, encode, Table.update); html: the table render
    view_cpus: list[float] = []
    header_bytes: list[int] = []
    # one entry per view update: (time, rows in it, bytes, rows held before it, view CPU seconds)
    updates: list[tuple[float, int, int, int, float]] = []
    in_redraw = [0.0, 0.0]  # wall, CPU of every redraw so far (an ingest may run one inline)
    last = {"ingest": 0.0, "redraw": 0.0}
    view_time = [0.0, 0.0]  # wall, CPU of the view work in the current redraw
    stats0: Any = monitor.grid.statistics() if monitor.grid is not None else None
    prev = [stats0]
    original_redraw, original_ingest = monitor.redraw, monitor.ingest
    original_push = monitor._push_grid
    original_table_html = render_module.monitor_table_html

    def push_grid() -> None:
        c0, t0 = cpu_clock(), clock()
        original_push()
        view_time[:] = clock() - t0, cpu_clock() - c0

    def table_html(*args: Any, **kwargs: Any) -> str:
        c0, t0 = cpu_clock(), clock()
        out = original_table_html(*args, **kwargs)
        view_time[:] = clock() - t0, cpu_clock() - c0
        return out

    def redraw() -> None:
        view_time[:] = 0.0, 0.0
        held_before = len(monitor.history) if monitor.grid is None else prev[0].rows_held
        c0, t0 = cpu_clock(), clock()
        original_redraw()
        t1, c1 = clock(), cpu_clock()
        redraw_times.append(t1 - t0)
        redraw_cpu.append(c1 - c0)
        redraw_starts.append(t0)
        in_redraw[0] += t1 - t0
        in_redraw[1] += c1 - c0
        last["redraw"] = t1
        header_bytes.append(len(monitor.header.value.encode()))
        if monitor.grid is not None:
            stats = monitor.grid.statistics()
            before = prev[0]
            new_updates = stats.updates - before.updates
            assert new_updates <= 1, f"{new_updates} grid updates in one redraw"
            if new_updates:
                rows = stats.rows_sent - before.rows_sent
                updates.append((t1, rows, stats.last_update_bytes, held_before, view_time[1]))
            prev[0] = stats
        else:
            assert monitor.table is not None
            size = len(monitor.table.value.encode()) + header_bytes[-1]
            updates.append((t1, min(len(monitor.history), monitor.visible_rows), size, held_before, view_time[1]))
        view_times.append(view_time[0])
        view_cpus.append(view_time[1])

    def ingest(batch: Any) -> None:
        batch = list(batch)
        nested, nested_cpu = in_redraw
        c0, t0 = cpu_clock(), clock()
        original_ingest(batch)
        t1, c1 = clock(), cpu_clock()
        ingest_times.append((t1 - t0) - (in_redraw[0] - nested))
        ingest_cpu.append((c1 - c0) - (in_redraw[1] - nested_cpu))
        batch_sizes.append(len(batch))
        last["ingest"] = t0  # a redraw that ends after this drew the batch (one run inline too)
        probe.delivered(monitor.event_count - base_count)

    monitor.redraw, monitor.ingest = redraw, ingest
    if monitor.grid is not None:
        monitor._push_grid = push_grid
    else:
        render_module.monitor_table_html = table_html
    try:
        gc.collect()
        cpu0, wall0 = time.process_time(), clock()
        await producer.run()
        await wait_until(lambda: monitor.event_count - base_count >= producer.produced, 10.0, "delivery")
        await wait_until(lambda: not monitor.redraw_pending, 5.0, "the trailing redraw")
        wall, cpu = clock() - wall0, time.process_time() - cpu0
    finally:
        render_module.monitor_table_html = original_table_html
        monitor.redraw, monitor.ingest = original_redraw, original_ingest
        if monitor.grid is not None:
            del monitor._push_grid

    appended = producer.produced
    delivered = monitor.event_count - base_count
    history = monitor.history
    rolled_over = history.dropped_rows
    rows = history.rows()
    positions = [r[0] for r in rows]
    newest = scenario.store.statistics(SESSION).newest_position
    # checks that make the figures mean something, whatever the view (a failure stops the script)
    assert appended == producer.total, (appended, producer.total)
    assert sum(batch_sizes) == delivered and monitor.gaps == 0, (sum(batch_sizes), delivered, monitor.gaps)
    assert history.total_rows == delivered == len(rows) + rolled_over
    assert positions == list(range(positions[0], positions[0] + len(positions))), "rows out of order"
    assert positions[-1] == newest, (positions[-1], newest)
    assert last["redraw"] >= last["ingest"], "the last batch was never drawn"
    assert f"{delivered} events" in monitor.header.value
    lost = appended - delivered  # never reached the monitor's history (lagged ones among them)
    label = f'SessionMonitor(grid="{grid}")'
    failures: list[str] = []
    result: dict[str, Any] = {"grid": grid}
    if monitor.grid is not None:
        stats = monitor.grid.statistics()
        sent = stats.rows_sent - stats0.rows_sent
        assert stats.rows_queued == 0 and stats.dropped_pending == 0, stats
        assert stats.updates - stats0.updates == len(updates), (stats.updates, len(updates))
        assert sum(u[1] for u in updates) == sent and sum(u[2] for u in updates) == stats.bytes_sent - stats0.bytes_sent
        # the table must hold every delivered row: the newest, seq 1.., positions in order
        held = monitor.grid.frame()
        assert len(held) == stats.rows_held == min(delivered, stats.limit), (len(held), stats.rows_held)
        assert list(held["position"].astype("int64")) == positions[-len(held):], "grid rows differ from the history"
        lost_to_grid = appended - sent  # the grid's own count: appended, never handed to its table
        if lost or lost_to_grid or monitor.lagged:
            failures.append(
                f"{label}: {lost} events lost before the history, {lost_to_grid} never reached the grid, "
                f"{monitor.lagged} lagged (all must be 0)"
            )
        result.update(
            rows_sent=sent,
            rows_held=stats.rows_held,
            grid_limit=stats.limit,
            lost_to_grid=lost_to_grid,
            updates=stats.updates - stats0.updates,
            bytes_sent=stats.bytes_sent - stats0.bytes_sent,
        )
    else:
        assert monitor.table is not None and "<table" in monitor.table.value
        result.update(updates=len(updates), bytes_sent=sum(u[2] for u in updates), lost_to_grid=None)
        if lost or monitor.lagged:
            failures.append(f"{label}: {lost} events lost, {monitor.lagged} lagged")
    hz = monitor.max_redraw_hz
    limit = hz * wall + 1
    n_updates = result["updates"]
    if len(redraw_times) > limit:
        failures.append(f"{label}: {len(redraw_times)} redraws in {wall:.2f} s, over {hz:g}/s x wall + 1 = {limit:.1f}")
    if n_updates > limit:
        failures.append(f"{label}: {n_updates} view updates in {wall:.2f} s, over {hz:g}/s x wall + 1 = {limit:.1f}")
    spacing = [b - a for a, b in zip(redraw_starts, redraw_starts[1:])]
    early = [g for g in spacing if g < 1 / hz - 0.001]
    if early:
        failures.append(f"{label}: {len(early)} redraw(s) closer than 1/{hz:g} s: throttle broken")

    # bytes against the batch and the history
    sizes = [float(u[2]) for u in updates]
    counts = [float(u[1]) for u in updates]
    per_row = [u[2] / u[1] for u in updates if u[1]]
    held_before = [float(u[3]) for u in updates if u[1]]
    first = [u for u in updates if u[0] < producer.started + 1.0]
    final = [u for u in updates if u[0] > producer.finished - 1.0]
    first_bytes, last_bytes = median_or_zero([u[2] for u in first]), median_or_zero([u[2] for u in final])
    first_rows, last_rows = median_or_zero([u[1] for u in first]), median_or_zero([u[1] for u in final])
    bytes_ratio = last_bytes / first_bytes if first_bytes else None
    batch_ratio = last_rows / first_rows if first_rows else None
    # five equal bands of the history held before each update (0 .. max_rows)
    bands = []
    edges = [max_rows * i / 5 for i in range(6)]
    for lo, hi in zip(edges, edges[1:]):
        band = [u for u in updates if lo <= u[3] < hi or (hi == edges[-1] and u[3] >= hi)]
        bands.append(
            {
                "held_from": int(lo),
                "held_to": int(hi),
                "updates": len(band),
                "rows_per_update": median_or_zero([u[1] for u in band]),
                "bytes_per_update": median_or_zero([u[2] for u in band]),
                "bytes_per_row": median_or_zero([u[2] / u[1] for u in band if u[1]]),
                "view_cpu_ms": median_or_zero([u[4] for u in band]) * 1e3,
                "view_cpu_us_per_row": median_or_zero([u[4] / u[1] for u in band if u[1]]) * 1e6,
            }
        )
    if grid == "perspective" and bytes_ratio is not None and batch_ratio is not None:
        # bytes per row may grow a little as numbers get longer (position, seq, cursor): 10% slack
        if bytes_ratio > batch_ratio * 1.10:
            failures.append(
                f"{label}: per-update bytes grew {bytes_ratio:.2f}x from the first second to the last, "
                f"the batch only {batch_ratio:.2f}x: the update is not proportional to the batch"
            )
    monitor.close()
    scenario.store.close()

    busy = sum(ingest_times) + sum(redraw_times)
    busy_cpu = sum(ingest_cpu) + sum(redraw_cpu)
    result.update(
        target_rate=rate,
        **producer.summary(),
        delivered=delivered,
        lagged=monitor.lagged,
        lost=lost,
        rolled_over=rolled_over,
        max_rows=max_rows,
        wall_s=wall,
        redraws=len(redraw_times),
        redraws_per_s=len(redraw_times) / wall,
        updates_per_s=n_updates / wall,
        update_limit=limit,
        early_redraws=len(early),
        redraw_ms=spread(redraw_times, 1e3),
        redraw_cpu_ms=spread(redraw_cpu, 1e3),
        view_ms=spread(view_times, 1e3),
        view_cpu_ms=spread(view_cpus, 1e3),
        view_cpu_ms_first_second=median_or_zero([u[4] for u in first]) * 1e3,
        view_cpu_ms_last_second=median_or_zero([u[4] for u in final]) * 1e3,
        view_cpu_us_per_row_first_second=median_or_zero([u[4] / u[1] for u in first if u[1]]) * 1e6,
        view_cpu_us_per_row_last_second=median_or_zero([u[4] / u[1] for u in final if u[1]]) * 1e6,
        view_cpu_us_per_event=sum(view_cpus) / delivered * 1e6,
        batches=len(batch_sizes),
        mean_batch=delivered / len(batch_sizes),
        rows_per_update=spread(counts, 1.0),
        bytes_per_update_mean=result["bytes_sent"] / n_updates if n_updates else 0.0,
        bytes_per_update=spread(sizes, 1.0),
        bytes_per_row=spread(per_row, 1.0),
        bytes_per_event=result["bytes_sent"] / delivered,
        header_bytes_per_redraw=median_or_zero(header_bytes),
        r_bytes_rows=correlation(sizes, counts),
        r_bytes_per_row_history=correlation(per_row, held_before),
        first_second={"updates": len(first), "bytes": first_bytes, "rows": first_rows},
        last_second={"updates": len(final), "bytes": last_bytes, "rows": last_rows},
        bytes_growth=bytes_ratio,
        batch_growth=batch_ratio,
        history_bands=bands,
        ingest_us_per_event=sum(ingest_times) / delivered * 1e6,
        ingest_cpu_us_per_event=sum(ingest_cpu) / delivered * 1e6,
        monitor_us_per_event=busy / delivered * 1e6,
        monitor_cpu_us_per_event=busy_cpu / delivered * 1e6,
        monitor_share=busy / wall,
        monitor_cpu_share=busy_cpu / wall,
        cpu_s=cpu,
        cpu_us_per_event=cpu / delivered * 1e6,
        process_cpu_share=cpu / wall,
        latency_ms=spread(probe.samples, 1e3),
        failures=failures,
    )
    return result


def print_view(r: dict[str, Any]) -> None:
    rd, vw, lat, bu, br = r["redraw_ms"], r["view_ms"], r["latency_ms"], r["bytes_per_update"], r["bytes_per_row"]
    grid = r["grid"] == "perspective"
    print(f'  SessionMonitor(grid="{r["grid"]}", controls=False, max_rows={r["max_rows"]})')
    print(
        f"    stream      {r['produced']} appended in {r['produce_s']:.2f} s (achieved {r['achieved_rate']:.0f}/s of "
        f"{r['target_rate']:.0f}/s, {r['bursts']} bursts, largest {r['max_burst']}); {r['delivered']} delivered to the "
        f"history, {r['lagged']} lagged, {r['lost']} lost, {r['rolled_over']} rolled over"
    )
    if grid:
        print(
            f"    grid        {r['rows_sent']} rows handed to the table, {r['rows_held']} held (limit {r['grid_limit']}); "
            f"{r['lost_to_grid']} appended but never in the grid"
        )
    what = "grid updates" if grid else "table redraws"
    print(
        f"    updates     {r['redraws']} redraws, {r['updates']} {what} in {r['wall_s']:.2f} s = {r['updates_per_s']:.2f}/s "
        f"(limit {r['update_limit']:.1f} = 10/s x wall + 1); rows per update median {r['rows_per_update']['median']:.0f}, "
        f"max {r['rows_per_update']['max']:.0f}"
    )
    if grid:
        print(
            f"    bytes       {r['bytes_per_update_mean'] / 1e3:.1f} kB per update (bytes_sent / updates); median "
            f"{bu['median'] / 1e3:.1f} kB, p95 {bu['p95'] / 1e3:.1f} kB; {br['median']:.0f} B per row (p95 {br['p95']:.0f}); "
            f"{r['bytes_per_event']:.0f} B per event; the header HTML set per redraw besides: "
            f"{r['header_bytes_per_redraw'] / 1e3:.1f} kB"
        )
    else:
        print(
            f"    bytes       {r['bytes_per_update_mean'] / 1e3:.1f} kB per redraw (table + header HTML, UTF-8); median "
            f"{bu['median'] / 1e3:.1f} kB, p95 {bu['p95'] / 1e3:.1f} kB, of which header {r['header_bytes_per_redraw'] / 1e3:.1f} kB; "
            f"{r['bytes_per_event']:.0f} B per event"
        )
    fs, ls = r["first_second"], r["last_second"]
    growth = "n/a" if r["bytes_growth"] is None else f"{r['bytes_growth']:.2f}x"
    batch = "n/a" if r["batch_growth"] is None else f"{r['batch_growth']:.2f}x"
    print(
        f"    vs history  first second: median {fs['bytes'] / 1e3:.1f} kB for {fs['rows']:.0f} rows ({fs['updates']} updates); "
        f"last second: {ls['bytes'] / 1e3:.1f} kB for {ls['rows']:.0f} rows ({ls['updates']}); bytes {growth}, batch {batch}"
    )
    r1 = "n/a" if r["r_bytes_rows"] is None else f"{r['r_bytes_rows']:+.3f}"
    r2 = "n/a" if r["r_bytes_per_row_history"] is None else f"{r['r_bytes_per_row_history']:+.3f}"
    print(f"    correlation r(bytes, rows in update) {r1}; r(bytes per row, rows held before) {r2}")
    print("    by history  rows held   updates  rows/upd  kB/upd   B/row  view CPU ms  µs/row (medians)")
    for b in r["history_bands"]:
        if b["updates"]:
            print(
                f"                {b['held_from']:>6}-{b['held_to']:<6} {b['updates']:>5} {b['rows_per_update']:>9.0f} "
                f"{b['bytes_per_update'] / 1e3:>7.1f} {b['bytes_per_row']:>7.0f} {b['view_cpu_ms']:>11.2f} {b['view_cpu_us_per_row']:>7.1f}"
            )
    view = "_push_grid (new rows to a frame, encode, Table.update)" if grid else "the table HTML render"
    rc, vc = r["redraw_cpu_ms"], r["view_cpu_ms"]
    print(
        f"    redraw      CPU median {rc['median']:.2f} ms, p95 {rc['p95']:.2f} ms (wall median {rd['median']:.2f} ms, "
        f"p95 {rd['p95']:.2f} ms, max {rd['max']:.2f} ms)"
    )
    print(
        f"    view        {view}: CPU median {vc['median']:.2f} ms, p95 {vc['p95']:.2f} ms (wall median "
        f"{vw['median']:.2f} ms); first second {r['view_cpu_ms_first_second']:.2f} ms = "
        f"{r['view_cpu_us_per_row_first_second']:.1f} µs per row, last second {r['view_cpu_ms_last_second']:.2f} ms = "
        f"{r['view_cpu_us_per_row_last_second']:.1f} µs per row; {r['view_cpu_us_per_event']:.1f} µs CPU per event"
    )
    print(
        f"    CPU         process {r['cpu_s']:.2f} s = {r['process_cpu_share'] * 100:.1f}% of wall = {r['cpu_us_per_event']:.1f} µs "
        f"per event (producer and store included); monitor (ingest + redraw) {r['monitor_cpu_us_per_event']:.1f} µs CPU per "
        f"event ({r['ingest_cpu_us_per_event']:.1f} ingest; wall {r['monitor_us_per_event']:.1f})"
    )
    print(
        f"    latency     append -> in the history: median {lat['median']:.2f} ms, p95 {lat['p95']:.2f} ms, "
        f"max {lat['max']:.2f} ms"
    )


GRID_NOTES = (
    "no browser is attached: the grid's bytes are the update payloads handed to the Perspective table",
    "in the kernel (the JSON document of each Table.update); with a browser, Perspective then sends it a",
    "small 'updated' notification and the browser pulls only its visible viewport, which is not measured",
    "here. The HTML figure is the table + header HTML values set per redraw, i.e. what would cross the comm.",
)


def part3(args: argparse.Namespace) -> dict[str, Any]:
    rate = float(args.grid_rate)
    seconds = (3.0 if args.quick else 10.0) if args.seconds is None else args.seconds
    total = int(round(rate * seconds))
    max_rows = max(total, 1)  # every event stays in the history and the grid: no rollover
    print(
        f"\npart 3: live Perspective grid vs today's HTML monitor ({rate:.0f} events/s for {seconds:g} s per run, "
        f"max_rows {max_rows}, one asyncio loop, no frontend)"
    )
    for line in GRID_NOTES:
        print(f"  note: {line}")

    async def runs() -> dict[str, Any]:
        out: dict[str, Any] = {}
        # a short untimed run of each first, so neither pays first-use costs (imports, server)
        for grid in ("perspective", "html"):
            await run_view(rate, 0.3, grid=grid, max_rows=max(int(rate * 0.3), 1))
        for grid in ("perspective", "html"):
            out[grid] = await run_view(rate, seconds, grid=grid, max_rows=max_rows)
            print_view(out[grid])
        return out

    result = asyncio.run(runs())
    g, h = result["perspective"], result["html"]

    def ratio(a: float, b: float) -> float | None:
        return a / b if b else None

    ratios = {
        "cpu_us_per_event": ratio(g["cpu_us_per_event"], h["cpu_us_per_event"]),
        "monitor_cpu_us_per_event": ratio(g["monitor_cpu_us_per_event"], h["monitor_cpu_us_per_event"]),
        "view_cpu_us_per_event": ratio(g["view_cpu_us_per_event"], h["view_cpu_us_per_event"]),
        "bytes_per_update": ratio(g["bytes_per_update_mean"], h["bytes_per_update_mean"]),
        "bytes_per_event": ratio(g["bytes_per_event"], h["bytes_per_event"]),
    }
    result["ratios"] = ratios
    result["notes"] = " ".join(GRID_NOTES)

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}x"

    print("  summary                              grid    html   grid/html")
    print(f"    achieved rate (events/s)        {g['achieved_rate']:7.0f} {h['achieved_rate']:7.0f}")
    print(f"    events lost                     {g['lost']:7d} {h['lost']:7d}")
    print(f"    updates per second              {g['updates_per_s']:7.2f} {h['updates_per_s']:7.2f}")
    print(
        f"    kB per update                   {g['bytes_per_update_mean'] / 1e3:7.1f} {h['bytes_per_update_mean'] / 1e3:7.1f}"
        f"   {fmt(ratios['bytes_per_update'])}"
    )
    print(f"    bytes per event                 {g['bytes_per_event']:7.0f} {h['bytes_per_event']:7.0f}   {fmt(ratios['bytes_per_event'])}")
    print(
        f"    process CPU per event (µs)      {g['cpu_us_per_event']:7.1f} {h['cpu_us_per_event']:7.1f}   {fmt(ratios['cpu_us_per_event'])}"
    )
    print(
        f"    monitor CPU per event (µs)      {g['monitor_cpu_us_per_event']:7.1f} {h['monitor_cpu_us_per_event']:7.1f}"
        f"   {fmt(ratios['monitor_cpu_us_per_event'])}"
    )
    print(
        f"    view CPU per event (µs)         {g['view_cpu_us_per_event']:7.1f} {h['view_cpu_us_per_event']:7.1f}"
        f"   {fmt(ratios['view_cpu_us_per_event'])}"
    )
    if g["achieved_rate"] < 0.98 * rate or h["achieved_rate"] < 0.98 * rate:
        print(
            f"  note: the producer did not hold {rate:.0f} events/s on this machine (achieved rates above: from the "
            "first append to the last; it shares the loop with the monitor, so a long redraw, a GC pause or another "
            "process delays its bursts, and a late last burst lowers the rate)"
        )
    result["failures"] = g["failures"] + h["failures"]
    return result


#: name -> measurement; each prints its rows and returns a JSON-able dict.
PARTS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "part1_frames": part1,
    "part2_monitor": part2,
    "part3_grid": part3,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="one repetition, shorter concat row, 3 s monitor runs"
    )
    parser.add_argument("--events", type=int, default=100_000, help="events to convert (default 100k)")
    parser.add_argument("--rate", type=float, default=1000.0, help="part 2: events/s appended (default 1000)")
    parser.add_argument(
        "--grid-rate", type=float, default=5000.0, help="part 3: events/s appended (default 5000)"
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="parts 2 and 3: seconds per monitor run (default 10, --quick 3)"
    )
    parser.add_argument(
        "--part", action="append", choices=sorted(PARTS), help="run only this part (repeatable; default all)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write every sample as JSON")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.grid_rate <= 0 or (args.seconds is not None and args.seconds <= 0):
        parser.error("--rate, --grid-rate and --seconds must be positive")
    args.concat_events = 20_000 if args.quick else 50_000
    print(
        f"python {platform.python_version()}, pandas {pd.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    results = {name: part(args) for name, part in PARTS.items() if not args.part or name in args.part}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=str)
    failures = [f for r in results.values() for f in r.get("failures", ())]
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
