"""``PostgresQueueStore`` beyond the conformance suite: concurrent writers and claimers (tasks,
connections and processes), ``FOR UPDATE SKIP LOCKED`` past locked and non-ready rows, a claim
holder killed with SIGKILL, a client whose clock runs ahead, a server that goes down or stops
answering (SIGSTOP), bad options and targets for ``open``, a failing clock, and the SIGKILL enqueue
crash test (``tests/crash_child.py``, shared with SQLite)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import time

import psycopg
from psycopg.conninfo import make_conninfo
import pytest

import crash_child
import servers
from lash_core import (
    DeliveryPolicy,
    InvalidQueuedWorkError,
    LashError,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkClaimExpired,
    QueuedWorkError,
    SlotPolicy,
    TurnInput,
)
from lash_core.stores.postgres import PostgresQueueStore

pytestmark = pytest.mark.servers

IDLE = QueuedWorkClaimBoundary.IDLE
FUTURE_MS = 2**64 - 1  # never available


def draft(label: str, session: str = "s1", *, slot=SlotPolicy.JOIN, **kw) -> QueuedWorkBatchDraft:
    return QueuedWorkBatchDraft(
        session, DeliveryPolicy.EARLIEST_SAFE_BOUNDARY, slot, [TurnInput.text(label)], **kw
    )


def label(batch) -> str:
    return batch.items[0].payload.content


async def db_now_ms(store: PostgresQueueStore) -> int:
    """The database clock, the way the store reads it."""
    probe = await store.enqueue_queued_work(draft("clock probe", session="clock-probe"))
    await store.cancel_queued_work_batch("clock-probe", probe.batch_id)
    return probe.enqueued_at_ms


@pytest.fixture
async def store(postgres_dsn):
    opened = await PostgresQueueStore.open(postgres_dsn)
    yield opened
    await opened.close()


# --- enqueue --------------------------------------------------------------------------------------


async def test_concurrent_enqueues_of_one_source_key_on_many_connections_make_one_batch(
    postgres_dsn,
):
    stores = [await PostgresQueueStore.open(postgres_dsn, pool_max_size=3) for _ in range(6)]
    try:
        for round_ in range(3):
            key = f"dup-{round_}"
            calls = [
                s.enqueue_queued_work(draft(f"{key} from {i}", source_key=key))
                for i, s in enumerate(stores)
                for _ in range(4)
            ]
            results = await asyncio.gather(*calls)
            assert len({b.batch_id for b in results}) == 1
            assert len({b.enqueue_seq for b in results}) == 1
            assert len({label(b) for b in results}) == 1  # everyone got the stored payload
        listed = await stores[0].list_queued_work("s1")
        assert [b.source_key for b in listed] == ["dup-0", "dup-1", "dup-2"]
        assert [b.enqueue_seq for b in listed] == sorted(b.enqueue_seq for b in listed)
    finally:
        for s in stores:
            await s.close()


async def test_enqueue_keeps_each_sessions_batches_in_commit_order(store):
    """Writers on several connections: each session's listing is in ``enqueue_seq`` order and
    holds every batch once (the session's enqueue lock orders commits by sequence)."""
    calls = [store.enqueue_queued_work(draft(f"b{i}", session=f"s{i % 3}")) for i in range(60)]
    results = await asyncio.gather(*calls)
    for session in ("s0", "s1", "s2"):
        listed = await store.list_queued_work(session)
        assert sorted(b.batch_id for b in listed) == sorted(
            b.batch_id for b in results if b.session_id == session
        )
        seqs = [b.enqueue_seq for b in listed]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) == 20


# --- claims ---------------------------------------------------------------------------------------


async def test_34_ready_batches_claimed_one_at_a_time_come_back_in_enqueue_order(postgres_dsn):
    first = await PostgresQueueStore.open(postgres_dsn)
    second = await PostgresQueueStore.open(postgres_dsn)
    try:
        enqueued = [await first.enqueue_queued_work(draft(f"m{i}")) for i in range(34)]
        claimed = []
        for i in range(34):
            claimer = (first, second)[i % 2]
            claim = await claimer.claim_ready_queued_work("s1", f"w{i % 2}", IDLE, 60_000, 1)
            assert claim is not None and claim.fencing_token == 1
            claimed.extend(claim.batches)
        assert [b.batch_id for b in claimed] == [b.batch_id for b in enqueued]
        assert await first.claim_ready_queued_work("s1", "w", IDLE, 60_000, 1) is None
        assert await first.list_pending_queued_work("s1") == []
        assert len(await first.list_queued_work("s1")) == 34
    finally:
        await first.close()
        await second.close()


async def test_skip_locked_claims_reach_ready_rows_behind_leased_unavailable_and_locked_ones(
    store, postgres_dsn
):
    leased = [await store.enqueue_queued_work(draft(f"leased{i}")) for i in range(60)]
    holder = await store.claim_ready_queued_work("s1", "holder", IDLE, 600_000, 60)
    assert holder is not None and holder.batch_ids == tuple(b.batch_id for b in leased)
    for i in range(60):
        await store.enqueue_queued_work(draft(f"later{i}", available_at_ms=FUTURE_MS))
    locked = [await store.enqueue_queued_work(draft(f"locked{i}")) for i in range(60)]
    ready = [await store.enqueue_queued_work(draft(f"ready{i}")) for i in range(3)]
    async with await psycopg.AsyncConnection.connect(postgres_dsn) as other:
        # another transaction holds row locks on 60 ready batches, in front of the last three
        await other.execute(
            "SELECT batch_id FROM lash.queued_work_batches WHERE batch_id = ANY(%s) FOR UPDATE",
            ([b.batch_id for b in locked],),
        )
        started = time.monotonic()
        claim = await store.claim_ready_queued_work("s1", "w", IDLE, 60_000, 1)
        assert time.monotonic() - started < 3  # skipped, not waited for
        assert claim is not None and claim.batch_ids == (ready[0].batch_id,)
        await other.rollback()
    # the lock is gone: the earliest ready batch is the head again
    claim = await store.claim_ready_queued_work("s1", "w", IDLE, 60_000, 1)
    assert claim is not None and claim.batch_ids == (locked[0].batch_id,)


async def test_concurrent_claims_of_one_ready_batch_have_one_winner(postgres_dsn):
    stores = [await PostgresQueueStore.open(postgres_dsn, pool_max_size=2) for _ in range(8)]
    try:
        for round_ in range(5):
            session = f"race-{round_}"
            await stores[0].enqueue_queued_work(draft("only", session=session))
            claims = await asyncio.gather(
                *(
                    s.claim_ready_queued_work(session, f"w{i}", IDLE, 60_000, 4)
                    for i, s in enumerate(stores)
                    for _ in range(2)
                )
            )
            winners = [c for c in claims if c is not None]
            assert len(winners) == 1 and winners[0].fencing_token == 1
    finally:
        for s in stores:
            await s.close()


@pytest.mark.slow
async def test_claim_races_between_processes_have_one_winner(postgres_dsn):
    """2-8 processes claim the same ready batch at the same moment: exactly one wins, the others
    get ``None``, and no driver error reaches any of them. Then they all enqueue one source key
    at once: one batch."""
    workers = [crash_child.Child("worker", "postgres", postgres_dsn) for _ in range(8)]
    store = await PostgresQueueStore.open(postgres_dsn)
    try:
        for worker in workers:
            worker.expect("ready")
        rounds = [n for n in range(2, 9) for _ in range(2)]
        for round_, n in enumerate(rounds):
            session = f"race-{round_}"
            batch = await store.enqueue_queued_work(draft("contended", session=session))
            at = time.time() + 0.1
            chosen = workers[:n]
            for i, worker in enumerate(chosen):
                worker.send(
                    {"op": "claim", "session": session, "owner": f"p{i}", "ttl": 60_000, "at": at}
                )
            answers = [json_answer(worker) for worker in chosen]
            assert not [a for a in answers if "error" in a], answers
            won = [a["claim"] for a in answers if a["claim"] is not None]
            assert len(won) == 1, f"{n} processes: {answers}"
            claim = QueuedWorkClaim.from_dict(won[0])
            assert claim.batch_ids == (batch.batch_id,) and claim.fencing_token == 1
        at = time.time() + 0.1
        same_key = draft("from a process", session="keyed", source_key="one-key").to_dict()
        for worker in workers:
            worker.send({"op": "enqueue", "draft": same_key, "at": at})
        answers = [json_answer(worker) for worker in workers]
        assert not [a for a in answers if "error" in a], answers
        assert len({a["batch"]["batch_id"] for a in answers}) == 1
        assert len(await store.list_queued_work("keyed")) == 1
    finally:
        for worker in workers:
            worker.close()
        await store.close()


def json_answer(worker: crash_child.Child) -> dict:
    line = worker.readline()
    assert line is not None, worker.stderr_tail()
    return json.loads(line)


@pytest.mark.slow
async def test_a_killed_claim_holder_is_superseded_after_its_lease(store, postgres_dsn):
    """A process killed while holding a claim leaves the batch listed (not pending); after the
    lease (database clock) another owner claims it with a larger fencing token, and the dead
    owner's late completion and renewal are refused."""
    await crash_child.check_killed_claim_holder(store, "postgres", postgres_dsn)


# --- the database clock ---------------------------------------------------------------------------


async def test_a_client_whose_clock_runs_ahead_cannot_take_renew_or_complete_a_lease(
    postgres_dsn, monkeypatch
):
    """By default the database clock decides leases: a client whose own clock runs an hour ahead
    neither steals a live lease nor renews or completes its own lease once another owner has
    superseded it. (A store given that clock as ``clock_ms`` would steal: shown last.)"""
    owner = await PostgresQueueStore.open(postgres_dsn)
    real_time, real_time_ns = time.time, time.time_ns
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)
    monkeypatch.setattr(time, "time_ns", lambda: real_time_ns() + 3600 * 10**9)
    ahead = await PostgresQueueStore.open(postgres_dsn)
    try:
        await owner.enqueue_queued_work(draft("work", session="clock"))
        mine = await ahead.claim_ready_queued_work("clock", "ahead", IDLE, 1_000, 1)
        assert mine is not None
        db_now = await db_now_ms(owner)
        assert mine.claimed_at_epoch_ms <= db_now < real_time() * 1000 + 3600_000 - 60_000
        # the other way round: the fast client cannot take a live lease either
        await owner.enqueue_queued_work(draft("other", session="clock2"))
        live = await owner.claim_ready_queued_work("clock2", "owner", IDLE, 60_000, 1)
        assert live is not None
        assert await ahead.claim_ready_queued_work("clock2", "ahead", IDLE, 60_000, 1) is None
        assert await ahead.list_pending_queued_work("clock2") == []
        # its own lease, still held, renews (still by the database clock)
        mine = await ahead.renew_queued_work_claim(mine, 1_000)
        assert mine.expires_at_epoch_ms <= await db_now_ms(owner) + 1_000
        deadline = time.monotonic() + 10
        while (heir := await owner.claim_ready_queued_work("clock", "h", IDLE, 60_000, 1)) is None:
            assert time.monotonic() < deadline, "the lease never expired on the database clock"
            await asyncio.sleep(0.1)
        assert heir.fencing_token > mine.fencing_token
        with pytest.raises(QueuedWorkClaimExpired):
            await ahead.renew_queued_work_claim(mine, 60_000)
        with pytest.raises(QueuedWorkClaimExpired):
            await ahead.complete_queued_work(mine.completion())
        await owner.renew_queued_work_claim(heir, 60_000)
        # contrast: a store that takes the fast clock as its clock decides by it, and steals
        stealer = await PostgresQueueStore.open(
            postgres_dsn, clock_ms=lambda: time.time_ns() // 1_000_000
        )
        try:
            stolen = await stealer.claim_ready_queued_work("clock2", "stealer", IDLE, 60_000, 1)
            assert stolen is not None and stolen.fencing_token > live.fencing_token
        finally:
            await stealer.close()
    finally:
        await ahead.close()
        await owner.close()


async def test_injected_clock_decides_like_the_database_clock(postgres_dsn):
    now = [1_750_000_000_000]
    store = await PostgresQueueStore.open(postgres_dsn, clock_ms=lambda: now[0])
    try:
        batch = await store.enqueue_queued_work(draft("a", available_at_ms=now[0] + 10))
        assert batch.enqueued_at_ms == now[0]
        assert await store.claim_ready_queued_work("s1", "w", IDLE, 100, 1) is None
        now[0] += 10
        claim = await store.claim_ready_queued_work("s1", "w", IDLE, 100, 1)
        assert claim is not None and claim.expires_at_epoch_ms == now[0] + 100
        now[0] += 99
        assert await store.list_pending_queued_work("s1") == []
        now[0] += 1
        assert [b.batch_id for b in await store.list_pending_queued_work("s1")] == [batch.batch_id]
    finally:
        await store.close()


# --- errors ---------------------------------------------------------------------------------------


async def test_argument_errors_come_before_any_io_and_nul_is_refused(postgres_dsn):
    store = await PostgresQueueStore.open(postgres_dsn)
    await store.close()  # closed: any I/O would raise QueuedWorkError, not the argument error
    with pytest.raises(InvalidQueuedWorkError, match="max_batches"):
        await store.claim_ready_queued_work("s1", "w", IDLE, 10, -1)
    with pytest.raises(InvalidQueuedWorkError, match="NUL"):
        await store.list_queued_work("s\x00")
    with pytest.raises(InvalidQueuedWorkError, match="source_key"):
        await store.enqueue_queued_work(draft("x", source_key="k\x00"))
    with pytest.raises(QueuedWorkError, match="closed"):
        await store.list_queued_work("s1")
    with pytest.raises(InvalidQueuedWorkError, match="schema"):
        await PostgresQueueStore.open(postgres_dsn, schema="Robert'); DROP TABLE x;--")
    with pytest.raises(InvalidQueuedWorkError, match="dsn"):
        await PostgresQueueStore.open("postgresql://user:secret@[bad")


async def test_schema_is_created_once_by_stores_opening_at_the_same_time(postgres_dsn):
    stores = await asyncio.gather(
        *(PostgresQueueStore.open(postgres_dsn, schema="together") for _ in range(6))
    )
    try:
        batch = await stores[0].enqueue_queued_work(draft("a"))
        assert await stores[5].list_queued_work("s1") == [batch]
    finally:
        for s in stores:
            await s.close()


async def test_a_server_that_goes_down_gives_prompt_typed_errors_and_recovery():
    server = servers.own_postgres()
    try:
        dsn = server.dsn
        store = await PostgresQueueStore.open(dsn, connect_timeout=2, pool_timeout=1)
        try:
            batch = await store.enqueue_queued_work(draft("before"))
            # the test server runs with synchronous_commit=off: write the WAL out, so that the
            # batch and the tables survive the SIGKILL below
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
                await admin.execute("CHECKPOINT")
            server.kill()
            calls = [
                lambda: store.enqueue_queued_work(draft("during")),
                lambda: store.list_queued_work("s1"),
                lambda: store.claim_ready_queued_work("s1", "w", IDLE, 1_000, 1),
                lambda: store.cancel_queued_work_batch("s1", batch.batch_id),
            ]
            for call in calls:
                started = time.monotonic()
                with pytest.raises(QueuedWorkError) as caught:
                    await asyncio.wait_for(call(), 15)
                assert time.monotonic() - started < 4  # about the pool timeout, or at once
                assert isinstance(caught.value, LashError)
                assert "PostgreSQL failed to" in str(caught.value)
            server.restart()
            restarted = time.monotonic()
            deadline = restarted + 15
            while True:  # the pool replaces its dead connections
                try:
                    listed = await store.list_queued_work("s1")
                    break
                except QueuedWorkError:
                    assert time.monotonic() < deadline, "the store never recovered"
                    await asyncio.sleep(0.2)
            assert [b.batch_id for b in listed] == [batch.batch_id]
        finally:
            await store.close()
        server.kill()
        started = time.monotonic()
        with pytest.raises(QueuedWorkError, match="connect"):
            await PostgresQueueStore.open(dsn, connect_timeout=2)
        assert time.monotonic() - started < 5
    finally:
        server.stop()


def server_processes(server) -> list[int]:
    """The postmaster of a test server and its children (backends, background processes)."""
    postmaster = server._process.pid
    children = f"/proc/{postmaster}/task/{postmaster}/children"
    if os.path.exists(children):  # Linux, without needing ps
        with open(children) as listed:
            return [postmaster, *(int(pid) for pid in listed.read().split())]
    found = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True)
    return [postmaster, *(int(pid) for pid in found.stdout.split())]


async def test_a_server_that_stops_answering_fails_each_call_by_its_deadline_and_recovers():
    """Every server process SIGSTOPped (a frozen host; a partition that sends no reset): each
    call fails with ``QueuedWorkError`` at ``call_timeout``, a write saying that its outcome is
    unknown; the connections it was waiting on are discarded, not pooled; after SIGCONT the store
    serves again, and no timed-out write was run twice."""
    server = servers.own_postgres()
    frozen: list[int] = []
    try:
        store = await PostgresQueueStore.open(
            server.dsn,
            call_timeout=1,
            connect_timeout=1,
            pool_timeout=1,
            pool_min_size=3,
            pool_max_size=3,
        )
        try:
            before = await store.enqueue_queued_work(draft("before"))
            claim = await store.claim_ready_queued_work("s1", "w", IDLE, 60_000, 1)
            assert claim is not None
            frozen = server_processes(server)
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            calls = [
                (lambda: store.enqueue_queued_work(draft("during")), "is unknown"),
                (lambda: store.renew_queued_work_claim(claim, 60_000), "is unknown"),
                (lambda: store.list_queued_work("s1"), "nothing was changed"),
            ]
            for call, outcome in calls:
                started = time.monotonic()
                with pytest.raises(QueuedWorkError, match="call timeout") as caught:
                    await asyncio.wait_for(call(), 10)
                assert 0.9 < time.monotonic() - started < 2.5
                assert outcome in str(caught.value)
            assert store._pool is not None
            assert store._pool.get_stats().get("returns_bad") == 3  # discarded, not pooled
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
            frozen = []
            deadline = time.monotonic() + 10
            while True:  # the pool replaces the discarded connections
                try:
                    after = await store.enqueue_queued_work(draft("after"))
                    break
                except QueuedWorkError:
                    assert time.monotonic() < deadline, "the store never recovered"
                    await asyncio.sleep(0.1)
            listed = sorted(label(b) for b in await store.list_queued_work("s1"))
            # the server may have run the enqueue it had read before it froze: once, at most
            assert listed in (["after", "before"], ["after", "before", "during"])
            renewed = await store.renew_queued_work_claim(claim, 60_000)
            assert renewed.batch_ids == (before.batch_id,)
            await store.complete_queued_work(renewed.completion())
            assert after in await store.list_queued_work("s1")
        finally:
            await store.close()
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        server.stop()


async def test_open_refuses_timeouts_that_are_not_finite_positive_seconds_before_any_io(
    postgres_dsn,
):
    nowhere = "postgresql://lash@127.0.0.1:1/nowhere"  # any I/O would fail: QueuedWorkError
    for field in ("connect_timeout", "pool_timeout", "call_timeout"):
        for bad in (math.inf, -math.inf, math.nan, 0, -1.5, 10**400, True, "5", None):
            with pytest.raises(InvalidQueuedWorkError, match=field):
                await PostgresQueueStore.open(nowhere, **{field: bad})
    # finite, however large: accepted (libpq's whole seconds and milliseconds are clamped)
    store = await PostgresQueueStore.open(
        postgres_dsn, connect_timeout=1e300, pool_timeout=1e300, call_timeout=1e300
    )
    try:
        batch = await store.enqueue_queued_work(draft("a"))
        assert await store.list_queued_work("s1") == [batch]
    finally:
        await store.close()


async def test_open_reports_a_wrong_database_role_or_port_at_once_with_the_servers_reason():
    server = servers.postgres()
    with socket.socket() as closed_port:  # bound, never listening: connections are refused
        closed_port.bind(("127.0.0.1", 0))
        port = closed_port.getsockname()[1]
        cases = [
            (server.dsn_for("no_such_database"), 'database "no_such_database" does not exist'),
            (make_conninfo(server.dsn, user="no_such_role"), 'role "no_such_role" does not exist'),
            (make_conninfo(server.dsn, port=str(port)), "refused"),
        ]
        for dsn, reason in cases:
            started = time.monotonic()
            with pytest.raises(QueuedWorkError, match=re.escape(reason)) as caught:
                await PostgresQueueStore.open(dsn, connect_timeout=5, pool_timeout=5)
            assert time.monotonic() - started < 2, caught.value
            assert "connect" in str(caught.value)


async def test_a_clock_that_raises_gives_a_typed_error_on_every_call_that_reads_it(postgres_dsn):
    def unplugged() -> int:
        raise RuntimeError("clock unplugged")

    good = await PostgresQueueStore.open(postgres_dsn)
    broken = await PostgresQueueStore.open(postgres_dsn, clock_ms=unplugged)
    try:
        batch = await good.enqueue_queued_work(draft("a"))
        claim = await good.claim_ready_queued_work("s1", "w", IDLE, 60_000, 1)
        assert claim is not None
        calls = [
            lambda: broken.enqueue_queued_work(draft("b")),
            lambda: broken.claim_ready_queued_work("s1", "w", IDLE, 1_000, 1),
            lambda: broken.claim_ready_queued_work_by_batch_ids("s1", "w", IDLE, 1_000, ["x"]),
            lambda: broken.renew_queued_work_claim(claim, 1_000),
            lambda: broken.abandon_queued_work_claim(claim),
            lambda: broken.complete_queued_work(claim.completion()),
            lambda: broken.cancel_queued_work_batch("s1", batch.batch_id),
            lambda: broken.list_pending_queued_work("s1"),
        ]
        for call in calls:
            with pytest.raises(QueuedWorkError, match="clock failed.*clock unplugged") as caught:
                await call()
            assert isinstance(caught.value.__cause__, RuntimeError)
        assert await broken.list_queued_work("s1") == [batch]  # no clock read: served
        await good.complete_queued_work(claim.completion())  # nothing changed meanwhile
    finally:
        await broken.close()
        await good.close()


# --- the SIGKILL enqueue crash test ---------------------------------------------------------------


@pytest.mark.slow
async def test_enqueue_survives_sigkill_at_random_points(postgres_dsn):
    seed = random.randrange(2**32)
    printed = crash_child.run_enqueue_crashes(
        "postgres", postgres_dsn, "crash-session", rounds=5, items=3, seed=seed
    )
    assert printed, f"seed {seed}: no enqueue returned before the kills"
    store = await crash_child.open_store("postgres", postgres_dsn)
    try:
        await crash_child.check_enqueue_crashes(
            store, "crash-session", printed, items=3, seed=seed
        )
    finally:
        await crash_child.close_store(store)
