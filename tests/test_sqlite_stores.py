"""The SQLite queued-work store and process registry beyond the conformance suite: several OS
processes on one file, claim order over many batches, a peer holding the write lock, files that
are not lash stores, and counters that survive a reopen."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sqlite3
import time

import pytest

from lash_core import (
    DeliveryPolicy,
    InvalidProcessError,
    InvalidQueuedWorkError,
    InvalidTurnInputError,
    ProcessRegistryError,
    ProcessScope,
    QueuedWorkBatchDraft,
    QueuedWorkClaimBoundary,
    QueuedWorkError,
    SlotPolicy,
    TurnInput,
)
from lash_core.stores._sqlite_db import open_database
from lash_core.stores._sqlite_processes import SqliteProcessRegistry
from lash_core.stores._sqlite_queue import (
    QUEUE_COMPONENT,
    QUEUE_SCHEMA_VERSION,
    SqliteQueueStore,
)
from lash_core.testing import FakeClock

ESB = DeliveryPolicy.EARLIEST_SAFE_BOUNDARY
IDLE = QueuedWorkClaimBoundary.IDLE
SPAWN = multiprocessing.get_context("spawn")


def draft(label: str, session: str = "s1", *, slot=SlotPolicy.JOIN, **kw) -> QueuedWorkBatchDraft:
    return QueuedWorkBatchDraft(session, ESB, slot, [TurnInput.text(label)], **kw)


def labels(batches) -> list[str]:
    return [b.items[0].payload.content for b in batches]


# --- several processes on one file --------------------------------------------------------------


def _claim_in_a_process(path: str, owner: str, start, results) -> None:
    try:
        store = SqliteQueueStore(path)
        start.wait(30)  # every process has the file open before anyone claims
        claim = asyncio.run(store.claim_ready_queued_work("s1", owner, IDLE, 60_000, 10))
        store.close()
        results.put((owner, "claim" if claim is not None else "none", claim and claim.batch_ids))
    except BaseException as err:  # reported, so the test shows it
        results.put((owner, "error", repr(err)))


async def test_processes_racing_for_one_batch_give_it_to_exactly_one(tmp_path):
    path = str(tmp_path / "race.db")
    store = SqliteQueueStore(path)
    batch = await store.enqueue_queued_work(draft("only"))
    start, results = SPAWN.Barrier(4), SPAWN.Queue()
    workers = [
        SPAWN.Process(target=_claim_in_a_process, args=(path, f"w{i}", start, results))
        for i in range(4)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(30)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert sorted(kind for _, kind, _ in outcomes) == ["claim", "none", "none", "none"], outcomes
    assert [ids for _, kind, ids in outcomes if kind == "claim"] == [(batch.batch_id,)]
    assert await store.list_pending_queued_work("s1") == []  # held by the winner's live lease
    store.close()


async def test_two_registries_on_one_file_never_hand_out_the_same_id(tmp_path):
    path = tmp_path / "procs.db"
    one, two = SqliteProcessRegistry(path), SqliteProcessRegistry(path)
    scope = ProcessScope("s1")
    made = [r.start_process(scope, f"p{i}").process_id for i in range(5) for r in (one, two)]
    assert len(set(made)) == 10
    assert [e.process_id for e in await two.list_handle_grants(ProcessScope("s1"))] == sorted(made)
    one.close()
    two.close()


# --- order and durability -----------------------------------------------------------------------


async def test_34_ready_batches_claimed_one_at_a_time_come_back_in_enqueue_order(tmp_path):
    clock = FakeClock()
    store = SqliteQueueStore(tmp_path / "q.db", clock_ms=clock.ms)
    enqueued = [await store.enqueue_queued_work(draft(f"b{i:02d}")) for i in range(34)]
    await store.enqueue_queued_work(draft("other", "s2"))
    claimed = []
    for i in range(34):
        if i == 17:  # half way, a restart changes nothing
            store.close()
            store = SqliteQueueStore(tmp_path / "q.db", clock_ms=clock.ms)
        claim = await store.claim_ready_queued_work("s1", "w", IDLE, 60_000, 1)
        assert claim is not None and claim.fencing_token == 1
        claimed.extend(claim.batches)
    assert claimed == enqueued
    assert await store.claim_ready_queued_work("s1", "w", IDLE, 60_000, 1) is None
    assert labels(await store.list_pending_queued_work("s2")) == ["other"]
    store.close()


async def test_sequence_numbers_and_fencing_counters_survive_a_reopen(tmp_path):
    clock = FakeClock()
    path = tmp_path / "q.db"
    store = SqliteQueueStore(path, clock_ms=clock.ms)
    a = await store.enqueue_queued_work(draft("a", slot=SlotPolicy.EXCLUSIVE))
    b = await store.enqueue_queued_work(draft("b", source_key="k"))
    assert await store.cancel_queued_work_batch("s1", b.batch_id) == b  # the newest batch is gone
    first = await store.claim_ready_queued_work("s1", "w", IDLE, 100, 5)
    await store.abandon_queued_work_claim(first)
    store.close()
    store = SqliteQueueStore(path, clock_ms=clock.ms)
    again = await store.enqueue_queued_work(draft("b again", source_key="k"))
    assert again.enqueue_seq > b.enqueue_seq and again.batch_id != b.batch_id
    claim = await store.claim_ready_queued_work("s1", "w", IDLE, 100, 5)
    assert claim.batch_ids == (a.batch_id,) and claim.fencing_token == 2
    store.close()
    with pytest.raises(QueuedWorkError, match="closed"):
        await store.list_queued_work("s1")
    store.close()  # idempotent


async def test_bad_arguments_are_refused_before_the_database_is_touched(tmp_path):
    store = SqliteQueueStore(tmp_path / "q.db")
    store.close()  # a closed store would say so; a bad argument is refused first
    with pytest.raises(InvalidQueuedWorkError, match="session_id"):
        await store.list_queued_work("")
    with pytest.raises(InvalidQueuedWorkError, match="lease_ttl_ms"):
        await store.claim_ready_queued_work("s1", "w", IDLE, -1, 1)
    with pytest.raises(InvalidQueuedWorkError, match="(?i)draft"):
        await store.enqueue_queued_work("s1")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [":memory:", "", "file:q.db?mode=memory", "q\0.db", 123, None])
def test_a_path_that_is_not_a_file_path_is_the_stores_invalid_argument_error(bad):
    with pytest.raises(InvalidQueuedWorkError, match="SQLite store"):
        SqliteQueueStore(bad)
    with pytest.raises(InvalidProcessError, match="SQLite store"):
        SqliteProcessRegistry(bad)


async def test_text_with_a_lone_surrogate_is_refused_typed_and_changes_nothing(tmp_path):
    bad = "x\udc80"
    store = SqliteQueueStore(tmp_path / "q.db")
    with pytest.raises(InvalidTurnInputError, match="UTF-8"):  # the turn text: refused at once
        draft(bad)
    for call in (
        lambda: store.enqueue_queued_work(draft("a", session=bad)),
        lambda: store.enqueue_queued_work(draft("a", source_key=bad)),
        lambda: store.claim_ready_queued_work("s1", bad, IDLE, 100, 1),
        lambda: store.cancel_queued_work_batch("s1", bad),
    ):
        with pytest.raises(InvalidQueuedWorkError, match="UTF-8"):
            await call()
    odd_ids = SqliteQueueStore(tmp_path / "q.db", new_id=lambda prefix: prefix + bad)
    with pytest.raises(InvalidQueuedWorkError, match="UTF-8"):
        await odd_ids.enqueue_queued_work(draft("a"))
    assert await store.list_queued_work("s1") == []
    registry = SqliteProcessRegistry(tmp_path / "q.db")
    for call in (
        lambda: registry.start_process(ProcessScope("s"), bad),
        lambda: registry.start_process(ProcessScope("s"), "n", kind=bad),
        lambda: registry.start_process(ProcessScope("s"), "n", process_id=bad),
    ):
        with pytest.raises(InvalidProcessError, match="UTF-8"):
            call()
    assert registry.get_process(bad) is None
    assert await registry.list_handle_grants(ProcessScope("s")) == []
    for one in (store, odd_ids, registry):
        one.close()


# --- a peer holding the write lock --------------------------------------------------------------


def _hold_write_lock(path: str, held, release) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("BEGIN IMMEDIATE")
    held.set()
    release.wait(30)
    connection.execute("COMMIT")
    connection.close()


async def test_a_store_waits_for_a_peers_write_lock_or_fails_typed_after_its_timeout(tmp_path):
    path = str(tmp_path / "busy.db")
    impatient = SqliteQueueStore(path, busy_timeout_s=0.1)
    patient = SqliteQueueStore(path, busy_timeout_s=10)
    registry = SqliteProcessRegistry(path, busy_timeout_s=0.1)
    await patient.enqueue_queued_work(draft("before"))
    held, release = SPAWN.Event(), SPAWN.Event()
    holder = SPAWN.Process(target=_hold_write_lock, args=(path, held, release))
    holder.start()
    try:
        assert held.wait(30)
        started = time.monotonic()
        with pytest.raises(QueuedWorkError, match="SQLite failed to claim queued work") as info:
            await impatient.claim_ready_queued_work("s1", "w", IDLE, 1_000, 1)
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert time.monotonic() - started < 5
        with pytest.raises(ProcessRegistryError, match="SQLite failed to start a process"):
            registry.start_process(ProcessScope("s1"), "blocked")
        # reads do not need the write lock
        assert labels(await impatient.list_pending_queued_work("s1")) == ["before"]
        # the patient store waits, without blocking the event loop, and then succeeds
        waiting = asyncio.create_task(patient.enqueue_queued_work(draft("after")))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        release.set()
        batch = await asyncio.wait_for(waiting, 10)
        assert labels(await impatient.list_queued_work("s1")) == ["before", "after"]
        assert batch.enqueue_seq == 2
    finally:
        release.set()
        holder.join(30)
    # the refused calls changed nothing, and the stores work again
    claim = await impatient.claim_ready_queued_work("s1", "w", IDLE, 1_000, 5)
    assert labels(claim.batches) == ["before", "after"] and claim.fencing_token == 1
    assert registry.start_process(ProcessScope("s1"), "now").process_id == "proc-000001"
    for store in (impatient, patient, registry):
        store.close()


# --- files that are not lash stores -------------------------------------------------------------


@pytest.mark.parametrize("opener", [SqliteQueueStore, SqliteProcessRegistry])
def test_files_that_are_not_lash_stores_are_refused_typed(tmp_path, opener):
    error = QueuedWorkError if opener is SqliteQueueStore else ProcessRegistryError
    text = tmp_path / "notes.txt"
    text.write_text("just words, not a database\n" * 200)
    with pytest.raises(error, match="SQLite failed to open"):
        opener(text)
    assert text.read_text().startswith("just words")  # left alone
    other = tmp_path / "other.db"
    raw = sqlite3.connect(other)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(error, match="file format 99"):
        opener(other)
    with pytest.raises(error):
        opener(tmp_path / "no-such-dir" / "x.db")
    with pytest.raises(ValueError):
        opener(":memory:")


def test_a_newer_queue_schema_is_refused(tmp_path):
    path = tmp_path / "newer.db"
    open_database(path, QUEUE_COMPONENT, QUEUE_SCHEMA_VERSION + 1, [], QueuedWorkError).close()
    with pytest.raises(QueuedWorkError, match="schema version"):
        SqliteQueueStore(path)


async def test_an_unreadable_stored_row_is_a_typed_error(tmp_path):
    path = tmp_path / "q.db"
    store = SqliteQueueStore(path)
    batch = await store.enqueue_queued_work(draft("a"))
    raw = sqlite3.connect(path)
    raw.execute("UPDATE queued_work_batches SET record = ?", (json.dumps({"batch": 7}),))
    raw.commit()
    raw.close()
    with pytest.raises(QueuedWorkError, match=f"`{batch.batch_id}` is unreadable"):
        await store.list_queued_work("s1")
    with pytest.raises(QueuedWorkError, match="unreadable"):
        await store.claim_ready_queued_work("s1", "w", IDLE, 10, 1)
    store.close()


async def test_a_registry_refuses_a_clock_beyond_what_sqlite_stores_and_changes_nothing(tmp_path):
    now = [2**63]
    registry = SqliteProcessRegistry(tmp_path / "p.db", clock_ms=lambda: now[0])
    with pytest.raises(ProcessRegistryError, match="clock_ms"):
        registry.start_process(ProcessScope("s1"), "late")
    assert registry.get_process("proc-000001") is None
    now[0] = 5
    started = registry.start_process(ProcessScope("s1"), "on time")
    # the refused start used up nothing, not even a generated id
    assert (started.process_id, started.granted_at_ms) == ("proc-000001", 5)
    registry.close()
