"""Queued work: the values, the sans-IO core (``QueueState``, ``BatchRecord``, the transition
table) and what only ``InMemoryQueueStore`` has (statistics, records, its clock).

What every ``QueuedWorkStore`` must do (spec section 5) is checked once, for every backend, by
``tests/conformance/test_queued_work.py``; ``InMemoryQueueMachine`` below extends its
``QueueMachine`` with checks of the in-memory store's records and statistics.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.backends import InMemoryQueueStoreFactory
from conformance.queue_model import QueueMachine, run_queue_model
from lash_core import LashRuntime, LashRuntimeError, RuntimeErrorCode
from lash_core._errors import IllegalBatchTransition, InvalidQueuedWorkError, QueuedWorkClaimExpired
from lash_core._input import TurnInput
from lash_core._queue import (
    BATCH_TRANSITIONS,
    BatchEvent,
    BatchRecord,
    BatchState,
    DeliveryPolicy,
    InMemoryQueueStore,
    MergeKey,
    QueuedWorkBatch,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkCompletion,
    QueuedWorkItem,
    QueuedWorkStore,
    QueueState,
    QueueStatistics,
    SlotPolicy,
    next_batch_state,
)

ESB = DeliveryPolicy.EARLIEST_SAFE_BOUNDARY
ACTC = DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT
JOIN, EXCL = SlotPolicy.JOIN, SlotPolicy.EXCLUSIVE
IDLE = QueuedWorkClaimBoundary.IDLE
CHECKPOINT = QueuedWorkClaimBoundary.ACTIVE_TURN_CHECKPOINT
T0 = 1_000


def run(coro):
    """Drive an in-memory store coroutine to completion; it must never suspend."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("InMemoryQueueStore coroutine suspended")


def draft(label, session="s1", *, delivery=ESB, slot=JOIN, more=(), **kw) -> QueuedWorkBatchDraft:
    payloads = [TurnInput.text(label), *(TurnInput.text(m) for m in more)]
    return QueuedWorkBatchDraft(session, delivery, slot, payloads, **kw)


class Harness:
    """A store on a fake clock, and a view of a session: (label, state, fencing, claim id) rows."""

    def __init__(self) -> None:
        self.now = T0
        self.store = InMemoryQueueStore(clock_ms=lambda: self.now)

    def advance(self, ms: int) -> None:
        self.now += ms

    async def add(self, label, session="s1", **kw) -> QueuedWorkBatch:
        return await self.store.enqueue_queued_work(draft(label, session, **kw))

    async def claim(self, session="s1", boundary=IDLE, ttl=100, max_batches=10, owner="w1"):
        return await self.store.claim_ready_queued_work(session, owner, boundary, ttl, max_batches)

    def view(self, session="s1") -> list[tuple[str, str, int, str | None]]:
        return [
            (
                r.batch.items[0].payload.content,
                r.state(self.now).value,
                r.fencing_counter,
                r.claim_id,
            )
            for r in self.store.state.records(session)
        ]

    async def labels(self, session="s1", *, pending=False) -> list[str]:
        lister = self.store.list_pending_queued_work if pending else self.store.list_queued_work
        return [b.items[0].payload.content for b in await lister(session)]


def labels_of(claim: QueuedWorkClaim | None) -> list[str] | None:
    return None if claim is None else [b.items[0].payload.content for b in claim.batches]


@pytest.fixture
def h() -> Harness:
    return Harness()


# --- values -------------------------------------------------------------------------------------


def test_enums_carry_wire_strings():
    assert [m.value for m in DeliveryPolicy] == [
        "earliest_safe_boundary",
        "after_current_turn_commit",
    ]
    assert [m.value for m in SlotPolicy] == ["join", "exclusive"]
    assert [m.value for m in QueuedWorkClaimBoundary] == ["idle", "active_turn_checkpoint"]
    assert [m.value for m in BatchState] == [
        "pending",
        "claimed",
        "lease_expired",
        "completed",
        "cancelled",
    ]


def test_merge_key_compares_and_hashes_by_value():
    assert MergeKey("never") == MergeKey.NEVER and MergeKey.NEVER != MergeKey.PAYLOAD_DEFAULT
    assert MergeKey.group("a") == MergeKey.group("a") != MergeKey.group("b")
    assert len({MergeKey.group("a"), MergeKey.group("a"), MergeKey.NEVER, MergeKey.NEVER}) == 2
    assert (
        repr(MergeKey.group("a")) == "MergeKey.group('a')"
        and repr(MergeKey.NEVER) == "MergeKey.NEVER"
    )
    for key in (MergeKey.NEVER, MergeKey.PAYLOAD_DEFAULT, MergeKey.group("g:1")):
        assert MergeKey.from_dict(json.loads(json.dumps(key.to_dict()))) == key
    with pytest.raises(InvalidQueuedWorkError, match="group name must be a non-empty str"):
        MergeKey.group("")
    with pytest.raises(InvalidQueuedWorkError, match="merge key kind must be one of"):
        MergeKey("sometimes")
    with pytest.raises(InvalidQueuedWorkError, match="takes no name"):
        MergeKey("never", "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        MergeKey.NEVER.kind = "group"  # type: ignore[misc]


def test_draft_validates_and_normalises():
    d = QueuedWorkBatchDraft("s1", "after_current_turn_commit", "exclusive", [TurnInput.text("a")])
    assert (
        d.delivery_policy is ACTC and d.slot_policy is EXCL and d.payloads == (TurnInput.text("a"),)
    )
    assert (d.source_key, d.merge_key, d.available_at_ms) == (None, MergeKey.NEVER, 0)
    cases = [
        (dict(session_id=""), "session_id must be a non-empty str"),
        (dict(payloads=[]), "at least one payload"),
        (dict(payloads=["hi"]), "payloads must be a list or tuple of TurnInput"),
        (dict(payloads=TurnInput.text("a")), "payloads must be a list or tuple"),
        (dict(delivery_policy="soon"), "delivery_policy must be one of"),
        (dict(slot_policy="share"), "slot_policy must be one of"),
        (dict(available_at_ms=-1), "available_at_ms must be an int"),
        (dict(available_at_ms=1.5), "available_at_ms must be an int"),
        (dict(merge_key="never"), "merge_key must be a MergeKey"),
        (dict(source_key=7), "source_key must be a str or None"),
    ]
    base = dict(
        session_id="s1", delivery_policy=ESB, slot_policy=JOIN, payloads=[TurnInput.text("a")]
    )
    for change, message in cases:
        with pytest.raises(InvalidQueuedWorkError, match=message):
            QueuedWorkBatchDraft(**{**base, **change})
    with pytest.raises(TypeError):
        QueuedWorkBatchDraft("s1", ESB, JOIN, [TurnInput.text("a")], "key")  # type: ignore[misc]


async def test_values_round_trip_through_json(h):
    d = draft("a", more=("b",), source_key="k", merge_key=MergeKey.group("g"), available_at_ms=5)
    assert QueuedWorkBatchDraft.from_dict(json.loads(json.dumps(d.to_dict()))) == d
    batch = await h.store.enqueue_queued_work(d)
    assert batch.to_dict()["merge_key"] == {"kind": "group", "name": "g"}
    assert batch.to_dict()["items"][1] == {
        "item_id": f"{batch.batch_id}:item:1",
        "payload": {"type": "text", "text": "b"},
    }
    assert QueuedWorkBatch.from_dict(json.loads(json.dumps(batch.to_dict()))) == batch
    claim = await h.claim()
    assert QueuedWorkClaim.from_dict(json.loads(json.dumps(claim.to_dict()))) == claim
    completion = claim.completion()
    assert completion == QueuedWorkCompletion(
        "s1", claim.claim_id, claim.lease_token, (batch.batch_id,)
    )
    assert (
        QueuedWorkCompletion.from_dict(json.loads(json.dumps(completion.to_dict()))) == completion
    )
    item = batch.items[0]
    assert QueuedWorkItem.from_dict(item.to_dict()) == item
    record = h.store.state.record("s1", batch.batch_id)
    assert BatchRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    with pytest.raises(InvalidQueuedWorkError, match="go together"):
        BatchRecord.from_dict({**record.to_dict(), "lease_token": None})


def test_from_dict_rejects_bad_data():
    with pytest.raises(InvalidQueuedWorkError, match="must be a mapping"):
        QueuedWorkBatch.from_dict([])  # type: ignore[arg-type]
    with pytest.raises(InvalidQueuedWorkError, match="bad QueuedWorkBatchDraft data: KeyError"):
        QueuedWorkBatchDraft.from_dict({"session_id": "s1"})
    bad_payload = {
        "session_id": "s",
        "delivery_policy": "join",
        "slot_policy": "join",
        "payloads": [],
    }
    with pytest.raises(InvalidQueuedWorkError, match="delivery_policy must be one of"):
        QueuedWorkBatchDraft.from_dict(bad_payload)
    with pytest.raises(InvalidQueuedWorkError, match="bad QueuedWorkItem data"):
        QueuedWorkItem.from_dict({"item_id": "x", "payload": {"type": "image"}})
    item = QueuedWorkItem("b:item:1", TurnInput.text("a"))
    with pytest.raises(InvalidQueuedWorkError, match="item 0 of batch `b` has id `b:item:1`"):
        QueuedWorkBatch("b", "s", 1, None, ESB, JOIN, MergeKey.NEVER, 0, 0, (item,))


# --- statistics and records (the in-memory store's own view) -------------------------------------


async def test_statistics_and_records_follow_claims_and_leases(h):
    a = await h.add("a", slot=EXCL, source_key="k")
    await h.add("b", slot=EXCL, available_at_ms=T0 + 100)
    await h.add("c", session="s2")
    assert a.batch_id.startswith("qwb-") and a.enqueue_seq == 1
    assert await h.add("again", source_key="k") == a  # a replay takes no sequence number
    assert h.store.statistics() == QueueStatistics(
        sessions=2, batches=3, pending=3, claimed=0, lease_expired=0, next_enqueue_seq=4
    )
    claim = await h.claim(ttl=20, owner="worker-7")
    assert h.view() == [("a", "claimed", 1, claim.claim_id), ("b", "pending", 0, None)]
    assert h.store.state.record("s1", a.batch_id).owner_id == "worker-7"
    assert h.store.statistics() == QueueStatistics(2, 3, 2, 1, 0, 4)
    h.advance(20)
    assert h.view() == [("a", "lease_expired", 1, claim.claim_id), ("b", "pending", 0, None)]
    assert h.store.statistics() == QueueStatistics(2, 3, 3, 0, 1, 4)
    await h.store.complete_queued_work(claim.completion())
    assert h.store.statistics() == QueueStatistics(2, 2, 2, 0, 0, 4)


async def test_a_refused_renew_extends_no_record(h):
    await h.add("a")
    await h.add("b")
    old = await h.claim(ttl=10)
    h.advance(10)
    new = await h.claim(ttl=10, max_batches=1)
    before = h.view()
    assert before == [("a", "claimed", 2, new.claim_id), ("b", "lease_expired", 1, old.claim_id)]
    with pytest.raises(QueuedWorkClaimExpired, match="is no longer held"):
        await h.store.renew_queued_work_claim(old, 1_000)
    assert h.view() == before
    assert h.store.state.record("s1", old.batch_ids[1]).expires_at_ms == T0 + 10


async def test_the_builder_refuses_queue_stores_that_are_not_all_coroutines():
    class Plain(InMemoryQueueStore):
        def list_pending_queued_work(self, session_id):  # type: ignore[override]
            return []

    class Partial:
        async def enqueue_queued_work(self, draft):
            raise NotImplementedError

    for store, message in (
        (Plain(), r"Plain\.list_pending_queued_work must be a coroutine function"),
        (Partial(), "queue store Partial has no `claim_ready_queued_work` method"),
    ):
        with pytest.raises(LashRuntimeError, match=message) as info:
            await LashRuntime.builder().with_queue_store(store).build()
        assert info.value.code is RuntimeErrorCode.INVALID_CONFIGURATION
    runtime = await LashRuntime.builder().with_queue_store(InMemoryQueueStore()).build()
    assert isinstance(runtime.queue_store, QueuedWorkStore)


def test_record_refuses_a_token_that_does_not_exceed_its_counter():
    state = QueueState()
    batch = state.enqueue(draft("a"), now_ms=0)
    record = state.record("s1", batch.batch_id)
    record.claim("c1", "l1", "w", 10, 0, fencing_token=4)
    record.release(0)
    for token in (4, 3, 0):
        with pytest.raises(InvalidQueuedWorkError, match=f"fencing token {token} .* last token 4"):
            record.claim("c2", "l2", "w", 10, 0, fencing_token=token)
        assert (record.state(0), record.fencing_counter, record.claim_id) == (
            BatchState.PENDING,
            4,
            None,
        )
    record.claim("c3", "l3", "w", 10, 0)  # default: one more than the counter
    assert (record.fencing_counter, record.claim_id) == (5, "c3")


def test_a_batch_whose_counter_is_exhausted_is_not_claimed_with_a_repeated_token():
    state = QueueState()
    batch = state.enqueue(draft("a"), now_ms=0)
    state.enqueue(draft("b"), now_ms=0)
    state.record("s1", batch.batch_id).fencing_counter = 2**64 - 1  # as loaded from a row
    before = [r.to_dict() for r in state.records("s1")]
    with pytest.raises(InvalidQueuedWorkError, match="every fencing token up to 2\\*\\*64-1"):
        state.claim_ready("s1", "w", IDLE, 10, 2, now_ms=0)
    assert [r.to_dict() for r in state.records("s1")] == before
    assert state.cancel("s1", batch.batch_id, now_ms=0) == batch  # it can still be removed


# --- arguments, protocol, clock -----------------------------------------------------------------


def test_store_satisfies_protocol_with_coroutines():
    store = InMemoryQueueStore()
    assert isinstance(store, QueuedWorkStore)
    names = [n for n in vars(QueuedWorkStore) if n.endswith("_queued_work") or "queued_work_" in n]
    assert len(names) == 9
    for name in names:
        assert inspect.iscoroutinefunction(getattr(store, name)), name


def test_default_clock_is_wall_clock_epoch_ms():
    store = InMemoryQueueStore()
    before = time.time_ns() // 1_000_000
    batch = run(store.enqueue_queued_work(draft("a")))
    after = time.time_ns() // 1_000_000
    assert before <= batch.enqueued_at_ms <= after
    assert "batches=1" in repr(store)


def test_pure_core_takes_time_and_ids_as_arguments():
    counter = iter(range(100))
    state = QueueState(new_id=lambda prefix: f"{prefix}-{next(counter)}")
    batch = state.enqueue(draft("a"), now_ms=5)
    claim = state.claim_ready("s1", "w", IDLE, 10, 1, now_ms=6)
    assert (batch.batch_id, claim.claim_id, claim.lease_token, claim.expires_at_epoch_ms) == (
        "qwb-0",
        "qwc-1",
        "qwl-2",
        16,
    )
    assert state.pending_batches("s1", now_ms=15) == [] and state.pending_batches(
        "s1", now_ms=16
    ) == [batch]
    assert state.statistics(now_ms=16) == QueueStatistics(1, 1, 1, 0, 1, 2)
    state.complete(claim.completion(), now_ms=10_000)
    assert state.batches("s1") == []


# --- a zero lease -------------------------------------------------------------------------------


def test_zero_ttl_in_the_pure_core_next_to_a_one_ms_lease():
    state = QueueState()
    one = state.enqueue(draft("one", slot=EXCL), now_ms=5)
    zero = state.enqueue(draft("zero", slot=EXCL), now_ms=5)
    assert state.claim_ready("s1", "w", IDLE, 1, 1, now_ms=6).batch_ids == (one.batch_id,)
    first = state.claim_ready("s1", "w", IDLE, 0, 1, now_ms=6)
    assert (first.batch_ids, first.expires_at_epoch_ms) == ((zero.batch_id,), 6)
    rows = [state.record("s1", b.batch_id) for b in (one, zero)]
    assert [r.state(6) for r in rows] == [BatchState.CLAIMED, BatchState.LEASE_EXPIRED]
    assert [r.state(7) for r in rows] == [BatchState.LEASE_EXPIRED, BatchState.LEASE_EXPIRED]
    assert state.pending_batches("s1", now_ms=6) == [zero]
    assert state.statistics(now_ms=6) == QueueStatistics(1, 2, 1, 1, 1, 3)
    again = state.claim_ready("s1", "w2", IDLE, 0, 1, now_ms=6)  # the same instant: taken again
    assert (again.batch_ids, again.fencing_token) == ((zero.batch_id,), 2)


# --- id lists: never a bare string --------------------------------------------------------------


def listing(h: Harness) -> tuple:
    """Everything a refused call must leave alone: counters, and every row of both sessions."""
    rows = {s: [r.to_dict() for r in h.store.state.records(s)] for s in ("s1", "s2")}
    return h.store.statistics(), rows


async def busy(h: Harness) -> tuple[QueuedWorkBatch, QueuedWorkClaim, QueuedWorkClaim]:
    """A store with a live claim, an expired claim and pending work in two sessions."""
    a = await h.add("a", slot=EXCL, source_key="ka")
    await h.add("b", slot=EXCL)
    await h.add("c")
    await h.add("d")
    await h.add("z", session="s2")
    live = await h.claim(ttl=100)  # a
    expired = await h.claim(ttl=5)  # b
    h.advance(5)
    assert [row[1] for row in h.view()] == ["claimed", "lease_expired", "pending", "pending"]
    return a, expired, live


BAD_ID_LISTS = [
    (lambda head: head, "batch_ids must be a list or tuple of str, not a bare str"),
    (lambda head: head.encode(), "batch_ids must be a list or tuple of str, not a bare bytes"),
    (lambda head: bytearray(b"qwb"), "not a bare bytearray"),
    (lambda head: memoryview(b"qwb"), "not a bare memoryview"),
    (lambda head: [head.encode()], "batch_ids must be a list or tuple of str"),
    (lambda head: [head, 7], "batch_ids must be a list or tuple of str"),
    (lambda head: [None], "batch_ids must be a list or tuple of str"),
    (lambda head: {head}, "batch_ids must be a list or tuple of str"),  # a set has no order
    (lambda head: {head: 1}, "batch_ids must be a list or tuple of str"),
    (lambda head: iter([head]), "batch_ids must be a list or tuple of str"),
    (lambda head: None, "batch_ids must be a list or tuple of str"),
    (lambda head: [""], "batch_ids\\[0\\] must be a non-empty str"),
    (lambda head: [head, "qwb-\ud800"], "batch_ids\\[1\\] is not valid UTF-8"),
    (lambda head: [head, head], "batch_ids names `qwb-.*` more than once"),
]


@pytest.mark.parametrize(("make", "message"), BAD_ID_LISTS)
async def test_completion_refuses_bad_id_lists(h, make, message):
    *_, live = await busy(h)
    before = listing(h)
    with pytest.raises(InvalidQueuedWorkError, match=message):
        QueuedWorkCompletion("s1", live.claim_id, live.lease_token, make(live.batch_ids[0]))
    with pytest.raises(InvalidQueuedWorkError, match=message):
        dataclasses.replace(live.completion(), batch_ids=make(live.batch_ids[0]))
    assert listing(h) == before


def _batch(batch_id: str = "b", items=None) -> QueuedWorkBatch:
    items = [QueuedWorkItem(f"{batch_id}:item:0", TurnInput.text("x"))] if items is None else items
    return QueuedWorkBatch(batch_id, "s", 1, None, ESB, JOIN, MergeKey.NEVER, 0, 0, items)


def test_from_dict_refuses_a_string_where_a_list_belongs():
    batch = _batch()
    claim = QueuedWorkClaim("s", "c", "w", "l", 1, 0, 10, [batch])
    d, b, c, done = draft("a").to_dict(), batch.to_dict(), claim.to_dict(), claim.completion()
    cases = [
        (QueuedWorkBatchDraft, {**d, "payloads": "ab"}, "payloads must be a list, not str"),
        (QueuedWorkBatchDraft, {**d, "payloads": ""}, "payloads must be a list, not str"),
        (QueuedWorkBatchDraft, {**d, "payloads": {"type": "text"}}, "payloads must be a list"),
        (QueuedWorkBatch, {**b, "items": ""}, "items must be a list, not str"),  # was: no items
        (QueuedWorkBatch, {**b, "items": b["items"][0]}, "items must be a list, not dict"),
        (QueuedWorkClaim, {**c, "batches": ""}, "batches must be a list, not str"),
        (QueuedWorkClaim, {**c, "batches": "bb"}, "batches must be a list, not str"),
        (QueuedWorkCompletion, {**done.to_dict(), "batch_ids": "b"}, "not a bare str"),
        (QueuedWorkCompletion, {**done.to_dict(), "batch_ids": ["b", "b"]}, "more than once"),
    ]
    for cls, data, message in cases:
        with pytest.raises(InvalidQueuedWorkError, match=message):
            cls.from_dict(data)


def test_values_refuse_bare_strings_for_their_lists():
    for payloads in ("hello", b"hello", "", bytearray(b"h")):
        with pytest.raises(InvalidQueuedWorkError, match="payloads must .* TurnInput, not a bare"):
            QueuedWorkBatchDraft("s", ESB, JOIN, payloads)
    with pytest.raises(InvalidQueuedWorkError, match="items must .* QueuedWorkItem, not a bare"):
        _batch(items="b:item:0")
    with pytest.raises(InvalidQueuedWorkError, match="batches must .* QueuedWorkBatch, not a bare"):
        QueuedWorkClaim("s", "c", "w", "l", 1, 0, 10, "b")
    batch = _batch()
    with pytest.raises(InvalidQueuedWorkError, match="batch ids names `b` more than once"):
        QueuedWorkClaim("s", "c", "w", "l", 1, 0, 10, [batch, batch])  # completion() would be bad


# --- every store operation checks its arguments before it changes anything ----------------------


def test_every_core_operation_refuses_a_bad_now_and_changes_nothing():
    state = QueueState()
    a = state.enqueue(draft("a", source_key="k", slot=EXCL), now_ms=0)
    state.enqueue(draft("b", slot=EXCL), now_ms=0)
    state.enqueue(draft("c"), now_ms=0)
    live = state.claim_ready("s1", "w", IDLE, 100, 1, now_ms=0)
    expired = state.claim_ready("s1", "w", IDLE, 5, 1, now_ms=0)

    def snapshot():
        return state.statistics(6), [r.to_dict() for r in state.records("s1")]

    before = snapshot()
    assert before[0] == QueueStatistics(1, 3, 2, 1, 1, 4)
    for now in (None, -1, 1.5, True, "6", 2**64):
        calls = [
            lambda: state.enqueue(draft("c"), now),
            lambda: state.claim_ready("s1", "w", IDLE, 100, 2, now),
            lambda: state.claim_ready_by_batch_ids("s1", "w", IDLE, 100, [a.batch_id], now),
            lambda: state.renew(live, 100, now),
            lambda: state.abandon(live, now),
            lambda: state.abandon(expired, now),
            lambda: state.complete(live.completion(), now),
            lambda: state.cancel("s1", a.batch_id, now),
            lambda: state.pending_batches("s1", now),
            lambda: state.statistics(now),
        ]
        for call in calls:
            with pytest.raises(InvalidQueuedWorkError, match="now_ms must be an int in 0"):
                call()
            assert snapshot() == before
    record = state.record("s1", live.batch_ids[0])
    for move in (
        lambda: record.renew(50, None),
        lambda: record.release("5"),
        lambda: record.complete(-1),
    ):
        with pytest.raises(InvalidQueuedWorkError, match="now_ms"):
            move()
        assert snapshot() == before


def test_bad_ids_from_an_injected_id_source_change_nothing():
    made = iter(["qwb-1", "qwb-2", "", "qwl-x", "qwc-3", "qwl-3"])
    state = QueueState(new_id=lambda prefix: next(made))
    state.enqueue(draft("a"), now_ms=0)
    state.enqueue(draft("b"), now_ms=0)
    before = [r.to_dict() for r in state.records("s1")]
    with pytest.raises(InvalidQueuedWorkError, match="claim_id must be a non-empty str"):
        state.claim_ready("s1", "w", IDLE, 100, 2, now_ms=0)
    assert [r.to_dict() for r in state.records("s1")] == before  # no half-made lease
    claim = state.claim_ready("s1", "w", IDLE, 100, 2, now_ms=0)
    assert (claim.claim_id, claim.lease_token, claim.fencing_token) == ("qwc-3", "qwl-3", 1)


def test_batch_record_claim_validates_before_it_changes_anything():
    state = QueueState()
    batch = state.enqueue(draft("a"), now_ms=0)
    record = state.record("s1", batch.batch_id)
    before = _record_fields(record)
    for args, message in [
        (("", "l", "w", 10, 0), "claim_id"),
        (("c", None, "w", 10, 0), "lease_token"),
        (("c", "l", "w\ud800", 10, 0), "owner_id"),
        (("c", "l", "w", -1, 0), "expires_at_ms"),
        (("c", "l", "w", 10, None), "now_ms"),
    ]:
        with pytest.raises(InvalidQueuedWorkError, match=message):
            record.claim(*args)
        assert _record_fields(record) == before
    with pytest.raises(InvalidQueuedWorkError, match="fencing_token"):
        record.claim("c", "l", "w", 10, 0, fencing_token=True)
    assert _record_fields(record) == before


# --- lifecycle table ----------------------------------------------------------------------------

EXPECTED_TRANSITIONS = {
    ("pending", "claim"): "claimed",
    ("pending", "cancel"): "cancelled",
    ("claimed", "renew"): "claimed",
    ("claimed", "abandon"): "pending",
    ("claimed", "complete"): "completed",
    ("lease_expired", "claim"): "claimed",
    ("lease_expired", "renew"): "claimed",
    ("lease_expired", "abandon"): "pending",
    ("lease_expired", "complete"): "completed",
    ("lease_expired", "cancel"): "cancelled",
}


@pytest.mark.parametrize("state", list(BatchState))
@pytest.mark.parametrize("event", list(BatchEvent))
def test_transition_table(state, event):
    expected = EXPECTED_TRANSITIONS.get((state.value, event.value))
    if expected is None:
        assert (state, event) not in BATCH_TRANSITIONS
        with pytest.raises(
            IllegalBatchTransition, match=f"batch `b1` cannot go from `{state}` by `{event}`"
        ):
            next_batch_state("b1", state, event)
    else:
        assert next_batch_state("b1", state, event) is BatchState(expected)


def _record_fields(record: BatchRecord) -> tuple:
    return tuple(getattr(record, f.name) for f in dataclasses.fields(record))


def test_illegal_moves_raise_and_leave_the_record_unchanged():
    state = QueueState()
    batch = state.enqueue(draft("a"), now_ms=0)
    record = state.record("s1", batch.batch_id)
    illegal_on_pending = [
        lambda: record.renew(50, 0),
        lambda: record.release(0),
        lambda: record.complete(0),
    ]
    for move in illegal_on_pending:
        before = _record_fields(record)
        with pytest.raises(IllegalBatchTransition, match="from `pending`"):
            move()
        assert _record_fields(record) == before and record.state(0) is BatchState.PENDING
    record.claim("c1", "l1", "w", expires_at_ms=10, now_ms=0)
    assert (record.state(9), record.state(10)) == (BatchState.CLAIMED, BatchState.LEASE_EXPIRED)
    for move in (lambda: record.claim("c2", "l2", "w", 20, 5), lambda: record.cancel(5)):
        before = _record_fields(record)
        with pytest.raises(IllegalBatchTransition, match="from `claimed`"):
            move()
        assert _record_fields(record) == before
    record.complete(10)
    assert record.state(10) is BatchState.COMPLETED
    for event_move in (lambda: record.claim("c3", "l3", "w", 99, 11), lambda: record.cancel(11)):
        with pytest.raises(IllegalBatchTransition, match="from `completed`"):
            event_move()
    assert (record.claim_id, record.fencing_counter) == ("c1", 1)


# --- properties ---------------------------------------------------------------------------------

draft_specs = st.lists(
    st.tuples(
        st.sampled_from(["s1", "s2", "s3"]),
        st.integers(1, 4),
        st.one_of(st.none(), st.sampled_from(["k1", "k2"])),
    ),
    max_size=25,
)


@given(draft_specs)
@settings(max_examples=100, deadline=None)
def test_item_ids_and_enqueue_seq_order(specs):
    store = InMemoryQueueStore(clock_ms=lambda: T0)
    seen_seq = 0
    by_key: dict[tuple[str, str], QueuedWorkBatch] = {}
    for n, (session, count, key) in enumerate(specs):
        batch = run(
            store.enqueue_queued_work(
                draft(f"p{n}", session, more=[f"p{n}.{i}" for i in range(1, count)], source_key=key)
            )
        )
        assert [i.item_id for i in batch.items] == [
            f"{batch.batch_id}:item:{i}" for i in range(len(batch.items))
        ]
        if key is not None and (session, key) in by_key:
            assert batch == by_key[(session, key)]
            continue
        assert batch.enqueue_seq > seen_seq and len(batch.items) == count
        seen_seq = batch.enqueue_seq
        if key is not None:
            by_key[(session, key)] = batch
    all_ids = []
    for session in ("s1", "s2", "s3"):
        listed = run(store.list_queued_work(session))
        seqs = [b.enqueue_seq for b in listed]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        all_ids += [b.batch_id for b in listed]
    assert len(set(all_ids)) == len(all_ids) == store.statistics().batches


# --- stateful model -----------------------------------------------------------------------------


class InMemoryQueueMachine(QueueMachine):
    """``QueueMachine`` (tests/conformance/queue_model.py) plus the in-memory store's own view:
    each record's fencing counter and claim id, and the statistics."""

    def check_store(self):
        live = sum(b.live(self.now) for b in self.model)
        expired = sum(b.holder is not None and not b.live(self.now) for b in self.model)
        for session in self.SESSIONS:
            records = self.store.state.records(session)
            assert [(r.fencing_counter, r.claim_id) for r in records] == [
                (b.fencing, b.holder and b.holder[0]) for b in self.session_batches(session)
            ]
        assert self.store.statistics() == QueueStatistics(
            sessions=len({b.session for b in self.model}),
            batches=len(self.model),
            pending=len(self.model) - live,
            claimed=live,
            lease_expired=expired,
            next_enqueue_seq=self.last_seq + 1,
        )


def test_in_memory_queue_model():
    # fewer examples than the conformance run: the rules are the same, only the checks are more
    run_queue_model(InMemoryQueueStoreFactory(), InMemoryQueueMachine, max_examples=150)


def test_a_broken_clock_is_a_typed_error():
    store = InMemoryQueueStore(clock_ms=lambda: None)
    with pytest.raises(InvalidQueuedWorkError, match="clock_ms"):
        run(store.list_pending_queued_work("s1"))
    store = InMemoryQueueStore(clock_ms=lambda: -5)
    with pytest.raises(InvalidQueuedWorkError, match="clock_ms"):
        run(store.cancel_queued_work_batch("s1", "b"))
