#!/usr/bin/env python3
"""Benchmark loading observation logs: ``lash_nb.forensics.load_log`` against
``pyarrow.json.read_json`` and ``pandas.read_json(lines=True)`` on the same file, in the same run.

Run from the repository root::

    python benchmarks/forensics.py              # 1,000,000 events (a ~370 MB log), 3 runs each
    python benchmarks/forensics.py --quick      # 100,000 events, 3 runs each: a smoke run
    python benchmarks/forensics.py --path /tmp/my.jsonl --events 500000 --repeats 5
    python benchmarks/forensics.py --exact      # also the exact (reference) reader: slow
    python benchmarks/forensics.py --json out.json

The log is generated once and cached (``--path``; default ``/tmp/lash-forensics-bench-{N}.jsonl``):
a realistic mix recorded as a ``Recorder`` writes it (every line with ``received_at``): per turn a
``queue_changed``, a ``queued_work_started``, then three model iterations of a
``model_request_started``, 10 reasoning deltas, 60 prose deltas, a tool call (started and
completed, in two iterations of three) and a ``usage``; a ``committed`` at its end; now and then an
``error``, an ``agent_frame_switched``, a ``process_changed``. About 1.8 % of the lines (the tool
calls) are kinds whose summaries need their JSON values decoded by lash_core.

Each contender runs in a fresh subprocess per repetition (so one's memory cannot hide in
another's heap), after a warm-up call on the log's first 50 lines (imports and first-call setup
are not measured), the cyclic GC left as the library leaves it. Measured there: wall time of the
call, CPU time (user + system, every thread: pyarrow parses on all cores), and peak memory as the
growth of the resident set (``ru_maxrss`` minus the RSS just before the call; this sees pyarrow's
allocations, which ``tracemalloc`` does not). For ``load_log`` one more run measures the peak of
Python allocations (``tracemalloc``) and of pyarrow's memory pool (``max_memory``) during the load,
and what the result keeps (``LoadedLog.frame`` deep size, the raw lines). Printed: median and best
wall time, CPU, peak RSS growth and its ratio to the file size, and each contender's time over
pyarrow's (the goal: ``load_log`` within 2x of pyarrow's time, its peak under 3x the file's
size). Then ``benchmarks/frames.py``'s ``to_frame`` figures (100,000 events), when that file exists.

Figures on a shared machine are noisy: compare the ratios of one run, not absolute numbers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import io
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

#: bump when the generated mix changes, so a cached log of the old mix is not reused
GENERATOR_VERSION = 1
CONTENDERS = ("load_log", "pyarrow", "pandas")
WORDS = (
    "the of and to in is that it for you was with on as have be at one this by from hot cold data "
    "frame log cursor replay event stream session turn tool call value résumé naïve 数据 ✓"
).split()


# --- the log ------------------------------------------------------------------------------------------


def generate(path: str, count: int, seed: int = 7) -> None:
    """Write a log of ``count`` events (the mix in the module docstring) to ``path`` (atomically)."""
    from lash_core import (
        AgentFrameSwitched,
        AssistantProseDelta,
        Committed,
        ModelRequestStarted,
        ProcessChanged,
        QueueChanged,
        QueuedWorkStarted,
        ReasoningDelta,
        SessionCursor,
        SessionObservationEvent,
        SessionRevision,
        TokenUsage,
        ToolCallCompleted,
        ToolCallStarted,
        TurnActivity,
        TurnActivityPayload,
        TurnError,
        Usage,
    )
    from lash_nb.forensics import encode_line

    rnd = random.Random(seed)
    session = "chat-1"
    position = revision = 0
    start = dt.datetime(2025, 6, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    clock = 0.0
    temp = f"{path}.{os.getpid()}.tmp"

    def new_id() -> str:
        return str(uuid.UUID(int=rnd.getrandbits(128), version=4))

    def words(low: int, high: int) -> str:
        return " ".join(rnd.choices(WORDS, k=rnd.randint(low, high)))

    with open(temp, "wb") as f:

        def put(payload: Any) -> None:
            nonlocal position, clock
            position += 1
            clock += rnd.random() * 0.02
            cursor = SessionCursor.new(session, revision, position)
            item = SessionObservationEvent(session, SessionRevision(revision), cursor, payload)
            f.write(encode_line(item, received_at=start + dt.timedelta(seconds=clock)))

        def act(event: Any, correlation: str | None = None) -> TurnActivityPayload:
            return TurnActivityPayload(TurnActivity(new_id(), correlation or new_id(), event))

        total = TokenUsage()
        while position < count:
            batch = f"qwb-{rnd.getrandbits(128):032x}"
            put(QueueChanged("enqueued", (batch,)))
            put(act(QueuedWorkStarted("idle", (batch,))))
            for iteration in range(1, 4):
                put(act(ModelRequestStarted(iteration)))
                correlation = new_id()
                for _ in range(10):
                    put(act(ReasoningDelta(words(2, 8)), correlation))
                correlation = new_id()
                for _ in range(60):
                    put(act(AssistantProseDelta(words(2, 8)), correlation))
                if iteration < 3:
                    correlation = new_id()
                    args = {"query": words(3, 5), "limit": rnd.randint(1, 50)}
                    put(act(ToolCallStarted(f"call-{position}", "search", args), correlation))
                    output = {"hits": [rnd.choice(WORDS) for _ in range(5)]}
                    put(act(ToolCallCompleted(f"call-{position}", "search", args, output, rnd.randint(1, 900)), correlation))
                usage = TokenUsage(rnd.randint(100, 3000), rnd.randint(10, 800))
                total = total + usage
                put(act(Usage(iteration, usage, total)))
            if rnd.random() < 0.05:
                put(act(TurnError("rate limited: " + words(3, 6))))
            if rnd.random() < 0.1:
                put(AgentFrameSwitched(f"frame-{rnd.randint(1, 9)}"))
            if rnd.random() < 0.1:
                put(ProcessChanged("started", (f"proc-{rnd.randint(1, 99)}",)))
            revision += 1
            put(Committed(None))
    os.replace(temp, path)


def ensure_log(path: str, count: int) -> None:
    marker = f"{path}.v{GENERATOR_VERSION}.{count}"
    if os.path.exists(path) and os.path.exists(marker):
        return
    print(f"generating {count:,} events into {path} (once; about a minute per million) ...", flush=True)
    started = time.perf_counter()
    generate(path, count)
    with open(marker, "w") as f:
        f.write("ok\n")
    print(f"  {os.path.getsize(path) / 2**20:.0f} MB in {time.perf_counter() - started:.0f} s", flush=True)


# --- one measurement, in a child process -------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(contender: str, path: str, trace: bool) -> dict[str, Any]:
    """Run one contender once on ``path``; the figures as a dict (printed as JSON by ``main``)."""
    import resource

    import pandas as pd
    import pyarrow as pa
    import pyarrow.json as pj

    from lash_nb.forensics import load_log

    calls = {
        "load_log": lambda: load_log(path, progress=False),
        "exact": lambda: load_log(path, progress=False, exact=True),
        "pyarrow": lambda: pj.read_json(path),
        "pandas": lambda: pd.read_json(path, lines=True),
    }
    call = calls[contender]
    # warm up on the log's first lines: imports and first-call setup are not what is measured
    with open(path, "rb") as f:
        head = b"".join(f.readline() for _ in range(50))
    warm = {
        "load_log": lambda: load_log(head, progress=False),
        "exact": lambda: load_log(head, progress=False, exact=True),
        "pyarrow": lambda: pj.read_json(pa.BufferReader(head)),
        "pandas": lambda: pd.read_json(io.BytesIO(head), lines=True),
    }
    warm[contender]()
    pool = pa.default_memory_pool()
    if trace:
        import tracemalloc

        tracemalloc.start()
    rss_before = _rss_mb()
    cpu, started = _cpu(), time.perf_counter()
    result = call()
    wall, cpu = time.perf_counter() - started, _cpu() - cpu
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out: dict[str, Any] = {
        "contender": contender,
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_before_mb": rss_before,
        "rss_peak_mb": peak_rss,
        "rss_growth_mb": peak_rss - rss_before,
        "rss_after_mb": _rss_mb(),
        "arrow_pool_peak_mb": pool.max_memory() / 2**20,
        "arrow_held_mb": pa.total_allocated_bytes() / 2**20,
        "rows": len(result.frame) if hasattr(result, "frame") else len(result),
    }
    if trace:
        import tracemalloc

        out["python_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    if hasattr(result, "frame"):
        out["frame_deep_mb"] = result.frame.memory_usage(deep=True).sum() / 2**20
        out["errors"] = len(result.errors)
    return out


def measure(contender: str, path: str, *, trace: bool = False, timeout: float = 3600) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", contender, "--path", path] + (["--trace"] if trace else []),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{contender} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the report ----------------------------------------------------------------------------------------


def run_all(path: str, count: int, repeats: int, contenders: list[str]) -> dict[str, Any]:
    ensure_log(path, count)
    size_mb = os.path.getsize(path) / 2**20
    print(f"\nlog: {path}: {count:,} events, {size_mb:.0f} MB; {repeats} run(s) per contender, each in a fresh process", flush=True)
    results: dict[str, Any] = {"path": path, "events": count, "file_mb": size_mb, "repeats": repeats, "runs": {}}
    for contender in contenders:
        runs = []
        for _ in range(repeats):
            runs.append(measure(contender, path))
            print(f"  {contender:9s} {runs[-1]['wall_s']:7.2f} s", flush=True)
        results["runs"][contender] = runs
    if "load_log" in contenders:
        results["traced"] = measure("load_log", path, trace=True)
    base = results["runs"].get("pyarrow")
    base_wall = statistics.median(r["wall_s"] for r in base) if base else None
    base_cpu = statistics.median(r["cpu_s"] for r in base) if base else None
    print(f"\n{'contender':10s} {'rows':>10s} {'median s':>9s} {'best s':>7s} {'cpu s':>7s} "
          f"{'peak MB':>8s} {'peak/file':>9s} {'time/pyarrow':>12s} {'cpu/pyarrow':>11s}")
    summary: dict[str, Any] = {}
    for contender, runs in results["runs"].items():
        wall = statistics.median(r["wall_s"] for r in runs)
        best = min(r["wall_s"] for r in runs)
        cpu = statistics.median(r["cpu_s"] for r in runs)
        peak = max(r["rss_growth_mb"] for r in runs)
        ratio = wall / base_wall if base_wall else float("nan")
        cpu_ratio = cpu / base_cpu if base_cpu else float("nan")
        summary[contender] = {"median_s": wall, "best_s": best, "cpu_s": cpu, "peak_mb": peak,
                              "peak_over_file": peak / size_mb, "time_over_pyarrow": ratio, "cpu_over_pyarrow": cpu_ratio}
        print(f"{contender:10s} {runs[0]['rows']:>10,} {wall:9.2f} {best:7.2f} {cpu:7.2f} {peak:8.0f} "
              f"{peak / size_mb:9.2f} {ratio:12.2f} {cpu_ratio:11.2f}")
    results["summary"] = summary
    traced = results.get("traced")
    if traced:
        print(f"\nload_log, traced run (tracemalloc slows it and adds its own memory): peak of Python "
              f"allocations {traced['python_peak_mb']:.0f} MB (the bytes read, kept for LoadedLog.events, "
              f"included), pyarrow pool peak {traced['arrow_pool_peak_mb']:.0f} MB, held by pyarrow after "
              f"{traced['arrow_held_mb']:.0f} MB; frame.memory_usage(deep=True) {traced['frame_deep_mb']:.0f} MB "
              f"(counts a shared string once per row); {traced['errors']} error rows")
    if "load_log" in summary and "pyarrow" in summary:
        ours = summary["load_log"]
        print(f"\ngoal, time within 2x of pyarrow's: {ours['time_over_pyarrow']:.2f}x "
              f"({'met' if ours['time_over_pyarrow'] <= 2 else 'NOT met'}); "
              f"peak under 3x the file: {ours['peak_over_file']:.2f}x ({'met' if ours['peak_over_file'] < 3 else 'NOT met'})")
    return results


def frames_figures() -> dict[str, Any] | None:
    """``benchmarks/frames.py``'s ``run()`` (``to_frame`` on 100,000 events), when it exists."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "frames.py")
    if not os.path.exists(path):
        print("\n(benchmarks/frames.py not found: no to_frame figures)")
        return None
    spec = importlib.util.spec_from_file_location("lash_benchmarks_frames", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    print("\nto_frame on 100,000 events (benchmarks/frames.py):", flush=True)
    figures: dict[str, Any] = module.run(events_count=100_000, repeats=5)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 events (a smoke run)")
    parser.add_argument("--events", type=int, default=None, help="events in the generated log (default 1,000,000)")
    parser.add_argument("--path", default=None, help="the log to generate once and reuse")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--exact", action="store_true", help="also time the exact (reference) reader")
    parser.add_argument("--no-frames", action="store_true", help="skip benchmarks/frames.py")
    parser.add_argument("--json", default=None, help="write every figure to this file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.path, args.trace)))
        return 0
    count = args.events or (100_000 if args.quick else 1_000_000)
    path = args.path or f"/tmp/lash-forensics-bench-{count}.jsonl"
    contenders = list(CONTENDERS) + (["exact"] if args.exact else [])
    results = run_all(path, count, args.repeats, contenders)
    if not args.no_frames:
        results["to_frame"] = frames_figures()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
