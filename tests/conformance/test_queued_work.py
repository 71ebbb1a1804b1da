"""Queued-work store conformance (spec section 5), run against every backend in ``backends.py``.

Each test names the Rust case it carries over (lash-core 0.1.0-alpha.39: the queued-work cases of
``testing/conformance.rs`` ``runtime_persistence``, and ``lash-sqlite-store/tests/storage_fixes.rs``).
Where Rust and our spec differ, the test follows the spec and says so. Everything is observed
through the ``QueuedWorkStore`` protocol only: listings, claims and their fencing tokens.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect

import pytest

from lash_core import (
    DeliveryPolicy,
    InvalidQueuedWorkError,
    MergeKey,
    QueuedWorkBatch,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkClaimExpired,
    QueuedWorkCompletion,
    QueuedWorkStore,
    SlotPolicy,
    TurnInput,
)
from lash_core._queue import QUEUED_WORK_STORE_METHODS

from .queue_model import run_queue_model

ESB = DeliveryPolicy.EARLIEST_SAFE_BOUNDARY
ACTC = DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT
JOIN, EXCL = SlotPolicy.JOIN, SlotPolicy.EXCLUSIVE
IDLE = QueuedWorkClaimBoundary.IDLE
CHECKPOINT = QueuedWorkClaimBoundary.ACTIVE_TURN_CHECKPOINT
YEAR_2100_MS = 4_102_444_800_000


def draft(label, session="s1", *, delivery=ESB, slot=JOIN, more=(), **kw) -> QueuedWorkBatchDraft:
    payloads = [TurnInput.text(label), *(TurnInput.text(m) for m in more)]
    return QueuedWorkBatchDraft(session, delivery, slot, payloads, **kw)


def labels_of(batches_or_claim) -> list[str] | None:
    if batches_or_claim is None:
        return None
    batches = getattr(batches_or_claim, "batches", batches_or_claim)
    return [b.items[0].payload.content for b in batches]


class Harness:
    """A store of the backend on a fake clock, with shorthands; ``t0`` is the clock's start."""

    def __init__(self, store, clock) -> None:
        self.store = store
        self.clock = clock
        self.t0 = clock.ms()

    @property
    def now(self) -> int:
        return self.clock.ms()

    def advance(self, ms: int) -> None:
        self.clock.advance(ms / 1000)

    async def add(self, label, session="s1", **kw) -> QueuedWorkBatch:
        return await self.store.enqueue_queued_work(draft(label, session, **kw))

    async def claim(self, session="s1", boundary=IDLE, ttl=100, max_batches=10, owner="w1"):
        return await self.store.claim_ready_queued_work(session, owner, boundary, ttl, max_batches)

    async def by_ids(self, ids, session="s1", ttl=100, owner="w1", boundary=IDLE):
        return await self.store.claim_ready_queued_work_by_batch_ids(
            session, owner, boundary, ttl, ids
        )

    async def labels(self, session="s1", *, pending=False) -> list[str]:
        lister = self.store.list_pending_queued_work if pending else self.store.list_queued_work
        return labels_of(await lister(session))

    async def snapshot(self, sessions=("s1", "s2")) -> dict:
        """Everything the protocol shows of the sessions: each batch, and which are pending."""
        out = {}
        for session in sessions:
            out[session] = (
                await self.store.list_queued_work(session),
                [b.batch_id for b in await self.store.list_pending_queued_work(session)],
            )
        return out


@pytest.fixture
def h(queue_store_factory, clock) -> Harness:
    return Harness(queue_store_factory.open(clock=clock), clock)


def test_store_satisfies_the_protocol_with_coroutine_functions(queue_store_factory, clock):
    store = queue_store_factory.open(clock=clock)
    assert isinstance(store, QueuedWorkStore)
    for name in QUEUED_WORK_STORE_METHODS:
        assert inspect.iscoroutinefunction(getattr(store, name)), name


# --- enqueue ------------------------------------------------------------------------------------


async def test_enqueue_assigns_increasing_seq_ids_and_times(h):
    a = await h.add("a", more=("a2",))
    h.advance(7)
    b = await h.add("b", session="s2")
    c = await h.add("c", source_key="k", merge_key=MergeKey.group("g"), available_at_ms=5_000)
    assert a.enqueue_seq < b.enqueue_seq < c.enqueue_seq
    assert [i.item_id for i in a.items] == [f"{a.batch_id}:item:0", f"{a.batch_id}:item:1"]
    assert a.payloads == (TurnInput.text("a"), TurnInput.text("a2"))
    assert len({a.batch_id, b.batch_id, c.batch_id}) == 3 and all(
        isinstance(x.batch_id, str) and x.batch_id for x in (a, b, c)
    )
    assert (a.session_id, a.enqueued_at_ms, b.enqueued_at_ms) == ("s1", h.t0, h.t0 + 7)
    assert (c.source_key, c.merge_key, c.available_at_ms, c.delivery_policy, c.slot_policy) == (
        "k",
        MergeKey.group("g"),
        5_000,
        ESB,
        JOIN,
    )
    assert await h.store.list_queued_work("s1") == [a, c]
    assert await h.store.list_queued_work("s2") == [b]
    assert await h.store.list_queued_work("nobody") == []
    listed = await h.store.list_queued_work("s1")
    listed.clear()  # a new list each time
    assert await h.store.list_queued_work("s1") == [a, c]


async def test_source_keys_are_idempotent_and_lists_ordered(h):
    """Rust ``queued_work_source_keys_are_idempotent_and_list_ordered``."""
    first = await h.add("first", "root", source_key="source:first")
    replay = await h.add("different replay payload", "root", source_key="source:first")
    second = await h.add("second", "root", slot=EXCL)
    await h.add("other session", "other", slot=EXCL)
    assert replay.batch_id == first.batch_id
    assert replay.items[0].item_id == first.items[0].item_id
    assert labels_of([replay]) == ["first"]  # the stored payload, not the replayed one
    listed = await h.store.list_queued_work("root")
    assert [b.batch_id for b in listed] == [first.batch_id, second.batch_id]
    assert listed[0].enqueue_seq < listed[1].enqueue_seq


async def test_source_key_returns_existing_batch_unchanged_while_the_session_holds_it(h):
    """Also Rust's source-key lifetime (inventory section 4, item 13): after completion or cancel
    the key makes a new batch."""
    first = await h.add("a", source_key="k")
    again = await h.add("different", source_key="k", slot=EXCL, delivery=ACTC)
    assert again == first and again.payloads == (TurnInput.text("a"),)
    other_session = await h.add("a", session="s2", source_key="k")
    assert other_session.batch_id != first.batch_id and other_session.enqueue_seq > first.enqueue_seq
    plain = await h.add("b")
    assert plain.enqueue_seq > other_session.enqueue_seq
    assert await h.labels() == ["a", "b"]
    # a claimed batch still deduplicates
    claim = await h.claim(max_batches=1)
    assert await h.add("x", source_key="k") == first
    # once completed (removed) the key is free again
    await h.store.complete_queued_work(claim.completion())
    fresh = await h.add("c", source_key="k")
    assert fresh.batch_id != first.batch_id and fresh.enqueue_seq > plain.enqueue_seq
    assert await h.labels() == ["b", "c"]
    # ... and likewise once cancelled
    assert await h.store.cancel_queued_work_batch("s1", fresh.batch_id) == fresh
    assert (await h.add("d", source_key="k")).enqueue_seq > fresh.enqueue_seq


async def test_enqueue_rejects_non_drafts(h):
    with pytest.raises(InvalidQueuedWorkError, match="(?i)draft"):
        await h.store.enqueue_queued_work({"session_id": "s1"})  # type: ignore[arg-type]
    assert await h.store.list_queued_work("s1") == []


# --- claims -------------------------------------------------------------------------------------


async def test_claim_with_max_batches_zero_or_empty_queue_is_none(h):
    assert await h.claim() is None
    await h.add("a")
    assert await h.claim(max_batches=0) is None
    assert await h.labels(pending=True) == ["a"]
    assert (await h.claim()).fencing_token == 1  # the refused claim issued no token


async def test_claim_fields_and_lease_window(h):
    a = await h.add("a")
    claim = await h.claim(ttl=250, owner="worker-7")
    assert claim == QueuedWorkClaim(
        session_id="s1",
        claim_id=claim.claim_id,
        owner_id="worker-7",
        lease_token=claim.lease_token,
        fencing_token=1,
        claimed_at_epoch_ms=h.t0,
        expires_at_epoch_ms=h.t0 + 250,
        batches=(a,),
    )
    assert claim.batch_ids == (a.batch_id,) and claim.claim_id != claim.lease_token
    assert claim.completion() == QueuedWorkCompletion(
        "s1", claim.claim_id, claim.lease_token, (a.batch_id,)
    )
    assert await h.labels(pending=True) == [] and await h.labels() == ["a"]
    h.advance(249)
    assert await h.claim() is None and await h.labels(pending=True) == []
    h.advance(1)  # live while expires_at > now: at expires_at it is over
    assert await h.labels(pending=True) == ["a"]


async def test_a_second_claim_on_a_held_batch_is_not_won(h):
    """Rust (sqlite) ``second_claim_on_held_batch_is_not_won``."""
    await h.add("only", slot=EXCL)
    first = await h.claim(owner="owner-a", ttl=60_000)
    assert labels_of(first) == ["only"]
    assert await h.claim(owner="owner-b", ttl=60_000) is None
    renewed = await h.store.renew_queued_work_claim(first, 60_000)
    assert renewed.claim_id == first.claim_id


async def test_head_skips_unavailable_batches_without_blocking(h):
    await h.add("later", slot=EXCL, available_at_ms=h.t0 + 50)
    await h.add("now", slot=EXCL)
    assert labels_of(await h.claim()) == ["now"]
    assert await h.claim() is None
    assert await h.labels(pending=True) == ["later"]  # unavailable is still pending
    h.advance(50)  # available_at_ms <= now
    assert labels_of(await h.claim()) == ["later"]
    assert await h.labels(pending=True) == []


async def test_head_skips_leased_batches(h):
    await h.add("a", slot=EXCL)
    await h.add("b", slot=EXCL)
    c1, c2 = await h.claim(), await h.claim()
    assert (labels_of(c1), labels_of(c2)) == (["a"], ["b"])
    assert c1.claim_id != c2.claim_id and c1.lease_token != c2.lease_token
    assert await h.claim() is None


async def test_checkpoint_blocks_on_a_head_that_waits_for_commit(h):
    await h.add("commit-first", delivery=ACTC, slot=EXCL)
    await h.add("safe", delivery=ESB, slot=EXCL)
    assert await h.claim(boundary=CHECKPOINT) is None  # later batches are not considered
    assert await h.labels(pending=True) == ["commit-first", "safe"]
    assert labels_of(await h.claim(boundary=IDLE)) == ["commit-first"]
    assert labels_of(await h.claim(boundary=CHECKPOINT)) == ["safe"]  # the leased head is skipped
    assert await h.labels(pending=True) == []


async def test_checkpoint_head_is_chosen_after_skipping_unavailable_batches(h):
    await h.add("not-yet", delivery=ACTC, available_at_ms=h.t0 + 10)
    await h.add("safe", delivery=ESB)
    assert labels_of(await h.claim(boundary=CHECKPOINT)) == ["safe"]
    h.advance(10)
    assert await h.claim(boundary=CHECKPOINT) is None
    assert labels_of(await h.claim(boundary=IDLE)) == ["not-yet"]


async def test_claims_respect_boundaries_renewal_and_abandon(h):
    """Rust ``queued_work_claims_respect_boundaries_renewal_and_abandon``."""
    ac = await h.add("after current commit", "root", delivery=ACTC, slot=EXCL)
    e = await h.add("earliest", "root", delivery=ESB, slot=EXCL)
    assert await h.claim("root", CHECKPOINT, 60_000, 10, "owner-a") is None
    idle = await h.claim("root", IDLE, 60_000, 10, "owner-a")
    assert idle.batch_ids == (ac.batch_id,)
    checkpoint = await h.claim("root", CHECKPOINT, 60_000, 10, "owner-b")
    assert checkpoint.batch_ids == (e.batch_id,)
    await h.store.abandon_queued_work_claim(idle)
    again = await h.claim("root", IDLE, 60_000, 10, "owner-c")
    assert again.batch_ids == (ac.batch_id,)
    assert again.fencing_token > idle.fencing_token
    h.advance(5)
    renewed = await h.store.renew_queued_work_claim(again, 60_000)
    assert (renewed.claim_id, renewed.lease_token, renewed.batches) == (
        again.claim_id,
        again.lease_token,
        again.batches,
    )
    assert renewed.expires_at_epoch_ms >= again.expires_at_epoch_ms


async def test_availability_limits_exclusivity_reclaim_and_sessions(h):
    """Rust ``queued_work_respects_availability_limits_exclusivity_reclaim_and_sessions``."""
    await h.add("not ready", "root", slot=EXCL, available_at_ms=YEAR_2100_MS)
    x = await h.add("exclusive", "root", slot=EXCL)
    j = await h.add("joined", "root", merge_key=MergeKey.group("root"))
    o = await h.add("other session", "other", slot=EXCL)
    assert (await h.claim("root", IDLE, 60_000, 10, "owner-a")).batch_ids == (x.batch_id,)
    assert (await h.claim("root", IDLE, 60_000, 10, "owner-b")).batches[0] == j
    assert (await h.claim("other", IDLE, 60_000, 10, "owner-c")).batches[0] == o
    # a zero-ttl lease is re-claimable at once, with a larger token
    r = await h.add("expired claim", "reclaim", slot=EXCL)
    expired = await h.claim("reclaim", IDLE, 0, 1, "owner-a")
    reclaimed = await h.claim("reclaim", IDLE, 60_000, 1, "owner-b")
    assert reclaimed.batches[0] == r and reclaimed.fencing_token > expired.fencing_token
    # max_batches
    one = await h.add("one", "limited", merge_key=MergeKey.group("limited"))
    two = await h.add("two", "limited", merge_key=MergeKey.group("limited"))
    three = await h.add("three", "limited", merge_key=MergeKey.group("limited"))
    limited = await h.claim("limited", IDLE, 60_000, 2, "owner")
    assert limited.batch_ids == (one.batch_id, two.batch_id)
    assert (await h.claim("limited", IDLE, 60_000, 10, "owner")).batches[0] == three


async def test_join_head_gathers_following_batches_up_to_max(h):
    for label in "abcd":
        await h.add(label)
    claim = await h.claim(max_batches=3)
    assert labels_of(claim) == ["a", "b", "c"] and claim.fencing_token == 1
    assert await h.labels(pending=True) == ["d"]


@pytest.mark.parametrize(
    ("breaker", "why"),
    [
        (dict(slot=EXCL), "exclusive"),
        (dict(delivery=ACTC), "other delivery policy"),
        (dict(merge_key=MergeKey.group("g")), "other merge key"),
        (dict(merge_key=MergeKey.PAYLOAD_DEFAULT), "payload_default is not never"),
        (dict(available_at_ms=YEAR_2100_MS), "not yet available"),
    ],
)
async def test_join_gathering_stops_at_first_batch_that_differs(h, breaker, why):
    await h.add("a")
    await h.add("b")
    await h.add("x", **breaker)
    await h.add("c")  # would match the head, but gathering already stopped
    assert labels_of(await h.claim()) == ["a", "b"], why
    assert await h.labels(pending=True) == ["x", "c"]


async def test_join_groups_by_delivery_policy_and_merge_key(h):
    """Rust ``queued_work_join_groups_by_delivery_policy_and_merge_key``."""
    await h.add("a1", "root", merge_key=MergeKey.group("a"))
    await h.add("a2", "root", merge_key=MergeKey.group("a"))
    await h.add("b", "root", merge_key=MergeKey.group("b"))
    await h.add("ac", "root", delivery=ACTC, merge_key=MergeKey.group("a"))
    claims = [await h.claim("root", IDLE, 60_000, 10, owner) for owner in ("a", "b", "c")]
    assert [labels_of(c) for c in claims] == [["a1", "a2"], ["b"], ["ac"]]


async def test_join_with_equal_group_keys_and_default_never_keys_merge(h):
    await h.add("a", merge_key=MergeKey.group("g"))
    await h.add("b", merge_key=MergeKey.group("g"))
    await h.add("c")  # MergeKey.NEVER
    await h.add("d")  # MergeKey.NEVER equals MergeKey.NEVER
    assert labels_of(await h.claim()) == ["a", "b"]
    assert labels_of(await h.claim()) == ["c", "d"]


async def test_join_gathering_ignores_other_sessions_batches(h):
    """Spec: a head gathers the batches that follow it *in its session*. Rust's in-memory store
    scans all sessions' batches in one list and stops at another session's (its SQLite store does
    not): inventory section 4, item 11. We follow the spec."""
    await h.add("a")
    await h.add("elsewhere", session="s2")
    await h.add("b")
    assert labels_of(await h.claim()) == ["a", "b"]
    assert labels_of(await h.claim("s2")) == ["elsewhere"]


async def test_join_gathering_stops_at_a_leased_batch(h):
    await h.add("a", slot=EXCL)
    await h.add("b")
    await h.add("c")
    await h.add("d")
    await h.claim(max_batches=1)  # a
    held = await h.claim(max_batches=1)  # b
    assert labels_of(held) == ["b"]
    grabbed = await h.claim()  # c and d (b is leased), then released
    assert labels_of(grabbed) == ["c", "d"]
    await h.store.abandon_queued_work_claim(grabbed)
    assert await h.labels(pending=True) == ["c", "d"]
    await h.store.abandon_queued_work_claim(held)
    # now b is free but a is leased: the head is b, and it gathers c and d
    claim = await h.claim()
    assert labels_of(claim) == ["b", "c", "d"] and claim.fencing_token == 2


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
    assert await h.labels(pending=True) == ["c"]


async def test_exclusive_head_is_claimed_alone(h):
    await h.add("x", slot=EXCL)
    await h.add("a")
    assert labels_of(await h.claim()) == ["x"]
    assert labels_of(await h.claim()) == ["a"]


# --- fencing ------------------------------------------------------------------------------------


async def test_fencing_token_is_the_largest_counter_plus_one_and_every_claimed_batch_takes_it(h):
    """Spec (and Rust): re-claims of a batch carry a larger token. Rust and the spec's wording use
    the head's counter plus one; the protocol uses the largest counter of the group plus one, the
    only way a group claim keeps that promise (see the next test)."""
    a = await h.add("a")
    await h.add("b")
    c1 = await h.claim(max_batches=1)
    assert c1.fencing_token == 1
    await h.store.abandon_queued_work_claim(c1)
    c2 = await h.claim(max_batches=2)
    assert (labels_of(c2), c2.fencing_token) == (["a", "b"], 2)
    h.advance(100)  # c2's lease expires; re-claims always carry a larger token
    c3 = await h.claim(max_batches=2)
    assert (labels_of(c3), c3.fencing_token) == (["a", "b"], 3)
    h.advance(100)
    assert await h.store.cancel_queued_work_batch("s1", a.batch_id) == a
    c4 = await h.claim()  # b is the head now, alone
    assert (labels_of(c4), c4.fencing_token) == (["b"], 4)


async def test_group_token_exceeds_every_token_a_follower_already_had(h):
    """With the head's counter alone (Rust), [A, B] would get token 2 after B had 5."""
    await h.add("A")
    await h.add("B")
    ca = await h.claim(max_batches=1)
    assert (labels_of(ca), ca.fencing_token) == (["A"], 1)
    for expected in range(1, 6):  # A is leased, so B heads its own claim each time
        cb = await h.claim(max_batches=1, owner=f"b{expected}")
        assert (labels_of(cb), cb.fencing_token) == (["B"], expected)
        await h.store.abandon_queued_work_claim(cb)
    await h.store.abandon_queued_work_claim(ca)
    both = await h.claim(max_batches=2)
    assert (labels_of(both), both.fencing_token) == (["A", "B"], 6)
    h.advance(100)  # expired: the next claim of either batch goes higher still
    again = await h.claim(max_batches=1)
    assert (labels_of(again), again.fencing_token) == (["A"], 7)
    assert await h.labels(pending=True) == ["B"]  # held by ``both``, expired


async def test_group_token_by_batch_ids_also_exceeds_the_followers_tokens(h):
    a, b = await h.add("a"), await h.add("b")
    ca = await h.claim(max_batches=1)
    for _ in range(3):
        await h.store.abandon_queued_work_claim(await h.claim(max_batches=1))  # b: 1, 2, 3
    await h.store.abandon_queued_work_claim(ca)
    claim = await h.by_ids([a.batch_id, b.batch_id])
    assert claim.fencing_token == 4 and claim.batch_ids == (a.batch_id, b.batch_id)


# --- claim by batch ids -------------------------------------------------------------------------


async def test_claim_by_batch_ids_returns_exact_group(h):
    a, b = await h.add("a"), await h.add("b")
    await h.add("c")
    claim = await h.by_ids([a.batch_id, b.batch_id])
    assert claim.batch_ids == (a.batch_id, b.batch_id) and claim.fencing_token == 1
    assert await h.labels(pending=True) == ["c"]


async def test_exact_claim_uses_selected_batch_ids(h):
    """Rust ``queued_work_exact_claim_uses_selected_batch_ids``."""
    first = await h.add("first", "root", delivery=ACTC, slot=EXCL)
    second = await h.add("second", "root", delivery=ACTC, slot=EXCL)
    assert await h.by_ids([second.batch_id], "root", 60_000, "owner") is None  # no skipping the head
    pending = await h.store.list_pending_queued_work("root")
    assert [b.batch_id for b in pending] == [first.batch_id, second.batch_id]
    claim = await h.by_ids([first.batch_id], "root", 60_000, "owner")
    assert claim.batch_ids == (first.batch_id,)
    assert [b.batch_id for b in await h.store.list_pending_queued_work("root")] == [second.batch_id]


async def test_claim_by_batch_ids_mismatch_claims_then_abandons(h):
    """As the spec and Rust's default method say: the hidden claim still raises the tokens
    (inventory section 4, item 12)."""
    a, b = await h.add("a"), await h.add("b")
    assert await h.by_ids([b.batch_id]) is None  # a is the head: claimed [a], abandoned (a: 1)
    assert await h.by_ids([b.batch_id, a.batch_id]) is None  # [a, b] claimed, abandoned (2, 2)
    assert await h.by_ids([]) is None  # an empty list claims nothing at all
    assert await h.labels(pending=True) == ["a", "b"]
    claim = await h.by_ids((a.batch_id,))
    assert claim.batch_ids == (a.batch_id,) and claim.fencing_token == 3
    assert (await h.claim(max_batches=1)).fencing_token == 3  # b's counter was 2


async def test_claim_by_batch_ids_mismatch_drops_an_expired_lease(h):
    a = await h.add("a", slot=EXCL)
    old = await h.claim(ttl=10)
    h.advance(10)
    assert await h.by_ids(["other"]) is None
    with pytest.raises(QueuedWorkClaimExpired):
        await h.store.renew_queued_work_claim(old, 10)
    assert await h.labels(pending=True) == ["a"]
    assert (await h.by_ids([a.batch_id])).fencing_token == 3


# --- renew, abandon, complete -------------------------------------------------------------------


async def test_renew_extends_lease_and_keeps_identity(h):
    await h.add("a")
    claim = await h.claim(ttl=100)
    h.advance(60)
    renewed = await h.store.renew_queued_work_claim(claim, 500)
    assert renewed == dataclasses.replace(claim, expires_at_epoch_ms=h.t0 + 60 + 500)
    h.advance(499)
    assert await h.claim() is None and await h.labels(pending=True) == []
    h.advance(1)
    assert await h.labels(pending=True) == ["a"]


async def test_renew_after_expiry_still_counts_when_nobody_reclaimed(h):
    await h.add("a")
    claim = await h.claim(ttl=10)
    h.advance(30)
    assert await h.labels(pending=True) == ["a"]
    renewed = await h.store.renew_queued_work_claim(claim, 10)
    assert renewed.expires_at_epoch_ms == h.t0 + 40
    assert await h.labels(pending=True) == [] and await h.claim() is None


async def test_renew_of_a_reclaimed_batch_raises_and_changes_nothing(h):
    """Spec: nothing changes. Rust extends the batches that still match before it raises
    (inventory section 4, item 10); we follow the spec."""
    await h.add("a")
    await h.add("b")
    old = await h.claim(ttl=10)
    h.advance(10)
    new = await h.claim(ttl=10, max_batches=1)  # takes only a; b is still held (expired) by old
    assert labels_of(new) == ["a"] and new.fencing_token == 2
    with pytest.raises(QueuedWorkClaimExpired, match=old.claim_id) as err:
        await h.store.renew_queued_work_claim(old, 1_000)
    assert (err.value.session_id, err.value.claim_id) == ("s1", old.claim_id)
    assert await h.labels(pending=True) == ["b"]  # b's expired lease was not extended
    assert labels_of(await h.claim(owner="w2")) == ["b"]


async def test_renew_rejects_forged_tokens_and_bad_ttl(h):
    await h.add("a")
    claim = await h.claim()
    with pytest.raises(QueuedWorkClaimExpired):
        await h.store.renew_queued_work_claim(dataclasses.replace(claim, lease_token="forged"), 10)
    with pytest.raises(QueuedWorkClaimExpired):
        await h.store.renew_queued_work_claim(dataclasses.replace(claim, session_id="s2"), 10)
    for ttl in (-1, 1.5, True, None, "10", 2**64):
        with pytest.raises(InvalidQueuedWorkError, match="lease_ttl_ms"):
            await h.store.renew_queued_work_claim(claim, ttl)
    h.advance(99)  # the lease still ends where it did
    assert await h.labels(pending=True) == []
    h.advance(1)
    assert await h.labels(pending=True) == ["a"]


async def test_abandon_releases_only_what_the_claim_still_holds(h):
    await h.add("a")
    await h.add("b")
    old = await h.claim(ttl=10)
    h.advance(10)
    new = await h.claim(max_batches=1)
    await h.store.abandon_queued_work_claim(old)  # releases b, leaves new's a alone
    assert await h.labels(pending=True) == ["b"]
    await h.store.abandon_queued_work_claim(old)  # nothing held: no error, no change
    assert await h.labels(pending=True) == ["b"]
    await h.store.renew_queued_work_claim(new, 10)  # new still holds a
    await h.store.abandon_queued_work_claim(new)
    assert await h.labels(pending=True) == ["a", "b"]
    assert (await h.claim()).fencing_token == 3  # counters were kept: a 2, b 1


async def test_complete_removes_the_claimed_batches(h):
    await h.add("a")
    await h.add("b")
    await h.add("c", slot=EXCL)
    claim = await h.claim()
    await h.store.complete_queued_work(claim.completion())
    assert await h.labels() == ["c"]
    with pytest.raises(QueuedWorkClaimExpired):  # completing twice: no longer held
        await h.store.complete_queued_work(claim.completion())
    assert await h.labels() == ["c"]


async def test_complete_after_expiry_counts_when_nobody_reclaimed(h):
    await h.add("a")
    claim = await h.claim(ttl=5)
    h.advance(1_000)
    await h.store.complete_queued_work(claim.completion())
    assert await h.labels() == []


async def test_complete_with_one_batch_lost_removes_nothing(h):
    await h.add("a")
    await h.add("b")
    old = await h.claim(ttl=10)
    h.advance(10)
    new = await h.claim(max_batches=1)
    with pytest.raises(QueuedWorkClaimExpired, match=old.claim_id):
        await h.store.complete_queued_work(old.completion())
    assert await h.labels() == ["a", "b"] and await h.labels(pending=True) == ["b"]
    await h.store.complete_queued_work(new.completion())  # new still holds a
    await h.store.complete_queued_work(dataclasses.replace(old.completion(), batch_ids=old.batch_ids[1:]))
    assert await h.labels() == []


async def test_completion_is_lease_guarded(h):
    """Rust ``queued_work_completion_is_lease_guarded`` (there through ``commit_runtime_state``:
    Rust alpha.39 has no ``complete_queued_work``, inventory section 4, item 9)."""
    first = await h.add("join one", "root", merge_key=MergeKey.group("joined"))
    second = await h.add("join two", "root", merge_key=MergeKey.group("joined"))
    claim = await h.claim("root", IDLE, 60_000, 10, "owner-a")
    assert claim.batch_ids == (first.batch_id, second.batch_id)
    stale = dataclasses.replace(claim.completion(), lease_token=claim.lease_token + ":stale")
    with pytest.raises(QueuedWorkClaimExpired):
        await h.store.complete_queued_work(stale)
    assert len(await h.store.list_queued_work("root")) == 2
    await h.store.complete_queued_work(claim.completion())
    assert await h.store.list_queued_work("root") == []


# --- cancel and lists ---------------------------------------------------------------------------


async def test_cancel_rules(h):
    a = await h.add("a", slot=EXCL)
    b = await h.add("b", slot=EXCL)
    assert await h.store.cancel_queued_work_batch("s1", "qwb-unknown") is None
    assert await h.store.cancel_queued_work_batch("s2", a.batch_id) is None  # wrong session
    claim = await h.claim(ttl=10)
    assert await h.store.cancel_queued_work_batch("s1", a.batch_id) is None  # live lease protects
    assert await h.labels() == ["a", "b"]
    assert await h.store.cancel_queued_work_batch("s1", b.batch_id) == b
    assert await h.labels() == ["a"]
    h.advance(10)
    assert await h.store.cancel_queued_work_batch("s1", a.batch_id) == a  # an expired lease does not
    assert await h.store.list_queued_work("s1") == []
    with pytest.raises(QueuedWorkClaimExpired):
        await h.store.complete_queued_work(claim.completion())
    assert await h.store.cancel_queued_work_batch("s1", a.batch_id) is None  # already gone


async def test_cancel_removes_only_unclaimed_batches(h):
    """Rust ``queued_work_cancel_removes_only_unclaimed_batches``."""
    c = await h.add("cancel me", "root", delivery=ACTC, slot=EXCL)
    cancelled = await h.store.cancel_queued_work_batch("root", c.batch_id)
    assert cancelled.batch_id == c.batch_id and labels_of([cancelled]) == ["cancel me"]
    assert await h.store.list_queued_work("root") == []
    k = await h.add("claimed", "root", delivery=ACTC, slot=EXCL)
    claim = await h.claim("root", IDLE, 60_000, 1, "owner")
    assert claim.batches[0].batch_id == k.batch_id
    assert await h.store.list_pending_queued_work("root") == []
    assert len(await h.store.list_queued_work("root")) == 1
    assert await h.store.cancel_queued_work_batch("root", k.batch_id) is None
    await h.store.abandon_queued_work_claim(claim)
    assert len(await h.store.list_pending_queued_work("root")) == 1
    assert await h.store.cancel_queued_work_batch("root", k.batch_id) is not None


async def test_list_and_list_pending(h):
    await h.add("a", slot=EXCL)
    await h.add("b", slot=EXCL, available_at_ms=h.t0 + 100)
    await h.add("c", slot=EXCL)
    await h.claim(ttl=20)  # a
    assert await h.labels() == ["a", "b", "c"]
    assert await h.labels(pending=True) == ["b", "c"]  # unavailable is still pending
    h.advance(20)
    assert await h.labels(pending=True) == ["a", "b", "c"]  # an expired lease is pending again


# --- a zero lease -------------------------------------------------------------------------------


async def test_zero_ttl_claim_is_returned_and_expired_at_once(h):
    """ttl 0 (accepted, as in Rust): expires_at == now, and "expires_at > now" is false at once."""
    a = await h.add("a", slot=EXCL)
    first = await h.claim(ttl=0, owner="w1")
    assert (first.batches, first.fencing_token) == ((a,), 1)
    assert first.claimed_at_epoch_ms == first.expires_at_epoch_ms == h.t0
    assert await h.labels(pending=True) == ["a"]  # held, never live
    # within the same millisecond another owner re-claims it, with a larger token
    second = await h.claim(ttl=0, owner="w2")
    assert second.batch_ids == (a.batch_id,) and second.fencing_token == 2
    assert second.owner_id == "w2"
    with pytest.raises(QueuedWorkClaimExpired, match=first.claim_id):
        await h.store.complete_queued_work(first.completion())
    with pytest.raises(QueuedWorkClaimExpired, match=first.claim_id):
        await h.store.renew_queued_work_claim(first, 1_000)
    assert await h.labels(pending=True) == ["a"]
    assert await h.store.cancel_queued_work_batch("s1", a.batch_id) == a  # nothing protects it
    assert await h.store.list_queued_work("s1") == []
    with pytest.raises(QueuedWorkClaimExpired, match=second.claim_id):
        await h.store.complete_queued_work(second.completion())


async def test_zero_ttl_lease_is_still_held_by_its_claim_until_someone_reclaims(h):
    await h.add("a")
    await h.add("b")
    claim = await h.claim(ttl=0)
    assert (labels_of(claim), claim.expires_at_epoch_ms) == (["a", "b"], h.t0)
    renewed = await h.store.renew_queued_work_claim(claim, 0)  # held, so renew succeeds ...
    assert renewed == claim
    assert await h.labels(pending=True) == ["a", "b"]  # ... still not live
    h.advance(5)
    renewed = await h.store.renew_queued_work_claim(claim, 1)
    assert renewed.expires_at_epoch_ms == h.t0 + 6
    assert await h.claim() is None and await h.labels(pending=True) == []  # live: 6 > 5
    h.advance(1)  # at expires_at the lease is over
    assert await h.labels(pending=True) == ["a", "b"]
    await h.store.complete_queued_work(claim.completion())  # nobody re-claimed: still counts
    assert await h.labels() == []


async def test_zero_ttl_claim_by_batch_ids(h):
    a, b = await h.add("a"), await h.add("b")
    first = await h.by_ids([a.batch_id, b.batch_id], ttl=0)
    assert (first.batch_ids, first.fencing_token, first.expires_at_epoch_ms) == (
        (a.batch_id, b.batch_id),
        1,
        h.t0,
    )
    assert await h.labels(pending=True) == ["a", "b"]
    second = await h.by_ids((a.batch_id, b.batch_id), ttl=0, owner="w2")
    assert second.fencing_token == 2
    with pytest.raises(QueuedWorkClaimExpired):
        await h.store.complete_queued_work(first.completion())
    await h.store.complete_queued_work(second.completion())
    assert await h.labels() == []


# --- concurrency --------------------------------------------------------------------------------


async def test_concurrent_writers_and_claimers_never_duplicate_or_lose_batches(h):
    """Many tasks enqueue at once: one batch per source key, every keyless draft stored once; then
    concurrent claims never hold the same batch (Rust (sqlite)
    ``concurrent_claims_never_double_own_a_batch``)."""
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
    claims = await asyncio.gather(*(h.claim(owner=f"w{i}", max_batches=3) for i in range(30)))
    claimed = [b.batch_id for c in claims if c is not None for b in c.batches]
    assert len(claimed) == len(set(claimed)) == 55
    for claim in claims:
        if claim is not None:
            await h.store.renew_queued_work_claim(claim, 100)  # every winner holds its batches


# --- arguments: a typed error, and nothing changes ----------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(ttl=-5), "lease_ttl_ms"),
        (dict(ttl=1.5), "lease_ttl_ms"),
        (dict(ttl=True), "lease_ttl_ms"),
        (dict(ttl=False), "lease_ttl_ms"),
        (dict(ttl="100"), "lease_ttl_ms"),
        (dict(ttl=2**64), "lease_ttl_ms"),
        (dict(max_batches=-1), "max_batches"),
        (dict(max_batches=None), "max_batches"),
        (dict(max_batches=True), "max_batches"),
        (dict(max_batches=False), "max_batches"),
        (dict(max_batches=2.0), "max_batches"),
        (dict(max_batches="2"), "max_batches"),
        (dict(session=""), "session_id"),
        (dict(session="s\ud800"), "session_id"),
        (dict(session=b"s1"), "session_id"),
        (dict(session=None), "session_id"),
        (dict(owner="w\udfff"), "owner_id"),
        (dict(owner=None), "owner_id"),
        (dict(owner=""), "owner_id"),
        (dict(boundary=None), "boundary"),
        (dict(boundary="whenever"), "boundary"),
    ],
)
async def test_claim_argument_validation(h, kwargs, field):
    await h.add("a")
    with pytest.raises(InvalidQueuedWorkError, match=field):
        await h.claim(**kwargs)
    assert await h.labels(pending=True) == ["a"]
    assert (await h.claim()).fencing_token == 1


async def test_string_boundary_is_accepted(h):
    await h.add("a")
    claim = await h.store.claim_ready_queued_work("s1", "w", "active_turn_checkpoint", 10, 1)
    assert labels_of(claim) == ["a"]


async def busy(h: Harness) -> tuple[QueuedWorkBatch, QueuedWorkClaim, QueuedWorkClaim]:
    """A store with a live claim (a), an expired claim (b) and pending work in two sessions."""
    a = await h.add("a", slot=EXCL, source_key="ka")
    await h.add("b", slot=EXCL)
    await h.add("c")
    await h.add("d")
    await h.add("z", session="s2")
    live = await h.claim(ttl=100)  # a
    expired = await h.claim(ttl=5)  # b
    h.advance(5)
    assert await h.labels(pending=True) == ["b", "c", "d"]
    return a, expired, live


BAD_ID_LISTS = [
    lambda head: head,  # a bare str
    lambda head: head.encode(),
    lambda head: bytearray(b"qwb"),
    lambda head: memoryview(b"qwb"),
    lambda head: [head.encode()],
    lambda head: [head, 7],
    lambda head: [None],
    lambda head: {head},  # a set has no order
    lambda head: {head: 1},
    lambda head: iter([head]),
    lambda head: None,
    lambda head: [""],
    lambda head: [head, "qwb-\ud800"],
    lambda head: [head, head],
]


@pytest.mark.parametrize("make", BAD_ID_LISTS)
async def test_claim_by_batch_ids_refuses_bad_id_lists_and_changes_nothing(h, make):
    await busy(h)
    head = (await h.store.list_pending_queued_work("s1"))[0].batch_id
    before = await h.snapshot()
    with pytest.raises(InvalidQueuedWorkError, match="batch_ids"):
        await h.by_ids(make(head))
    assert await h.snapshot() == before
    # not even the claim-then-abandon of a mismatch: the head's next token is still 2
    claim = await h.by_ids([head])
    assert claim is not None and claim.batch_ids == (head,) and claim.fencing_token == 2


def _bad_calls(s, a, expired, live):
    """(call, field) for every protocol method; each must raise and leave the store alone."""
    claim, by_ids = s.claim_ready_queued_work, s.claim_ready_queued_work_by_batch_ids
    ok = [live.batch_ids[0]]
    calls = [(lambda: s.enqueue_queued_work("s1"), "(?i)draft")]
    for session in ("", "s\ud800", None, b"s1"):
        calls += [
            (lambda v=session: claim(v, "w", IDLE, 100, 3), "session_id"),
            (lambda v=session: by_ids(v, "w", IDLE, 100, ok), "session_id"),
            (lambda v=session: s.cancel_queued_work_batch(v, a.batch_id), "session_id"),
            (lambda v=session: s.list_queued_work(v), "session_id"),
            (lambda v=session: s.list_pending_queued_work(v), "session_id"),
        ]
    for owner in ("", "w\udc80", 7):
        calls += [
            (lambda v=owner: claim("s1", v, IDLE, 100, 3), "owner_id"),
            (lambda v=owner: by_ids("s1", v, IDLE, 100, ok), "owner_id"),
        ]
    for ttl in (-1, True, False, 1.0, "5", None, 2**64):
        calls += [
            (lambda v=ttl: claim("s1", "w", IDLE, v, 3), "lease_ttl_ms"),
            (lambda v=ttl: by_ids("s1", "w", IDLE, v, ok), "lease_ttl_ms"),
            (lambda v=ttl: s.renew_queued_work_claim(expired, v), "lease_ttl_ms"),
            (lambda v=ttl: s.renew_queued_work_claim(live, v), "lease_ttl_ms"),
        ]
    for max_batches in (-1, True, False, 2.0, 1.5, "2", None, 2**64):
        calls.append((lambda v=max_batches: claim("s1", "w", IDLE, 100, v), "max_batches"))
    for boundary in ("soon", None, 0):
        calls += [
            (lambda v=boundary: claim("s1", "w", v, 100, 3), "boundary"),
            (lambda v=boundary: by_ids("s1", "w", v, 100, ok), "boundary"),
        ]
    for batch_id in ("", "qwb-\ud800", b"qwb", [a.batch_id]):
        calls.append((lambda v=batch_id: s.cancel_queued_work_batch("s1", v), "batch_id"))
    calls += [
        (lambda: s.renew_queued_work_claim(live.completion(), 9), "claim"),
        (lambda: s.abandon_queued_work_claim(live.to_dict()), "claim"),
        (lambda: s.abandon_queued_work_claim(None), "claim"),
        (lambda: s.complete_queued_work(live), "completion"),
        (lambda: s.complete_queued_work(None), "completion"),
        (lambda: s.complete_queued_work({"batch_ids": ["x"]}), "completion"),
    ]
    return calls


async def test_every_store_operation_refuses_bad_arguments_and_changes_nothing(h):
    a, expired, live = await busy(h)
    before = await h.snapshot()
    for call, field in _bad_calls(h.store, a, expired, live):
        with pytest.raises(InvalidQueuedWorkError, match=field):
            await call()
        assert await h.snapshot() == before, field
    for session, key in (("s\udcff", None), ("s1", "k\ud800")):
        with pytest.raises(InvalidQueuedWorkError, match="UTF-8"):  # refused by the draft itself
            await h.add("x", session=session, source_key=key)
    # and the store still works: the expired claim is renewed, the live one completed, and
    # neither lease moved meanwhile
    assert (await h.store.renew_queued_work_claim(expired, 0)).expires_at_epoch_ms == h.now
    await h.store.complete_queued_work(live.completion())
    assert await h.labels() == ["b", "c", "d"]


# --- reopen (durable backends) ------------------------------------------------------------------


async def test_batches_and_claims_survive_reopen(queue_store_factory, clock):
    """Rust ``runtime_persistence_survives_reopen`` (its queued-work part), plus leases."""
    store = queue_store_factory.open(clock=clock)
    kept = await store.enqueue_queued_work(
        draft("survives reopen", "root", slot=EXCL, source_key="reopen:queued")
    )
    claimed = await store.enqueue_queued_work(draft("claimed", "root", slot=EXCL))
    await store.enqueue_queued_work(draft("after", "root", slot=EXCL))
    first = await store.claim_ready_queued_work("root", "w", IDLE, 60_000, 1)
    assert first.batch_ids == (kept.batch_id,)
    second = await store.claim_ready_queued_work("root", "w", IDLE, 60_000, 1)
    assert second.batch_ids == (claimed.batch_id,)
    await store.abandon_queued_work_claim(first)
    store = queue_store_factory.reopen(store)
    listed = await store.list_queued_work("root")
    assert [b.batch_id for b in listed][:2] == [kept.batch_id, claimed.batch_id]
    assert listed[0] == kept and labels_of(listed) == ["survives reopen", "claimed", "after"]
    assert await store.enqueue_queued_work(draft("again", "root", source_key="reopen:queued")) == kept
    # the lease and the fencing counters survive: the held batch is skipped, tokens go on
    renewed = await store.renew_queued_work_claim(second, 60_000)
    assert renewed.claim_id == second.claim_id
    again = await store.claim_ready_queued_work("root", "w2", IDLE, 60_000, 1)
    assert again.batch_ids == (kept.batch_id,) and again.fencing_token == 2
    fresh = await store.enqueue_queued_work(draft("new", "root"))
    assert fresh.enqueue_seq > listed[-1].enqueue_seq and fresh.batch_id not in {
        b.batch_id for b in listed
    }


# --- the stateful model -------------------------------------------------------------------------


def test_queue_model(queue_store_factory):
    """``QueueMachine`` (moved from tests/test_queue.py): the store against a naive reference."""
    run_queue_model(queue_store_factory)


async def test_a_clock_that_raises_is_a_typed_store_error(queue_store_factory):
    """Every queue store reports a failing clock as ``QueuedWorkError`` (a store that cannot serve
    the call), with the clock's own error chained; nothing changes."""
    from lash_core import QueuedWorkError
    from lash_core.testing import FakeClock

    broken = OSError("clock unplugged")
    clock = FakeClock()
    store = queue_store_factory.open(clock=clock)
    try:
        await store.enqueue_queued_work(draft("before"))
        clock.failure = broken
        with pytest.raises(QueuedWorkError, match="clock failed: .*clock unplugged") as info:
            await store.enqueue_queued_work(draft("after"))
        assert info.value.__cause__ is broken
        clock.failure = None
        assert len(await store.list_queued_work("s1")) == 1  # the refused enqueue added nothing
    finally:
        queue_store_factory.close(store)
