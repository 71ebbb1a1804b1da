"""Queued work: scenario tests for each rule of spec section 5, then a Hypothesis model check."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

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


# --- enqueue ------------------------------------------------------------------------------------


async def test_enqueue_assigns_increasing_seq_ids_and_times(h):
    a = await h.add("a", more=("a2",))
    h.advance(7)
    b = await h.add("b", session="s2")
    c = await h.add("c", source_key="k", merge_key=MergeKey.group("g"), available_at_ms=5_000)
    assert (a.enqueue_seq, b.enqueue_seq, c.enqueue_seq) == (1, 2, 3)
    assert [i.item_id for i in a.items] == [f"{a.batch_id}:item:0", f"{a.batch_id}:item:1"]
    assert a.payloads == (TurnInput.text("a"), TurnInput.text("a2"))
    assert a.batch_id.startswith("qwb-") and len({a.batch_id, b.batch_id, c.batch_id}) == 3
    assert (a.enqueued_at_ms, b.enqueued_at_ms) == (T0, T0 + 7)
    assert (c.source_key, c.merge_key, c.available_at_ms, c.delivery_policy, c.slot_policy) == (
        "k",
        MergeKey.group("g"),
        5_000,
        ESB,
        JOIN,
    )
    assert h.view() == [("a", "pending", 0, None), ("c", "pending", 0, None)]
    assert h.view("s2") == [("b", "pending", 0, None)]
    assert await h.store.list_queued_work("s1") == [a, c]
    assert await h.store.list_queued_work("nobody") == []
    assert h.store.statistics() == QueueStatistics(
        sessions=2, batches=3, pending=3, claimed=0, lease_expired=0, next_enqueue_seq=4
    )


async def test_enqueue_rejects_non_drafts(h):
    with pytest.raises(InvalidQueuedWorkError, match="expected a QueuedWorkBatchDraft, not dict"):
        await h.store.enqueue_queued_work({"session_id": "s1"})  # type: ignore[arg-type]
    assert h.store.statistics().batches == 0


async def test_source_key_returns_existing_batch_unchanged(h):
    first = await h.add("a", source_key="k")
    again = await h.add("different", source_key="k", slot=EXCL, delivery=ACTC)
    assert again == first and again.payloads == (TurnInput.text("a"),)
    other_session = await h.add("a", session="s2", source_key="k")
    assert other_session.batch_id != first.batch_id and other_session.enqueue_seq == 2
    plain = await h.add("b")
    assert plain.enqueue_seq == 3  # the deduplicated enqueue consumed no sequence number
    assert h.view() == [("a", "pending", 0, None), ("b", "pending", 0, None)]
    # a claimed batch still deduplicates
    claim = await h.claim(max_batches=1)
    assert await h.add("x", source_key="k") == first
    # once completed (removed) the key is free again
    await h.store.complete_queued_work(claim.completion())
    fresh = await h.add("c", source_key="k")
    assert fresh.batch_id != first.batch_id and fresh.enqueue_seq == 4
    assert h.view() == [("b", "pending", 0, None), ("c", "pending", 0, None)]
    # ... and likewise once cancelled
    assert await h.store.cancel_queued_work_batch("s1", fresh.batch_id) == fresh
    assert (await h.add("d", source_key="k")).enqueue_seq == 5


# --- claims -------------------------------------------------------------------------------------


async def test_claim_with_max_batches_zero_or_empty_queue_is_none(h):
    assert await h.claim() is None
    await h.add("a")
    assert await h.claim(max_batches=0) is None
    assert h.view() == [("a", "pending", 0, None)]


async def test_claim_fields_and_lease_window(h):
    a = await h.add("a")
    claim = await h.claim(ttl=250, owner="worker-7")
    assert claim == QueuedWorkClaim(
        session_id="s1",
        claim_id=claim.claim_id,
        owner_id="worker-7",
        lease_token=claim.lease_token,
        fencing_token=1,
        claimed_at_epoch_ms=T0,
        expires_at_epoch_ms=T0 + 250,
        batches=(a,),
    )
    assert claim.batch_ids == (a.batch_id,) and claim.claim_id != claim.lease_token
    assert h.view() == [("a", "claimed", 1, claim.claim_id)]
    assert h.store.state.record("s1", a.batch_id).owner_id == "worker-7"
    h.advance(249)
    assert h.view() == [("a", "claimed", 1, claim.claim_id)] and await h.claim() is None
    h.advance(1)  # live while expires_at > now: at expires_at it is over
    assert h.view() == [("a", "lease_expired", 1, claim.claim_id)]
    assert h.store.statistics() == QueueStatistics(1, 1, 1, 0, 1, 2)


async def test_head_skips_unavailable_batches_without_blocking(h):
    await h.add("later", slot=EXCL, available_at_ms=T0 + 50)
    await h.add("now", slot=EXCL)
    first = await h.claim()
    assert labels_of(first) == ["now"]
    assert await h.claim() is None
    h.advance(50)  # available_at_ms <= now
    second = await h.claim()
    assert labels_of(second) == ["later"]
    assert h.view() == [
        ("later", "claimed", 1, second.claim_id),
        ("now", "claimed", 1, first.claim_id),
    ]


async def test_head_skips_leased_batches(h):
    await h.add("a", slot=EXCL)
    await h.add("b", slot=EXCL)
    c1, c2 = await h.claim(), await h.claim()
    assert (labels_of(c1), labels_of(c2)) == (["a"], ["b"])
    assert c1.claim_id != c2.claim_id and c1.lease_token != c2.lease_token
    assert await h.claim() is None
    assert h.view() == [("a", "claimed", 1, c1.claim_id), ("b", "claimed", 1, c2.claim_id)]


async def test_checkpoint_blocks_on_a_head_that_waits_for_commit(h):
    await h.add("commit-first", delivery=ACTC, slot=EXCL)
    await h.add("safe", delivery=ESB, slot=EXCL)
    assert await h.claim(boundary=CHECKPOINT) is None  # later batches are not considered
    assert h.view() == [("commit-first", "pending", 0, None), ("safe", "pending", 0, None)]
    idle = await h.claim(boundary=IDLE)
    assert labels_of(idle) == ["commit-first"]
    checkpoint = await h.claim(boundary=CHECKPOINT)  # the leased head is skipped
    assert labels_of(checkpoint) == ["safe"]
    assert h.view() == [
        ("commit-first", "claimed", 1, idle.claim_id),
        ("safe", "claimed", 1, checkpoint.claim_id),
    ]


async def test_checkpoint_head_is_chosen_after_skipping_unavailable_batches(h):
    await h.add("not-yet", delivery=ACTC, available_at_ms=T0 + 10)
    await h.add("safe", delivery=ESB)
    claim = await h.claim(boundary=CHECKPOINT)
    assert labels_of(claim) == ["safe"]
    h.advance(10)
    assert await h.claim(boundary=CHECKPOINT) is None
    assert labels_of(await h.claim(boundary=IDLE)) == ["not-yet"]


async def test_join_head_gathers_following_batches_up_to_max(h):
    for label in "abcd":
        await h.add(label)
    claim = await h.claim(max_batches=3)
    assert labels_of(claim) == ["a", "b", "c"]
    assert claim.fencing_token == 1
    assert h.view() == [
        ("a", "claimed", 1, claim.claim_id),
        ("b", "claimed", 1, claim.claim_id),
        ("c", "claimed", 1, claim.claim_id),
        ("d", "pending", 0, None),
    ]
    assert await h.labels(pending=True) == ["d"]


@pytest.mark.parametrize(
    ("breaker", "why"),
    [
        (dict(slot=EXCL), "exclusive"),
        (dict(delivery=ACTC), "other delivery policy"),
        (dict(merge_key=MergeKey.group("g")), "other merge key"),
        (dict(merge_key=MergeKey.PAYLOAD_DEFAULT), "payload_default is not never"),
        (dict(available_at_ms=T0 + 1), "not yet available"),
    ],
)
async def test_join_gathering_stops_at_first_batch_that_differs(h, breaker, why):
    await h.add("a")
    await h.add("b")
    await h.add("x", **breaker)
    await h.add("c")  # would match the head, but gathering already stopped
    claim = await h.claim()
    assert labels_of(claim) == ["a", "b"], why
    assert [row[1] for row in h.view()] == ["claimed", "claimed", "pending", "pending"]


async def test_join_gathering_stops_at_a_leased_batch(h):
    await h.add("a", slot=EXCL)
    await h.add("b")
    await h.add("c")
    await h.add("d")
    await h.claim(max_batches=1)  # a
    held = await h.store.claim_ready_queued_work("s1", "w", IDLE, 100, 1)  # b
    assert labels_of(held) == ["b"]
    await h.store.abandon_queued_work_claim(await h.claim())  # c, d, then release them
    abandoned = [row[:3] for row in h.view()]
    assert abandoned == [
        ("a", "claimed", 1),
        ("b", "claimed", 1),
        ("c", "pending", 1),
        ("d", "pending", 1),
    ]
    await h.store.abandon_queued_work_claim(held)
    # now b is free but a is leased: the head is b, and it gathers c and d
    assert labels_of(await h.claim()) == ["b", "c", "d"]


async def test_join_with_equal_group_keys_and_default_never_keys_merge(h):
    await h.add("a", merge_key=MergeKey.group("g"))
    await h.add("b", merge_key=MergeKey.group("g"))
    await h.add("c")  # MergeKey.NEVER
    await h.add("d")  # MergeKey.NEVER equals MergeKey.NEVER
    assert labels_of(await h.claim()) == ["a", "b"]
    assert labels_of(await h.claim()) == ["c", "d"]


async def test_exclusive_head_is_claimed_alone(h):
    await h.add("x", slot=EXCL)
    await h.add("a")
    assert labels_of(await h.claim()) == ["x"]
    assert labels_of(await h.claim()) == ["a"]


async def test_fencing_token_is_max_counter_plus_one_and_every_claimed_counter_takes_it(h):
    a = await h.add("a")
    await h.add("b")
    c1 = await h.claim(max_batches=1)
    assert c1.fencing_token == 1
    await h.store.abandon_queued_work_claim(c1)
    assert h.view() == [("a", "pending", 1, None), ("b", "pending", 0, None)]
    c2 = await h.claim(max_batches=2)
    assert (labels_of(c2), c2.fencing_token) == (["a", "b"], 2)
    assert h.view() == [("a", "claimed", 2, c2.claim_id), ("b", "claimed", 2, c2.claim_id)]
    h.advance(100)  # c2's lease expires; re-claims always carry a larger token
    c3 = await h.claim(max_batches=2)
    assert (labels_of(c3), c3.fencing_token) == (["a", "b"], 3)
    assert h.view() == [("a", "claimed", 3, c3.claim_id), ("b", "claimed", 3, c3.claim_id)]
    h.advance(100)
    assert await h.store.cancel_queued_work_batch("s1", a.batch_id) == a
    c4 = await h.claim()  # b is the head now, alone
    assert (labels_of(c4), c4.fencing_token) == (["b"], 4)
    assert h.view() == [("b", "claimed", 4, c4.claim_id)]


async def test_group_token_exceeds_every_token_a_follower_already_had(h):
    """The hardening issue's case: the head's counter alone gave [A, B] token 2 after B had 5."""
    await h.add("A")
    await h.add("B")
    ca = await h.claim(max_batches=1)
    assert (labels_of(ca), ca.fencing_token) == (["A"], 1)
    for expected in range(1, 6):  # A is leased, so B heads its own claim each time
        cb = await h.claim(max_batches=1, owner=f"b{expected}")
        assert (labels_of(cb), cb.fencing_token) == (["B"], expected)
        await h.store.abandon_queued_work_claim(cb)
    await h.store.abandon_queued_work_claim(ca)
    assert h.view() == [("A", "pending", 1, None), ("B", "pending", 5, None)]
    both = await h.claim(max_batches=2)
    assert (labels_of(both), both.fencing_token) == (["A", "B"], 6)
    assert h.view() == [("A", "claimed", 6, both.claim_id), ("B", "claimed", 6, both.claim_id)]
    h.advance(100)  # expired: the next claim of either batch goes higher still
    again = await h.claim(max_batches=1)
    assert (labels_of(again), again.fencing_token) == (["A"], 7)
    assert h.view() == [
        ("A", "claimed", 7, again.claim_id),
        ("B", "lease_expired", 6, both.claim_id),
    ]


async def test_group_token_by_batch_ids_also_exceeds_the_followers_tokens(h):
    a, b = await h.add("a"), await h.add("b")
    ca = await h.claim(max_batches=1)
    for _ in range(3):
        await h.store.abandon_queued_work_claim(await h.claim(max_batches=1))  # b: 1, 2, 3
    await h.store.abandon_queued_work_claim(ca)
    claim = await h.store.claim_ready_queued_work_by_batch_ids(
        "s1", "w", IDLE, 100, [a.batch_id, b.batch_id]
    )
    assert claim.fencing_token == 4
    assert h.view() == [("a", "claimed", 4, claim.claim_id), ("b", "claimed", 4, claim.claim_id)]


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


# --- claim by batch ids -------------------------------------------------------------------------


async def test_claim_by_batch_ids_returns_exact_group(h):
    a, b = await h.add("a"), await h.add("b")
    await h.add("c")
    claim = await h.store.claim_ready_queued_work_by_batch_ids(
        "s1", "w", IDLE, 100, [a.batch_id, b.batch_id]
    )
    assert claim.batch_ids == (a.batch_id, b.batch_id) and claim.fencing_token == 1
    assert h.view() == [
        ("a", "claimed", 1, claim.claim_id),
        ("b", "claimed", 1, claim.claim_id),
        ("c", "pending", 0, None),
    ]


async def test_claim_by_batch_ids_mismatch_claims_then_abandons(h):
    a, b = await h.add("a"), await h.add("b")
    skip_head = await h.store.claim_ready_queued_work_by_batch_ids(
        "s1", "w", IDLE, 100, [b.batch_id]
    )
    assert skip_head is None
    assert h.view() == [("a", "pending", 1, None), ("b", "pending", 0, None)]  # a's counter moved
    wrong_order = await h.store.claim_ready_queued_work_by_batch_ids(
        "s1", "w", IDLE, 100, [b.batch_id, a.batch_id]
    )
    assert wrong_order is None
    assert h.view() == [("a", "pending", 2, None), ("b", "pending", 2, None)]
    assert await h.store.claim_ready_queued_work_by_batch_ids("s1", "w", IDLE, 100, []) is None
    assert await h.labels(pending=True) == ["a", "b"]
    claim = await h.store.claim_ready_queued_work_by_batch_ids("s1", "w", IDLE, 100, (a.batch_id,))
    assert claim.batch_ids == (a.batch_id,) and claim.fencing_token == 3


async def test_claim_by_batch_ids_mismatch_drops_an_expired_lease(h):
    a = await h.add("a", slot=EXCL)
    old = await h.claim(ttl=10)
    h.advance(10)
    assert (
        await h.store.claim_ready_queued_work_by_batch_ids("s1", "w", IDLE, 100, ["other"]) is None
    )
    assert h.view() == [("a", "pending", 2, None)]
    with pytest.raises(QueuedWorkClaimExpired):
        await h.store.renew_queued_work_claim(old, 10)
    assert a.batch_id in [b.batch_id for b in await h.store.list_pending_queued_work("s1")]


# --- renew, abandon, complete -------------------------------------------------------------------


async def test_renew_extends_lease_and_keeps_identity(h):
    await h.add("a")
    claim = await h.claim(ttl=100)
    h.advance(60)
    renewed = await h.store.renew_queued_work_claim(claim, 500)
    assert renewed == dataclasses.replace(claim, expires_at_epoch_ms=T0 + 60 + 500)
    h.advance(400)
    assert h.view() == [("a", "claimed", 1, claim.claim_id)]
    assert await h.claim() is None


async def test_renew_after_expiry_still_counts_when_nobody_reclaimed(h):
    await h.add("a")
    claim = await h.claim(ttl=10)
    h.advance(30)
    assert h.view() == [("a", "lease_expired", 1, claim.claim_id)]
    renewed = await h.store.renew_queued_work_claim(claim, 10)
    assert renewed.expires_at_epoch_ms == T0 + 40
    assert h.view() == [("a", "claimed", 1, claim.claim_id)]


async def test_renew_of_a_reclaimed_batch_raises_and_changes_nothing(h):
    await h.add("a")
    await h.add("b")
    old = await h.claim(ttl=10)
    h.advance(10)
    new = await h.claim(ttl=10, max_batches=1)  # takes only a; b is still held (expired) by old
    before = h.view()
    assert before == [("a", "claimed", 2, new.claim_id), ("b", "lease_expired", 1, old.claim_id)]
    with pytest.raises(
        QueuedWorkClaimExpired, match=f"claim `{old.claim_id}` of session `s1` is no longer held"
    ) as err:
        await h.store.renew_queued_work_claim(old, 1_000)
    assert (err.value.session_id, err.value.claim_id) == ("s1", old.claim_id)
    assert h.view() == before
    assert h.store.state.record("s1", old.batch_ids[1]).expires_at_ms == T0 + 10  # not extended


async def test_renew_rejects_forged_tokens_and_bad_ttl(h):
    await h.add("a")
    claim = await h.claim()
    with pytest.raises(QueuedWorkClaimExpired):
        await h.store.renew_queued_work_claim(dataclasses.replace(claim, lease_token="forged"), 10)
    with pytest.raises(QueuedWorkClaimExpired):
        await h.store.renew_queued_work_claim(dataclasses.replace(claim, session_id="s2"), 10)
    for ttl in (-1, 1.5, True, None, "10", 2**64):
        with pytest.raises(InvalidQueuedWorkError, match="lease_ttl_ms must be an int in 0"):
            await h.store.renew_queued_work_claim(claim, ttl)
    assert h.view() == [("a", "claimed", 1, claim.claim_id)]
    assert h.store.state.record("s1", claim.batch_ids[0]).expires_at_ms == T0 + 100


async def test_abandon_releases_only_what_the_claim_still_holds(h):
    await h.add("a")
    await h.add("b")
    old = await h.claim(ttl=10)
    h.advance(10)
    new = await h.claim(max_batches=1)
    await h.store.abandon_queued_work_claim(old)  # releases b, leaves new's a alone
    assert h.view() == [("a", "claimed", 2, new.claim_id), ("b", "pending", 1, None)]
    await h.store.abandon_queued_work_claim(old)  # nothing held: no error, no change
    assert h.view() == [("a", "claimed", 2, new.claim_id), ("b", "pending", 1, None)]
    await h.store.abandon_queued_work_claim(new)
    assert await h.labels(pending=True) == ["a", "b"]


async def test_complete_removes_the_claimed_batches(h):
    await h.add("a")
    await h.add("b")
    await h.add("c", slot=EXCL)
    claim = await h.claim()
    await h.store.complete_queued_work(claim.completion())
    assert h.view() == [("c", "pending", 0, None)]
    with pytest.raises(QueuedWorkClaimExpired):  # completing twice: no longer held
        await h.store.complete_queued_work(claim.completion())
    assert h.view() == [("c", "pending", 0, None)]


async def test_complete_after_expiry_counts_when_nobody_reclaimed(h):
    await h.add("a")
    claim = await h.claim(ttl=5)
    h.advance(1_000)
    await h.store.complete_queued_work(claim.completion())
    assert h.view() == [] and h.store.statistics().sessions == 0


async def test_complete_with_one_batch_lost_removes_nothing(h):
    await h.add("a")
    await h.add("b")
    old = await h.claim(ttl=10)
    h.advance(10)
    new = await h.claim(max_batches=1)
    before = h.view()
    with pytest.raises(QueuedWorkClaimExpired, match=old.claim_id):
        await h.store.complete_queued_work(old.completion())
    assert (
        h.view()
        == before
        == [("a", "claimed", 2, new.claim_id), ("b", "lease_expired", 1, old.claim_id)]
    )


# --- cancel and lists ---------------------------------------------------------------------------


async def test_cancel_rules(h):
    a = await h.add("a", slot=EXCL)
    b = await h.add("b", slot=EXCL)
    assert await h.store.cancel_queued_work_batch("s1", "qwb-unknown") is None
    assert await h.store.cancel_queued_work_batch("s2", a.batch_id) is None  # wrong session
    claim = await h.claim(ttl=10)
    assert (
        await h.store.cancel_queued_work_batch("s1", a.batch_id) is None
    )  # live lease protects it
    assert h.view() == [("a", "claimed", 1, claim.claim_id), ("b", "pending", 0, None)]
    assert await h.store.cancel_queued_work_batch("s1", b.batch_id) == b
    assert h.view() == [("a", "claimed", 1, claim.claim_id)]
    h.advance(10)
    assert (
        await h.store.cancel_queued_work_batch("s1", a.batch_id) == a
    )  # an expired lease does not
    assert h.view() == [] and await h.store.list_queued_work("s1") == []
    with pytest.raises(QueuedWorkClaimExpired):
        await h.store.complete_queued_work(claim.completion())
    assert await h.store.cancel_queued_work_batch("s1", a.batch_id) is None  # already gone


async def test_list_and_list_pending(h):
    await h.add("a", slot=EXCL)
    await h.add("b", slot=EXCL, available_at_ms=T0 + 100)
    await h.add("c", slot=EXCL)
    await h.claim(ttl=20)  # a
    assert await h.labels() == ["a", "b", "c"]
    assert await h.labels(pending=True) == ["b", "c"]  # unavailable is still pending
    h.advance(20)
    assert await h.labels(pending=True) == ["a", "b", "c"]  # an expired lease is pending again
    assert h.store.statistics() == QueueStatistics(1, 3, 3, 0, 1, 4)


# --- arguments, protocol, clock -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(ttl=-5), "lease_ttl_ms must be an int in 0"),
        (dict(ttl=1.5), "lease_ttl_ms must be an int in 0"),
        (dict(ttl=True), "lease_ttl_ms must be an int in 0"),
        (dict(ttl=False), "lease_ttl_ms must be an int in 0"),
        (dict(ttl="100"), "lease_ttl_ms must be an int in 0"),
        (dict(ttl=2**64), "lease_ttl_ms must be an int in 0"),
        (dict(max_batches=-1), "max_batches must be an int in 0"),
        (dict(max_batches=None), "max_batches must be an int in 0"),
        (dict(max_batches=True), "max_batches must be an int in 0"),
        (dict(max_batches=False), "max_batches must be an int in 0"),
        (dict(max_batches=2.0), "max_batches must be an int in 0"),
        (dict(max_batches="2"), "max_batches must be an int in 0"),
        (dict(session=""), "session_id must be a non-empty str"),
        (dict(session="s\ud800"), "session_id is not valid UTF-8"),
        (dict(session=b"s1"), "session_id must be a non-empty str"),
        (dict(session=None), "session_id must be a non-empty str"),
        (dict(owner="w\udfff"), "owner_id is not valid UTF-8"),
        (dict(owner=None), "owner_id must be a non-empty str"),
        (dict(boundary=None), "boundary must be one of"),
        (dict(boundary="whenever"), "boundary must be one of"),
        (dict(owner=""), "owner_id must be a non-empty str"),
    ],
)
async def test_claim_argument_validation(h, kwargs, message):
    await h.add("a")
    with pytest.raises(InvalidQueuedWorkError, match=message):
        await h.claim(**kwargs)
    assert h.view() == [("a", "pending", 0, None)]


async def test_string_boundary_is_accepted(h):
    await h.add("a")
    claim = await h.store.claim_ready_queued_work("s1", "w", "active_turn_checkpoint", 10, 1)
    assert labels_of(claim) == ["a"]


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


async def test_zero_ttl_claim_is_returned_and_expired_at_once(h):
    """ttl 0 (accepted, as in Rust): expires_at == now, and "expires_at > now" is false at once."""
    a = await h.add("a", slot=EXCL)
    first = await h.claim(ttl=0, owner="w1")
    assert first == QueuedWorkClaim(
        session_id="s1",
        claim_id=first.claim_id,
        owner_id="w1",
        lease_token=first.lease_token,
        fencing_token=1,
        claimed_at_epoch_ms=T0,
        expires_at_epoch_ms=T0,
        batches=(a,),
    )
    assert h.view() == [("a", "lease_expired", 1, first.claim_id)]  # held, never live
    assert h.store.statistics() == QueueStatistics(1, 1, 1, 0, 1, 2)
    assert await h.labels(pending=True) == ["a"]
    # within the same millisecond another owner re-claims it, with a larger token
    second = await h.claim(ttl=0, owner="w2")
    assert second.batch_ids == (a.batch_id,) and second.fencing_token == 2
    assert h.view() == [("a", "lease_expired", 2, second.claim_id)]
    assert h.store.state.record("s1", a.batch_id).owner_id == "w2"
    with pytest.raises(QueuedWorkClaimExpired, match=first.claim_id):
        await h.store.complete_queued_work(first.completion())
    with pytest.raises(QueuedWorkClaimExpired, match=first.claim_id):
        await h.store.renew_queued_work_claim(first, 1_000)
    assert h.view() == [("a", "lease_expired", 2, second.claim_id)]
    assert await h.labels(pending=True) == ["a"]
    assert await h.store.cancel_queued_work_batch("s1", a.batch_id) == a  # nothing protects it
    assert h.view() == [] and await h.store.list_queued_work("s1") == []
    with pytest.raises(QueuedWorkClaimExpired, match=second.claim_id):
        await h.store.complete_queued_work(second.completion())


async def test_zero_ttl_lease_is_still_held_by_its_claim_until_someone_reclaims(h):
    await h.add("a")
    await h.add("b")
    claim = await h.claim(ttl=0)
    assert (labels_of(claim), claim.expires_at_epoch_ms) == (["a", "b"], T0)
    renewed = await h.store.renew_queued_work_claim(claim, 0)  # held, so renew succeeds ...
    assert renewed == claim
    assert [row[1] for row in h.view()] == ["lease_expired", "lease_expired"]  # ... still not live
    h.advance(5)
    renewed = await h.store.renew_queued_work_claim(claim, 1)
    assert renewed.expires_at_epoch_ms == T0 + 6
    assert [row[1] for row in h.view()] == ["claimed", "claimed"]  # live at T0+5: 6 > 5
    assert await h.claim() is None and await h.labels(pending=True) == []
    h.advance(1)  # at expires_at the lease is over
    assert [row[1] for row in h.view()] == ["lease_expired", "lease_expired"]
    await h.store.complete_queued_work(claim.completion())  # nobody re-claimed: still counts
    assert h.view() == []


async def test_zero_ttl_claim_by_batch_ids(h):
    a, b = await h.add("a"), await h.add("b")
    first = await h.store.claim_ready_queued_work_by_batch_ids(
        "s1", "w1", IDLE, 0, [a.batch_id, b.batch_id]
    )
    assert (first.batch_ids, first.fencing_token, first.expires_at_epoch_ms) == (
        (a.batch_id, b.batch_id),
        1,
        T0,
    )
    assert await h.labels(pending=True) == ["a", "b"]
    second = await h.store.claim_ready_queued_work_by_batch_ids(
        "s1", "w2", IDLE, 0, (a.batch_id, b.batch_id)
    )
    assert second.fencing_token == 2
    assert h.view() == [
        ("a", "lease_expired", 2, second.claim_id),
        ("b", "lease_expired", 2, second.claim_id),
    ]
    with pytest.raises(QueuedWorkClaimExpired):
        await h.store.complete_queued_work(first.completion())
    await h.store.complete_queued_work(second.completion())
    assert h.view() == []


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
async def test_claim_by_batch_ids_refuses_bad_id_lists_and_changes_nothing(h, make, message):
    await busy(h)
    head = (await h.store.list_pending_queued_work("s1"))[0].batch_id
    before = listing(h)
    with pytest.raises(InvalidQueuedWorkError, match=message):
        await h.store.claim_ready_queued_work_by_batch_ids("s1", "w", IDLE, 100, make(head))
    assert listing(h) == before  # not even the claim-then-abandon of a mismatch
    # the same id, as a one-element list, is claimed
    claim = await h.store.claim_ready_queued_work_by_batch_ids("s1", "w", IDLE, 100, [head])
    assert claim is not None and claim.batch_ids == (head,)


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


def _bad_calls(s: InMemoryQueueStore, a, expired, live):
    """(call, message) for every public store method; each must raise and leave the store alone."""
    claim, by_ids = s.claim_ready_queued_work, s.claim_ready_queued_work_by_batch_ids
    ok = [live.batch_ids[0]]
    calls = [(lambda: s.enqueue_queued_work("s1"), "expected a QueuedWorkBatchDraft, not str")]
    for session, msg in [
        ("", "session_id must be a non-empty str"),
        ("s\ud800", "session_id is not valid UTF-8"),
        (None, "session_id must be a non-empty str"),
        (b"s1", "session_id must be a non-empty str"),
    ]:
        calls += [
            (lambda v=session: claim(v, "w", IDLE, 100, 3), msg),
            (lambda v=session: by_ids(v, "w", IDLE, 100, ok), msg),
            (lambda v=session: s.cancel_queued_work_batch(v, a.batch_id), msg),
            (lambda v=session: s.list_queued_work(v), msg),
            (lambda v=session: s.list_pending_queued_work(v), msg),
        ]
    for owner, msg in [
        ("", "owner_id must be a non-empty str"),
        ("w\udc80", "owner_id is not valid UTF-8"),
        (7, "owner_id must be a non-empty str"),
    ]:
        calls += [
            (lambda v=owner: claim("s1", v, IDLE, 100, 3), msg),
            (lambda v=owner: by_ids("s1", v, IDLE, 100, ok), msg),
        ]
    for ttl in (-1, True, False, 1.0, "5", None, 2**64):
        msg = "lease_ttl_ms must be an int in 0"
        calls += [
            (lambda v=ttl: claim("s1", "w", IDLE, v, 3), msg),
            (lambda v=ttl: by_ids("s1", "w", IDLE, v, ok), msg),
            (lambda v=ttl: s.renew_queued_work_claim(expired, v), msg),
            (lambda v=ttl: s.renew_queued_work_claim(live, v), msg),
        ]
    for max_batches in (-1, True, False, 2.0, 1.5, "2", None, 2**64):
        msg = "max_batches must be an int in 0"
        calls.append((lambda v=max_batches: claim("s1", "w", IDLE, 100, v), msg))
    for boundary in ("soon", None, 0):
        calls += [
            (lambda v=boundary: claim("s1", "w", v, 100, 3), "boundary must be"),
            (lambda v=boundary: by_ids("s1", "w", v, 100, ok), "boundary must be"),
        ]
    for batch_id, msg in [
        ("", "batch_id must be a non-empty str"),
        ("qwb-\ud800", "batch_id is not valid UTF-8"),
        (b"qwb", "batch_id must be a non-empty str"),
        ([a.batch_id], "batch_id must be a non-empty str"),
    ]:
        calls.append((lambda v=batch_id: s.cancel_queued_work_batch("s1", v), msg))
    calls += [
        (lambda: s.renew_queued_work_claim(live.completion(), 9), "claim must be a QueuedWork"),
        (lambda: s.abandon_queued_work_claim(live.to_dict()), "claim must be a QueuedWorkClaim"),
        (lambda: s.complete_queued_work(live), "completion must be a QueuedWorkCompletion"),
        (lambda: s.complete_queued_work(None), "completion must be a QueuedWorkCompletion"),
    ]
    return calls


async def test_every_store_operation_refuses_bad_arguments_and_changes_nothing(h):
    a, expired, live = await busy(h)
    before = listing(h)
    for call, message in _bad_calls(h.store, a, expired, live):
        with pytest.raises(InvalidQueuedWorkError, match=message):
            await call()
        assert listing(h) == before, message
    # and the store still works: the expired claim is renewed, the live one completed
    await h.store.renew_queued_work_claim(expired, 0)
    await h.store.complete_queued_work(live.completion())
    assert listing(h) != before


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


@dataclasses.dataclass
class ModelBatch:
    batch_id: str
    session: str
    seq: int
    source_key: str | None
    delivery: DeliveryPolicy
    slot: SlotPolicy
    merge: MergeKey
    available_at: int
    texts: list[str]
    fencing: int = 0
    holder: tuple[str, str] | None = None  # (claim_id, lease_token)
    expires: int = 0

    def live(self, now: int) -> bool:
        return self.holder is not None and self.expires > now


class QueueMachine(RuleBasedStateMachine):
    """The store against a deliberately naive model: one flat list, linear scans, no state table.

    Besides the model, ``tokens`` keeps every fencing token handed out for each batch, returned
    claims and the hidden ones of a mismatched by-ids claim alike, and checks on each claim that
    the new token is larger than all of them (the token never goes backwards, whatever the mix of
    single and group claims, zero and non-zero ttls, abandons, expiries and renewals).
    """

    SESSIONS = ("s1", "s2")

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.store = InMemoryQueueStore(clock_ms=lambda: self.now)
        self.model: list[ModelBatch] = []
        self.last_seq = 0
        self.claims: list[QueuedWorkClaim] = []
        self.known_ids: list[str] = []
        self.counter = 0
        self.tokens: dict[str, list[int]] = {}  # batch id -> every fencing token it was given

    def session_batches(self, session: str) -> list[ModelBatch]:
        return sorted((b for b in self.model if b.session == session), key=lambda b: b.seq)

    def expected_group(self, session: str, boundary, max_batches: int) -> list[ModelBatch]:
        if max_batches == 0:
            return []
        batches = self.session_batches(session)
        ready = [
            i for i, b in enumerate(batches) if b.available_at <= self.now and not b.live(self.now)
        ]
        if not ready:
            return []
        head = batches[ready[0]]
        if boundary == CHECKPOINT and head.delivery != ESB:
            return []
        group = [head]
        if head.slot == JOIN:
            for b in batches[ready[0] + 1 :]:
                same = (b.slot, b.delivery, b.merge) == (JOIN, head.delivery, head.merge)
                if (
                    len(group) == max_batches
                    or not same
                    or b.available_at > self.now
                    or b.live(self.now)
                ):
                    break
                group.append(b)
        return group

    def held_all(self, session, claim_id, token, batch_ids) -> bool:
        for batch_id in batch_ids:
            found = [b for b in self.model if b.session == session and b.batch_id == batch_id]
            if not found or found[0].holder != (claim_id, token):
                return False
        return True

    @rule(
        session=st.sampled_from(SESSIONS),
        # weighted towards batches that gather, so group claims (and their fencing) are common
        delivery=st.sampled_from([ESB, ESB, ESB, ACTC]),
        slot=st.sampled_from([JOIN, JOIN, JOIN, EXCL]),
        merge=st.sampled_from(
            [MergeKey.NEVER, MergeKey.NEVER, MergeKey.PAYLOAD_DEFAULT, MergeKey.group("g")]
        ),
        delay=st.sampled_from([0, 0, 0, -3, 4, 12]),  # mostly available at once
        source_key=st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3"])),
        count=st.integers(1, 2),
    )
    def enqueue(self, session, delivery, slot, merge, delay, source_key, count):
        self.counter += 1
        texts = [f"t{self.counter}.{i}" for i in range(count)]
        d = QueuedWorkBatchDraft(
            session,
            delivery,
            slot,
            [TurnInput.text(t) for t in texts],
            source_key=source_key,
            merge_key=merge,
            available_at_ms=max(0, self.now + delay),
        )
        batch = run(self.store.enqueue_queued_work(d))
        existing = [
            b
            for b in self.model
            if b.session == session and source_key is not None and b.source_key == source_key
        ]
        if existing:
            assert (
                batch.batch_id == existing[0].batch_id
                and [p.content for p in batch.payloads] == existing[0].texts
            )
            return
        self.last_seq += 1
        assert batch.enqueue_seq == self.last_seq and batch.enqueued_at_ms == self.now
        assert [p.content for p in batch.payloads] == texts
        self.model.append(
            ModelBatch(
                batch.batch_id,
                session,
                batch.enqueue_seq,
                source_key,
                delivery,
                slot,
                merge,
                d.available_at_ms,
                texts,
            )
        )
        self.known_ids.append(batch.batch_id)

    @rule(session=st.sampled_from(SESSIONS), count=st.integers(2, 3))
    def enqueue_joinable(self, session, count):
        """A run of batches that gather with each other (and with other default join batches)."""
        for _ in range(count):
            self.enqueue(session, ESB, JOIN, MergeKey.NEVER, 0, None, 1)

    def issue_token(self, group: list[ModelBatch], token: int) -> None:
        for b in group:
            history = self.tokens.setdefault(b.batch_id, [])
            assert all(token > earlier for earlier in history), (b.batch_id, history, token)
            history.append(token)
            b.fencing = token

    def apply_claim(self, claim: QueuedWorkClaim, group: list[ModelBatch], ttl: int) -> None:
        assert claim.batch_ids == tuple(b.batch_id for b in group)
        expected_token = max(b.fencing for b in group) + 1
        self.issue_token(group, claim.fencing_token)  # larger than every earlier token: checked
        assert claim.fencing_token == expected_token  # and exactly the old maximum plus one
        assert (claim.claimed_at_epoch_ms, claim.expires_at_epoch_ms) == (self.now, self.now + ttl)
        assert all(claim.claim_id not in (c.claim_id, c.lease_token) for c in self.claims)
        for b in group:
            b.holder = (claim.claim_id, claim.lease_token)
            b.expires = self.now + ttl

    @rule(
        session=st.sampled_from(SESSIONS),
        boundary=st.sampled_from(list(QueuedWorkClaimBoundary)),
        ttl=st.sampled_from([0, 0, 1, 5, 20, 1_000]),  # expired at once ... held for long
        max_batches=st.sampled_from([0, 1, 1, 2, 3]),
    )
    def claim(self, session, boundary, ttl, max_batches):
        group = self.expected_group(session, boundary, max_batches)
        claim = run(self.store.claim_ready_queued_work(session, "w", boundary, ttl, max_batches))
        if not group:
            assert claim is None
            return
        self.apply_claim(claim, group, ttl)
        self.claims.append(claim)

    @rule(
        session=st.sampled_from(SESSIONS),
        boundary=st.sampled_from(list(QueuedWorkClaimBoundary)),
        ttl=st.sampled_from([0, 0, 1, 5, 20]),
        exact=st.booleans(),
        data=st.data(),
    )
    def claim_by_ids(self, session, boundary, ttl, exact, data):
        ids = [b.batch_id for b in self.session_batches(session)]
        if exact:
            wanted = [
                b.batch_id
                for b in self.expected_group(session, boundary, data.draw(st.integers(1, 3)))
            ]
        else:
            wanted = (
                data.draw(st.lists(st.sampled_from(ids), max_size=3, unique=True)) if ids else []
            )
        group = self.expected_group(session, boundary, len(wanted))
        claim = run(
            self.store.claim_ready_queued_work_by_batch_ids(session, "w", boundary, ttl, wanted)
        )
        if group and [b.batch_id for b in group] == wanted:
            self.apply_claim(claim, group, ttl)
            self.claims.append(claim)
            return
        assert claim is None
        if group:  # claimed, then abandoned: the hidden claim's token counts too
            self.issue_token(group, max(b.fencing for b in group) + 1)
        for b in group:
            b.holder, b.expires = None, 0

    @precondition(lambda self: self.claims)
    @rule(index=st.integers(0, 1_000), ttl=st.sampled_from([0, 1, 5, 20]), forge=st.booleans())
    def renew(self, index, ttl, forge):
        claim = self.claims[index % len(self.claims)]
        if forge:
            claim = dataclasses.replace(claim, lease_token="forged")
        if self.held_all(claim.session_id, claim.claim_id, claim.lease_token, claim.batch_ids):
            renewed = run(self.store.renew_queued_work_claim(claim, ttl))
            assert renewed == dataclasses.replace(claim, expires_at_epoch_ms=self.now + ttl)
            for b in self.model:
                if b.holder == (claim.claim_id, claim.lease_token):
                    b.expires = self.now + ttl
        else:
            with pytest.raises(QueuedWorkClaimExpired):
                run(self.store.renew_queued_work_claim(claim, ttl))

    @precondition(lambda self: self.claims)
    @rule(index=st.one_of(st.just(-1), st.integers(0, 1_000)))  # -1: the latest claim
    def abandon(self, index):
        claim = self.claims[index % len(self.claims)]
        run(self.store.abandon_queued_work_claim(claim))
        for b in self.model:
            if b.session == claim.session_id and b.holder == (claim.claim_id, claim.lease_token):
                b.holder, b.expires = None, 0

    @precondition(lambda self: self.claims)
    @rule(index=st.integers(0, 1_000))
    def complete(self, index):
        claim = self.claims[index % len(self.claims)]
        if self.held_all(claim.session_id, claim.claim_id, claim.lease_token, claim.batch_ids):
            run(self.store.complete_queued_work(claim.completion()))
            self.model = [b for b in self.model if b.batch_id not in claim.batch_ids]
        else:
            with pytest.raises(QueuedWorkClaimExpired):
                run(self.store.complete_queued_work(claim.completion()))

    @rule(session=st.sampled_from(SESSIONS), data=st.data())
    def cancel(self, session, data):
        batch_id = data.draw(st.sampled_from([*self.known_ids, "qwb-unknown"]))
        found = [b for b in self.model if b.session == session and b.batch_id == batch_id]
        result = run(self.store.cancel_queued_work_batch(session, batch_id))
        if not found or found[0].live(self.now):
            assert result is None
        else:
            assert result is not None and result.batch_id == batch_id
            self.model.remove(found[0])

    @rule(ms=st.integers(0, 25))
    def advance(self, ms):
        self.now += ms

    @invariant()
    def store_matches_model(self):
        for session in self.SESSIONS:
            expected = self.session_batches(session)
            listed = run(self.store.list_queued_work(session))
            assert [b.batch_id for b in listed] == [b.batch_id for b in expected]
            assert [[i.payload.content for i in b.items] for b in listed] == [
                b.texts for b in expected
            ]
            pending = run(self.store.list_pending_queued_work(session))
            assert [b.batch_id for b in pending] == [
                b.batch_id for b in expected if not b.live(self.now)
            ]
            records = self.store.state.records(session)
            assert [(r.fencing_counter, r.claim_id) for r in records] == [
                (b.fencing, b.holder and b.holder[0]) for b in expected
            ]
            for b in expected:  # the counter is the last token issued for the batch
                assert b.fencing == self.tokens.get(b.batch_id, [0])[-1]
        live = sum(b.live(self.now) for b in self.model)
        expired = sum(b.holder is not None and not b.live(self.now) for b in self.model)
        assert self.store.statistics() == QueueStatistics(
            sessions=len({b.session for b in self.model}),
            batches=len(self.model),
            pending=len(self.model) - live,
            claimed=live,
            lease_expired=expired,
            next_enqueue_seq=self.last_seq + 1,
        )


TestQueueMachine = QueueMachine.TestCase
TestQueueMachine.settings = settings(
    max_examples=500,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


async def test_concurrent_writers_never_duplicate_or_lose_batches(h):
    """Many tasks enqueue at once: one batch per source key, every keyless draft stored once."""
    keyed = [h.add(f"k{i % 5}", source_key=f"key-{i % 5}") for i in range(50)]
    keyless = [h.add(f"free-{i}") for i in range(50)]
    results = await asyncio.gather(*keyed, *keyless)
    by_key: dict[str, set[str]] = {}
    for batch in results[:50]:
        by_key.setdefault(batch.source_key, set()).add(batch.batch_id)
    assert all(len(ids) == 1 for ids in by_key.values()) and len(by_key) == 5
    stored = await h.store.list_queued_work("s1")
    assert len(stored) == 55
    assert [b.enqueue_seq for b in stored] == sorted({b.enqueue_seq for b in stored})
    # two workers claiming concurrently never get the same batch
    claims = await asyncio.gather(*(h.claim(owner=f"w{i}", max_batches=3) for i in range(30)))
    claimed = [b.batch_id for c in claims if c is not None for b in c.batches]
    assert len(claimed) == len(set(claimed)) == 55


async def test_join_gathering_stops_at_a_leased_follower(h):
    """a, b, c are join batches; b is leased when a is claimed again: the group is a alone."""
    await h.add("a")
    await h.add("b")
    await h.add("c")
    first = await h.claim(max_batches=1)
    second = await h.claim(max_batches=1)
    assert labels_of(first) == ["a"] and labels_of(second) == ["b"]
    await h.store.abandon_queued_work_claim(first)
    assert labels_of(await h.claim(max_batches=10)) == ["a"]  # stops at the leased b
    assert [row[1] for row in h.view()] == ["claimed", "claimed", "pending"]


async def test_wrong_argument_types_are_typed_errors_and_change_nothing(h):
    await h.add("a")
    claim = await h.claim(ttl=100)
    before = h.view()
    expiry = claim.expires_at_epoch_ms
    with pytest.raises(InvalidQueuedWorkError, match="claim must be a QueuedWorkClaim"):
        await h.store.renew_queued_work_claim(claim.completion(), 5000)
    with pytest.raises(InvalidQueuedWorkError, match="claim must be a QueuedWorkClaim"):
        await h.store.abandon_queued_work_claim(None)
    with pytest.raises(InvalidQueuedWorkError, match="completion must be a QueuedWorkCompletion"):
        await h.store.complete_queued_work({"batch_ids": ["x"]})
    with pytest.raises(InvalidQueuedWorkError, match="session_id"):
        await h.store.cancel_queued_work_batch(["s1"], "x")
    with pytest.raises(InvalidQueuedWorkError, match="batch_id"):
        await h.store.cancel_queued_work_batch("s1", None)
    with pytest.raises(InvalidQueuedWorkError, match="session_id"):
        await h.store.list_queued_work(None)
    with pytest.raises(InvalidQueuedWorkError, match="session_id"):
        await h.store.list_pending_queued_work({})
    with pytest.raises(InvalidQueuedWorkError):
        MergeKey(["x"])
    with pytest.raises(InvalidQueuedWorkError, match="not valid UTF-8"):
        await h.add("x", session="s\udcff")
    with pytest.raises(InvalidQueuedWorkError, match="not valid UTF-8"):
        await h.add("x", source_key="k\ud800")
    assert h.view() == before and (await h.store.list_queued_work("s1"))[0].batch_id == claim.batches[0].batch_id
    assert h.store.state.record("s1", claim.batches[0].batch_id).expires_at_ms == expiry


def test_a_broken_clock_is_a_typed_error():
    store = InMemoryQueueStore(clock_ms=lambda: None)
    with pytest.raises(InvalidQueuedWorkError, match="clock_ms"):
        run(store.list_pending_queued_work("s1"))
    store = InMemoryQueueStore(clock_ms=lambda: -5)
    with pytest.raises(InvalidQueuedWorkError, match="clock_ms"):
        run(store.cancel_queued_work_batch("s1", "b"))
