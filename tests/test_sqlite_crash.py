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
    from lash_core.stores.sqlite import SqliteQueueStore

    path = str(tmp_path / "queue.sqlite3")
    store = SqliteQueueStore(path)
    try:
        await crash_child.check_killed_claim_holder(store, "sqlite", path)
    finally:
        store.close()
