"""``QueueMachine``: a queued-work store against a naive reference, for every backend.

Moved here from ``tests/test_queue.py`` so that every backend runs it. The in-memory store's
extra checks (its records' fencing counters and claim ids, its statistics) live in
``InMemoryQueueMachine`` there, a subclass that fills ``check_store``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from lash_core import (
    DeliveryPolicy,
    MergeKey,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkClaimExpired,
    SlotPolicy,
    TurnInput,
)
from lash_core.testing import FakeClock

ESB = DeliveryPolicy.EARLIEST_SAFE_BOUNDARY
ACTC = DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT
JOIN, EXCL = SlotPolicy.JOIN, SlotPolicy.EXCLUSIVE
CHECKPOINT = QueuedWorkClaimBoundary.ACTIVE_TURN_CHECKPOINT


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

    ``enqueue_seq`` is checked to grow with every new batch (not by how much: a database sequence
    may skip values). Store calls run on one event loop per example. Hook: ``check_store`` (extra
    invariants of one backend).
    """

    SESSIONS = ("s1", "s2")

    def __init__(self, factory: Any) -> None:
        super().__init__()
        self.factory = factory
        self.clock = FakeClock()
        self.loop = asyncio.new_event_loop()
        self.store = factory.open(clock=self.clock)
        self.model: list[ModelBatch] = []
        self.last_seq = 0
        self.claims: list[QueuedWorkClaim] = []
        self.known_ids: list[str] = []
        self.counter = 0
        self.tokens: dict[str, list[int]] = {}  # batch id -> every fencing token it was given

    def teardown(self) -> None:
        try:
            self.factory.close(self.store)
        finally:
            self.loop.close()

    @property
    def now(self) -> int:
        return self.clock.ms()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def check_store(self) -> None:
        """Extra invariants of one backend; nothing here."""

    # -- the reference ---------------------------------------------------------------------------

    def session_batches(self, session: str) -> list[ModelBatch]:
        return sorted((b for b in self.model if b.session == session), key=lambda b: b.seq)

    def expected_group(self, session: str, boundary: Any, max_batches: int) -> list[ModelBatch]:
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

    def held_all(self, session: str, claim_id: str, token: str, batch_ids: Any) -> bool:
        for batch_id in batch_ids:
            found = [b for b in self.model if b.session == session and b.batch_id == batch_id]
            if not found or found[0].holder != (claim_id, token):
                return False
        return True

    # -- rules -----------------------------------------------------------------------------------

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
        batch = self.run(self.store.enqueue_queued_work(d))
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
        assert batch.enqueue_seq > self.last_seq and batch.enqueued_at_ms == self.now
        self.last_seq = batch.enqueue_seq
        assert [p.content for p in batch.payloads] == texts
        assert [i.item_id for i in batch.items] == [
            f"{batch.batch_id}:item:{i}" for i in range(count)
        ]
        assert batch.batch_id not in self.known_ids  # never reused
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
        assert all(claim.lease_token not in (c.claim_id, c.lease_token) for c in self.claims)
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
        claim = self.run(
            self.store.claim_ready_queued_work(session, "w", boundary, ttl, max_batches)
        )
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
        claim = self.run(
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
            renewed = self.run(self.store.renew_queued_work_claim(claim, ttl))
            assert renewed == dataclasses.replace(claim, expires_at_epoch_ms=self.now + ttl)
            for b in self.model:
                if b.holder == (claim.claim_id, claim.lease_token):
                    b.expires = self.now + ttl
        else:
            with pytest.raises(QueuedWorkClaimExpired):
                self.run(self.store.renew_queued_work_claim(claim, ttl))

    @precondition(lambda self: self.claims)
    @rule(index=st.one_of(st.just(-1), st.integers(0, 1_000)))  # -1: the latest claim
    def abandon(self, index):
        claim = self.claims[index % len(self.claims)]
        self.run(self.store.abandon_queued_work_claim(claim))
        for b in self.model:
            if b.session == claim.session_id and b.holder == (claim.claim_id, claim.lease_token):
                b.holder, b.expires = None, 0

    @precondition(lambda self: self.claims)
    @rule(index=st.integers(0, 1_000))
    def complete(self, index):
        claim = self.claims[index % len(self.claims)]
        if self.held_all(claim.session_id, claim.claim_id, claim.lease_token, claim.batch_ids):
            self.run(self.store.complete_queued_work(claim.completion()))
            self.model = [b for b in self.model if b.batch_id not in claim.batch_ids]
        else:
            with pytest.raises(QueuedWorkClaimExpired):
                self.run(self.store.complete_queued_work(claim.completion()))

    @rule(session=st.sampled_from(SESSIONS), data=st.data())
    def cancel(self, session, data):
        batch_id = data.draw(st.sampled_from([*self.known_ids, "qwb-unknown"]))
        found = [b for b in self.model if b.session == session and b.batch_id == batch_id]
        result = self.run(self.store.cancel_queued_work_batch(session, batch_id))
        if not found or found[0].live(self.now):
            assert result is None
        else:
            assert result is not None and result.batch_id == batch_id
            self.model.remove(found[0])

    @rule(ms=st.integers(0, 25))
    def advance(self, ms):
        self.clock.advance(ms / 1000)

    @invariant()
    def store_matches_model(self):
        for session in self.SESSIONS:
            expected = self.session_batches(session)
            listed = self.run(self.store.list_queued_work(session))
            assert [b.batch_id for b in listed] == [b.batch_id for b in expected]
            assert [[i.payload.content for i in b.items] for b in listed] == [
                b.texts for b in expected
            ]
            pending = self.run(self.store.list_pending_queued_work(session))
            assert [b.batch_id for b in pending] == [
                b.batch_id for b in expected if not b.live(self.now)
            ]
            for b in expected:  # the counter is the last token issued for the batch
                assert b.fencing == self.tokens.get(b.batch_id, [0])[-1]
        self.check_store()


#: 500 examples of up to 50 steps: about 10 s for the in-memory store on one core.
QUEUE_MODEL_SETTINGS = settings(
    max_examples=500,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def run_queue_model(factory: Any, machine: type[QueueMachine] = QueueMachine, **overrides: Any) -> None:
    """Run ``machine`` (``QueueMachine`` or a subclass) against stores opened by ``factory``."""
    run_state_machine_as_test(
        lambda: machine(factory), settings=settings(QUEUE_MODEL_SETTINGS, **overrides)
    )
