#!/usr/bin/env python3
"""Each durable backend beside its raw client doing the same writes and reads, in one run.

Run from the repository root (the test venv has redis-py and psycopg)::

    .venv-test/bin/python benchmarks/backends.py             # full run, about 2 min on 2 cores
    .venv-test/bin/python benchmarks/backends.py --quick     # fewer operations: ~30 s
    .venv-test/bin/python benchmarks/backends.py --only redis --json out.json
    .venv-test/bin/python benchmarks/backends.py --redis-url redis://... --postgres-dsn postgresql://...

Without ``--redis-url`` / ``--postgres-dsn`` it starts throwaway local servers on free loopback ports
(``lash_core.servers``: Debian's ``redis-server`` and PostgreSQL, see ``scripts/servers-setup``).
A backend whose server cannot start is reported and skipped.

Rows (every store row is timed interleaved with its baseline, in rounds, median of the rounds; the
ratio is store time / raw time for the same work: lower is better, 1.00 means no overhead):

* ``sqlite replay append``: ``SqliteLiveReplayStore.append`` (one ``BEGIN IMMEDIATE`` transaction per
  event: tail, event row, retention) against raw ``sqlite3`` on the same kind of file (WAL,
  ``synchronous=NORMAL``): one transaction per event inserting the same wire JSON text, which the
  raw side gets precomputed.
* ``sqlite replay after cursor``: ``replay_after_cursor`` for the last 100 events of a session of
  1k / 10k / 100k events (store reopened, so nothing comes from its object cache) against a raw
  ``SELECT ... WHERE position > ? ORDER BY position`` plus ``json.loads`` of each row. The store's
  time must not grow with the session's length (the "vs 1k" column).
* ``sqlite queue enqueue``: ``SqliteQueueStore.enqueue_queued_work`` (one transaction) against a raw
  insert of the same batch JSON, one transaction each, into a session that holds 0..N batches.
* ``redis append``: ``RedisLiveReplayStore.append`` against redis-py ``XADD`` of the same wire JSON,
  plain (one round trip each, the same as the store) and pipelined (100 per round trip: what no
  append-per-commit store can do; shown for scale).
* ``redis replay after cursor``: the last 100 events of a stream of 1k / 10k / 100k against one
  ``XRANGE`` of the same entries plus ``json.loads``.
* ``postgres enqueue``: ``PostgresQueueStore.enqueue_queued_work`` against psycopg (async, one pooled
  connection) inserting the same batch JSON in its own transaction.
* ``postgres claim``: ``claim_ready_queued_work`` of one batch each against a raw
  ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING`` per claim.

The script checks what it measured (counts, positions, batches claimed in order) and exits 1 on
a mismatch. Figures on a shared machine are noisy: compare ratios from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any, Awaitable, Callable

try:
    import lash_core  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lash_core import (
    AssistantProseDelta,
    DeliveryPolicy,
    InMemoryLiveReplayStoreConfig,
    QueuedWorkBatchDraft,
    QueuedWorkClaimBoundary,
    SlotPolicy,
    TurnActivity,
    TurnActivityPayload,
    TurnInput,
)
from lash_core import SessionCursor, SessionObservationEvent, SessionRevision
from lash_core._wire import DEFAULT_PROTOCOL_VERSION, event_from_dict, event_to_dict
from lash_core.servers import LocalPostgresServer, LocalRedisServer, ServerUnavailable
from lash_core.stores.sqlite import SqliteLiveReplayStore, SqliteQueueStore

FAILURES: list[str] = []
ROWS: list[dict[str, Any]] = []


def check(condition: bool, message: str) -> None:
    if not condition:
        FAILURES.append(message)
        print(f"  CHECK FAILED: {message}")


def payload() -> TurnActivityPayload:
    return TurnActivityPayload(TurnActivity.independent(AssistantProseDelta("token ")))


def wire_json(event: Any) -> str:
    return json.dumps(
        event_to_dict(event, DEFAULT_PROTOCOL_VERSION, None),
        ensure_ascii=False, separators=(",", ":"),
    )  # fmt: skip


def draft(session_id: str, index: int) -> QueuedWorkBatchDraft:
    return QueuedWorkBatchDraft(
        session_id,
        DeliveryPolicy.EARLIEST_SAFE_BOUNDARY,
        SlotPolicy.JOIN,
        [TurnInput.text(f"message {index}")],
        source_key=f"key-{index}",
    )


def report(name: str, store_s: list[float], raw_s: list[float], ops: int, note: str = "") -> None:
    store, raw = statistics.median(store_s), statistics.median(raw_s)
    ratio = store / raw if raw > 0 else float("inf")
    ROWS.append({"row": name, "ops": ops, "store_s": store, "raw_s": raw, "ratio": ratio,
                 "store_samples": store_s, "raw_samples": raw_s, "note": note})  # fmt: skip
    print(
        f"  {name:<44} store {store / ops * 1e6:9.1f} µs/op   raw {raw / ops * 1e6:9.1f} µs/op"
        f"   ratio {ratio:5.2f}x  {note}"
    )


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


async def atimed(fn: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


# --- SQLite -----------------------------------------------------------------------------------------


def raw_sqlite(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS events (session_id TEXT NOT NULL, position INTEGER NOT NULL,"
        " event TEXT NOT NULL, PRIMARY KEY (session_id, position)) WITHOUT ROWID"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS batches (batch_id TEXT PRIMARY KEY, session_id TEXT NOT NULL,"
        " seq INTEGER NOT NULL, source_key TEXT, record TEXT NOT NULL)"
    )
    return conn


def replay_rows(
    backend: str,
    raw_read: str,
    lengths: dict[int, Any],
    rounds: int,
    reads: int,
    store_replay: Callable[[Any], Any],
    raw_texts: Callable[[Any], list[Any]],
    clear: Callable[[], None],
) -> None:
    """Replay rows for sessions of each length: ``store_replay(key)`` gives the store's events
    after the cursor, ``raw_texts(key)`` the raw client's JSON texts for the same positions;
    ``clear()`` empties the store's object cache between rounds (events decoded from storage)."""
    first = None
    for length, key in lengths.items():
        store_t, raw_t, dec_t = [], [], []
        for _ in range(rounds):

            def store_reads() -> None:
                for _ in range(reads):
                    check(len(store_replay(key).events) == 100, f"{backend} replay count")

            def raw_reads(decode: Callable[[Any], Any]) -> Callable[[], None]:
                def run() -> None:
                    for _ in range(reads):
                        events = [decode(json.loads(text)) for text in raw_texts(key)]
                        check(len(events) == 100, f"raw {backend} replay count")

                return run

            store_t.append(timed(store_reads))
            raw_t.append(timed(raw_reads(lambda document: document)))
            dec_t.append(timed(raw_reads(event_from_dict)))
            clear()
        median = statistics.median(store_t)
        first = first or median
        report(
            f"{backend} replay 100 after cursor, {length:>6} held", store_t, dec_t, reads,
            f"vs {raw_read} + decode to events (store time vs 1k: {median / first:.2f}x)",
        )  # fmt: skip
        report(f"  same, vs {raw_read} + json.loads only", store_t, raw_t, reads)


def bench_sqlite(args: argparse.Namespace, workdir: str) -> None:
    print("SQLite (stdlib sqlite3, WAL, a file in a temporary directory)")
    n = 300 if args.quick else 1500
    rounds = 3 if args.quick else 5
    config = InMemoryLiveReplayStoreConfig(10**7, 10**9, 2048)
    store = SqliteLiveReplayStore(os.path.join(workdir, "store.sqlite3"), config)
    raw = raw_sqlite(os.path.join(workdir, "raw.sqlite3"))
    sample = store.append("probe", 0, payload())
    text = wire_json(sample)
    store_t, raw_t, enc_t = [], [], []
    position = 0
    for r in range(rounds):
        session = f"append-{r}"
        store_t.append(timed(lambda: [store.append(session, 0, payload()) for _ in range(n)]))

        def raw_append() -> None:
            nonlocal position
            for _ in range(n):
                position += 1
                raw.execute("BEGIN IMMEDIATE")
                raw.execute("INSERT INTO events VALUES (?, ?, ?)", (session, position, text))
                raw.execute("COMMIT")

        raw_t.append(timed(raw_append))

        def raw_append_encoding() -> None:
            nonlocal position
            for _ in range(n):
                position += 1
                event = SessionObservationEvent(
                    session, SessionRevision(0), SessionCursor.new(session, 0, position), payload()
                )
                raw.execute("BEGIN IMMEDIATE")
                raw.execute(
                    "INSERT INTO events VALUES (?, ?, ?)", (session, position, wire_json(event))
                )
                raw.execute("COMMIT")

        enc_t.append(timed(raw_append_encoding))
    check(store.current_cursor("append-0", 0).parse().live_position == n, "sqlite append count")
    report("sqlite replay append vs INSERT + encode", store_t, enc_t, n)
    report("sqlite replay append vs INSERT of ready JSON", store_t, raw_t, n)

    # replay after a cursor: the last 100 events, sessions of growing length; the store is
    # reopened after filling, so events come from the file, not from its object cache
    lengths = (1000, 10_000) if args.quick else (1000, 10_000, 100_000)
    sessions = {}
    for length in lengths:
        session = f"replay-{length}"
        for _ in range(length):
            store.append(session, 0, payload())
        raw.execute("BEGIN")
        raw.executemany(
            "INSERT INTO events VALUES (?, ?, ?)", [(session, p, text) for p in range(1, length + 1)]
        )
        raw.execute("COMMIT")
        sessions[length] = session
    path = store.path
    store.close()
    store = SqliteLiveReplayStore(path, config)
    reads = 20 if args.quick else 50
    replay_rows(
        "sqlite", "SELECT", sessions, rounds, reads,
        lambda session: store.replay_after_cursor(
            SessionCursor.new(session, 0, int(session.rsplit("-", 1)[1]) - 100)
        ),
        lambda session: [text for (text,) in raw.execute(
            "SELECT event FROM events WHERE session_id = ? AND position > ? ORDER BY position",
            (session, int(session.rsplit("-", 1)[1]) - 100),
        ).fetchall()],
        store._cache.clear,
    )  # fmt: skip
    store.close()

    # queue enqueue: one batch per transaction into a session that fills up
    queue_n = 200 if args.quick else 500
    qstore = SqliteQueueStore(os.path.join(workdir, "queue.sqlite3"))
    batch_text = json.dumps(draft("s", 0).to_dict(), separators=(",", ":"))

    hop_t: list[float] = []

    async def enqueue_rounds() -> tuple[list[float], list[float]]:
        store_t, raw_t = [], []
        seq = 0
        for r in range(rounds):
            session = f"queue-{r}"

            async def store_enqueue() -> None:
                for i in range(queue_n):
                    await qstore.enqueue_queued_work(draft(session, i))

            def raw_enqueue() -> None:
                nonlocal seq
                for i in range(queue_n):
                    seq += 1
                    raw2.execute("BEGIN IMMEDIATE")
                    raw2.execute(
                        "INSERT INTO batches VALUES (?, ?, ?, ?, ?)",
                        (uuid.uuid4().hex, session, seq, f"key-{i}", batch_text),
                    )
                    raw2.execute("COMMIT")

            async def raw_enqueue_off_loop() -> None:
                # what an async caller must do with a blocking driver: one thread hop per call
                for i in range(queue_n):
                    await asyncio.to_thread(raw_one, session, i)

            def raw_one(session: str, i: int) -> None:
                nonlocal seq
                seq += 1
                raw2.execute("BEGIN IMMEDIATE")
                raw2.execute(
                    "INSERT INTO batches VALUES (?, ?, ?, ?, ?)",
                    (uuid.uuid4().hex, session, seq, f"key-{i}", batch_text),
                )
                raw2.execute("COMMIT")

            store_t.append(await atimed(store_enqueue))
            raw_t.append(timed(raw_enqueue))
            hop_t.append(await atimed(raw_enqueue_off_loop))
            listed = await qstore.list_queued_work(session)
            check(len(listed) == queue_n, "sqlite enqueue count")
        return store_t, raw_t

    raw2 = raw_sqlite(os.path.join(workdir, "raw-queue.sqlite3"))
    store_t, raw_t = asyncio.run(enqueue_rounds())
    report("sqlite queue enqueue vs INSERT in to_thread", store_t, hop_t, queue_n,
           f"(session grows to {queue_n} batches)")  # fmt: skip
    report("  same, vs INSERT inline (blocks the loop)", store_t, raw_t, queue_n)
    qstore.close()
    raw2.close()
    raw.close()


# --- Redis --------------------------------------------------------------------------------------------


def bench_redis(args: argparse.Namespace, url: str) -> None:
    import redis

    from lash_core.stores.redis import RedisLiveReplayStore

    print(f"Redis ({url})")
    n = 300 if args.quick else 2000
    rounds = 3 if args.quick else 5
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    config = InMemoryLiveReplayStoreConfig(10**7, 10**9, 2048)
    store = RedisLiveReplayStore.from_url(url, config, namespace=namespace)
    client = redis.Redis.from_url(url)
    text = wire_json(store.append("probe", 0, payload()))
    store_t, raw_t, piped_t, enc_t = [], [], [], []
    for r in range(rounds):
        session = f"append-{r}"
        key = f"{namespace}-raw:append-{r}"
        store_t.append(timed(lambda: [store.append(session, 0, payload()) for _ in range(n)]))
        raw_t.append(timed(lambda: [client.xadd(key, {"e": text}) for _ in range(n)]))

        def piped() -> None:
            pipe = client.pipeline(transaction=False)
            for i in range(n):
                pipe.xadd(key + ":p", {"e": text})
                if i % 100 == 99:
                    pipe.execute()
            pipe.execute()

        piped_t.append(timed(piped))

        def raw_append_encoding() -> None:
            for p in range(1, n + 1):
                event = SessionObservationEvent(
                    session, SessionRevision(0), SessionCursor.new(session, 0, p), payload()
                )
                client.xadd(key + ":e", {"e": wire_json(event)})

        enc_t.append(timed(raw_append_encoding))
    base = store.current_cursor("never-appended", 0).parse().live_position  # instance numbering
    check(
        store.current_cursor("append-0", 0).parse().live_position - base == n, "redis append count"
    )
    report("redis append vs XADD + encode (one RTT each)", store_t, enc_t, n)
    report("  same, vs XADD of ready JSON", store_t, raw_t, n)
    report("  same, vs XADD of ready JSON pipelined by 100", store_t, piped_t, n)

    lengths = (1000, 10_000) if args.quick else (1000, 10_000, 100_000)
    reads = 20 if args.quick else 50
    sessions = {}
    for length in lengths:
        session = f"replay-{length}"
        for _ in range(length):
            store.append(session, 0, payload())
        pipe = client.pipeline(transaction=False)
        for p in range(1, length + 1):
            pipe.xadd(f"{namespace}-raw:{session}", {"e": text}, id=f"{p}-1")
            if p % 1000 == 0:
                pipe.execute()
        pipe.execute()
        sessions[length] = session
    fresh = RedisLiveReplayStore.from_url(url, config, namespace=namespace)  # no object cache

    def clear() -> None:
        cache = getattr(fresh, "_cache", None)
        if cache is not None:
            cache.clear()

    replay_rows(
        "redis", "XRANGE", sessions, rounds, reads,
        lambda session: fresh.replay_after_cursor(
            SessionCursor.new(session, 0, base + int(session.rsplit("-", 1)[1]) - 100)
        ),
        lambda session: [fields[b"e"] for _, fields in client.xrange(
            f"{namespace}-raw:{session}", f"({int(session.rsplit('-', 1)[1]) - 100}-1", "+"
        )],
        clear,
    )  # fmt: skip
    fresh.close()
    store.close()
    for key in client.scan_iter(match=f"{namespace}*", count=1000):
        client.delete(key)
    client.close()


# --- PostgreSQL -------------------------------------------------------------------------------------


def bench_postgres(args: argparse.Namespace, dsn: str) -> None:
    import psycopg

    from lash_core.stores.postgres import PostgresQueueStore

    print(f"PostgreSQL ({dsn})")
    n = 200 if args.quick else 1000
    rounds = 3 if args.quick else 5
    batch_text = json.dumps(draft("s", 0).to_dict(), separators=(",", ":"))

    async def run() -> None:
        store = await PostgresQueueStore.open(dsn)
        raw = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        await raw.execute(
            "CREATE TABLE IF NOT EXISTS bench_batches (batch_id TEXT PRIMARY KEY,"
            " session_id TEXT NOT NULL, seq BIGSERIAL, source_key TEXT, record JSONB NOT NULL,"
            " lease_owner TEXT, UNIQUE (session_id, source_key))"
        )
        store_t, raw_t = [], []
        for r in range(rounds):
            session = f"enqueue-{r}-{uuid.uuid4().hex[:6]}"

            async def store_enqueue() -> None:
                for i in range(n):
                    await store.enqueue_queued_work(draft(session, i))

            async def raw_enqueue() -> None:
                for i in range(n):
                    await raw.execute(
                        "INSERT INTO bench_batches (batch_id, session_id, source_key, record)"
                        " VALUES (%s, %s, %s, %s) ON CONFLICT (session_id, source_key) DO NOTHING",
                        (uuid.uuid4().hex, session, f"key-{i}", batch_text),
                    )

            store_t.append(await atimed(store_enqueue))
            raw_t.append(await atimed(raw_enqueue))
            check(len(await store.list_queued_work(session)) == n, "postgres enqueue count")
        report("postgres enqueue vs INSERT", store_t, raw_t, n)

        claims = 100 if args.quick else 300
        store_t, raw_t = [], []
        for r in range(rounds):
            session = f"claim-{r}-{uuid.uuid4().hex[:6]}"
            for i in range(claims):
                await store.enqueue_queued_work(draft(session, i))
                await raw.execute(
                    "INSERT INTO bench_batches (batch_id, session_id, source_key, record)"
                    " VALUES (%s, %s, %s, %s)",
                    (uuid.uuid4().hex, session, f"key-{i}", batch_text),
                )
            got: list[str] = []

            async def store_claims() -> None:
                for _ in range(claims):
                    claim = await store.claim_ready_queued_work(
                        session, "bench", QueuedWorkClaimBoundary.IDLE, 60_000, 1
                    )
                    got.append(claim.batches[0].payloads[0].content)

            async def raw_claims() -> None:
                for _ in range(claims):
                    cursor = await raw.execute(
                        "UPDATE bench_batches SET lease_owner = 'bench' WHERE batch_id = ("
                        " SELECT batch_id FROM bench_batches WHERE session_id = %s"
                        " AND lease_owner IS NULL ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)"
                        " RETURNING record",
                        (session,),
                    )
                    check(await cursor.fetchone() is not None, "raw claim found a batch")

            store_t.append(await atimed(store_claims))
            raw_t.append(await atimed(raw_claims))
            check(
                got == [f"message {i}" for i in range(claims)], "postgres claims in enqueue order"
            )
        report("postgres claim one batch vs UPDATE .. SKIP LOCKED", store_t, raw_t, claims)
        await raw.close()
        await store.close()

    asyncio.run(run())


# --- main -------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer operations and rounds")
    parser.add_argument("--only", choices=("sqlite", "redis", "postgres"), action="append")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument("--postgres-dsn", help="use this PostgreSQL instead of starting one")
    parser.add_argument("--json", help="also write every row and sample here")
    args = parser.parse_args()
    only = set(args.only or ("sqlite", "redis", "postgres"))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, quick={args.quick}")
    workdir = tempfile.mkdtemp(prefix="lash-bench-")
    servers: list[Any] = []
    try:
        if "sqlite" in only:
            bench_sqlite(args, workdir)
        if "redis" in only:
            url = args.redis_url
            if url is None:
                try:
                    server = LocalRedisServer.start(appendonly=False)
                    servers.append(server)
                    url = server.url
                except ServerUnavailable as err:
                    print(f"Redis skipped: {err}")
            if url is not None:
                bench_redis(args, url)
        if "postgres" in only:
            dsn = args.postgres_dsn
            if dsn is None:
                try:
                    pg = LocalPostgresServer.start()
                    servers.append(pg)
                    dsn = pg.create_database("lash_bench")
                except ServerUnavailable as err:
                    print(f"PostgreSQL skipped: {err}")
            if dsn is not None:
                bench_postgres(args, dsn)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"rows": ROWS, "failures": FAILURES}, handle, indent=1)
    if FAILURES:
        print(f"FAILED: {len(FAILURES)} checks; figures are not meaningful")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
