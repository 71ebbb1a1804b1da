"""SIGKILL crash test of ``SqliteQueueStore`` on a real file: a child process enqueues batches with
source keys and is killed at random points, several times; afterwards every batch whose enqueue
returned is stored exactly once with all its items, and re-enqueueing its key adds nothing.
The child-process driver is shared with the PostgreSQL test (``tests/crash_child.py``)."""

from __future__ import annotations

import os
import random

import pytest

import crash_child

pytestmark = pytest.mark.slow

ITEMS = 3


async def test_enqueue_survives_sigkill_at_random_points(tmp_path):
    path = os.fspath(tmp_path / "lash.db")
    seed = random.randrange(2**32)
    printed = crash_child.run_enqueue_crashes(
        "sqlite", path, "crash-session", rounds=5, items=ITEMS, seed=seed
    )
    assert printed, f"seed {seed}: no enqueue returned before the kills"
    store = await crash_child.open_store("sqlite", path)
    try:
        await crash_child.check_enqueue_crashes(
            store, "crash-session", printed, items=ITEMS, seed=seed
        )
    finally:
        await crash_child.close_store(store)


async def test_a_killed_claim_holder_is_superseded_after_its_lease(tmp_path):
    """A process killed while holding a claim on the file leaves the batch listed (not pending);
    after the lease (wall clock) another owner claims it with a larger fencing token, and the
    dead owner's late completion and renewal are refused."""
    import asyncio
    import json
    import time

    from lash_core import (
        DeliveryPolicy,
        QueuedWorkBatchDraft,
        QueuedWorkClaim,
        QueuedWorkClaimBoundary,
        QueuedWorkClaimExpired,
        SlotPolicy,
        TurnInput,
    )
    from lash_core.stores.sqlite import SqliteQueueStore

    path = str(tmp_path / "queue.sqlite3")
    store = SqliteQueueStore(path)
    idle = QueuedWorkClaimBoundary.IDLE
    try:
        batch = await store.enqueue_queued_work(
            QueuedWorkBatchDraft(
                "held", DeliveryPolicy.EARLIEST_SAFE_BOUNDARY, SlotPolicy.JOIN,
                [TurnInput.text("held")],
            )
        )  # fmt: skip
        child = crash_child.Child("hold", "sqlite", path, "held", "1500")
        try:
            line = child.readline()
            assert line is not None and line != "null", child.stderr_tail()
            dead = QueuedWorkClaim.from_dict(json.loads(line))
            child.kill()
        finally:
            child.close()
        assert dead.batch_ids == (batch.batch_id,)
        assert [b.batch_id for b in await store.list_queued_work("held")] == [batch.batch_id]
        assert await store.list_pending_queued_work("held") == []
        assert await store.claim_ready_queued_work("held", "heir", idle, 60_000, 1) is None
        deadline = time.monotonic() + 10
        while (heir := await store.claim_ready_queued_work("held", "heir", idle, 60_000, 1)) is None:
            assert time.monotonic() < deadline, "the dead owner's lease never expired"
            await asyncio.sleep(0.1)
        assert heir.batch_ids == (batch.batch_id,)
        assert heir.fencing_token > dead.fencing_token
        assert heir.claimed_at_epoch_ms >= dead.expires_at_epoch_ms
        with pytest.raises(QueuedWorkClaimExpired):
            await store.complete_queued_work(dead.completion())
        with pytest.raises(QueuedWorkClaimExpired):
            await store.renew_queued_work_claim(dead, 60_000)
        await store.complete_queued_work(heir.completion())
        assert await store.list_queued_work("held") == []
    finally:
        store.close()
