"""The pure claim rules of queued work: batch lifecycle and ``QueueState`` (sans-IO).

Rules (read these before the code)
----------------------------------
* Order. Every enqueued batch takes the next value of one store-wide, strictly increasing
  ``enqueue_seq``; a session's batches are always listed and scanned in that order.
* Idempotency. A draft whose ``source_key`` matches a batch the session still holds returns that
  batch unchanged (even if the payloads differ). Completed and cancelled batches are removed, so
  their source key no longer deduplicates: enqueueing it again makes a new batch.
* Leases. A batch is *held* under a claim id and lease token from the moment it is claimed until it
  is abandoned, completed or re-claimed. The lease is *live* while ``expires_at > now``. An expired
  lease still counts as held (renew and complete succeed) until somebody else claims the batch.
  A ``lease_ttl_ms`` of 0 is allowed (as in Rust): ``expires_at == now``, so the lease is never
  live; the batch is held-but-expired from the start (pending, cancellable, re-claimable at once).
* Head. A claim starts at the session's first batch that is available (``available_at_ms <= now``)
  and not under a live lease; batches before it that are unavailable or leased are skipped.
  At ``active_turn_checkpoint`` a head whose delivery policy is not ``earliest_safe_boundary``
  blocks the whole claim (``None``); nothing behind it is considered.
* Gathering. An ``exclusive`` head is claimed alone. A ``join`` head takes the batches directly
  behind it while each is ready, ``join``, of the head's delivery policy and of an equal merge key,
  up to ``max_batches`` in all; the first one that differs ends the group.
* Fencing. Each batch keeps the last token issued for it. A claim's ``fencing_token`` is the
  largest of its batches' counters plus one, and every claimed batch's counter becomes that token,
  so each claim holding a batch carries a larger token than every earlier claim that held it. (Rust
  uses the head's counter alone, which lets a group claim reuse a token a follower already had.)
  A batch whose counter reached 2**64-1 is refused a claim rather than given a repeated token.
* Arguments. Every operation validates all its arguments (ids are non-empty UTF-8 ``str``; id lists
  are lists or tuples of distinct ids, never a bare ``str``) before it changes anything, and raises
  ``InvalidQueuedWorkError`` for a bad one.
* Cancel removes a batch unless a live lease protects it; an expired lease does not.
* Lifecycle. Every change to a batch goes through ``BATCH_TRANSITIONS``; a move the table lacks
  raises ``IllegalBatchTransition`` before anything is touched.

``QueueState`` is the sans-IO core: it never reads a clock (every operation takes ``now_ms``) and
never awaits. ``InMemoryQueueStore`` is the thin async shell that supplies the clock.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from ._cursor import U64_MAX
from ._errors import IllegalBatchTransition, InvalidQueuedWorkError, QueuedWorkClaimExpired
from ._ids import new_prefixed_id
from ._queue_values import (
    _claim_like,
    _optional_text,
    DeliveryPolicy,
    QueuedWorkBatch,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkCompletion,
    SlotPolicy,
    _enum,
    _from_dict,
    _ids,
    _text,
    _uint,
)

__all__ = [
    "BatchState",
    "BatchEvent",
    "BATCH_TRANSITIONS",
    "next_batch_state",
    "BatchRecord",
    "QueueState",
    "QueueStatistics",
]


# --- batch lifecycle ----------------------------------------------------------------------------


class BatchState(enum.StrEnum):
    """Where a batch is. ``LEASE_EXPIRED`` is derived: held, but the lease is no longer live."""

    PENDING = "pending"
    CLAIMED = "claimed"
    LEASE_EXPIRED = "lease_expired"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class BatchEvent(enum.StrEnum):
    CLAIM = "claim"
    RENEW = "renew"
    ABANDON = "abandon"
    COMPLETE = "complete"
    CANCEL = "cancel"


_S, _E = BatchState, BatchEvent

#: Every allowed move; anything absent is illegal. An expired lease behaves like a held one for its
#: own holder (renew, abandon, complete) and like a pending batch for everyone else (claim, cancel).
#: A live lease can be neither re-claimed nor cancelled; completed and cancelled are final.
#: CLAIMED -> LEASE_EXPIRED is time passing, not an event: with a zero ttl (``expires_at == now``) a
#: claim or renew lands in CLAIMED and is read back as LEASE_EXPIRED at that same ``now``.
BATCH_TRANSITIONS: Mapping[tuple[BatchState, BatchEvent], BatchState] = MappingProxyType(
    {
        (_S.PENDING, _E.CLAIM): _S.CLAIMED,
        (_S.PENDING, _E.CANCEL): _S.CANCELLED,
        (_S.CLAIMED, _E.RENEW): _S.CLAIMED,
        (_S.CLAIMED, _E.ABANDON): _S.PENDING,
        (_S.CLAIMED, _E.COMPLETE): _S.COMPLETED,
        (_S.LEASE_EXPIRED, _E.CLAIM): _S.CLAIMED,
        (_S.LEASE_EXPIRED, _E.RENEW): _S.CLAIMED,
        (_S.LEASE_EXPIRED, _E.ABANDON): _S.PENDING,
        (_S.LEASE_EXPIRED, _E.COMPLETE): _S.COMPLETED,
        (_S.LEASE_EXPIRED, _E.CANCEL): _S.CANCELLED,
    }
)
del _S, _E


def next_batch_state(batch_id: str, state: BatchState, event: BatchEvent) -> BatchState:
    """Look the move up in ``BATCH_TRANSITIONS``; ``IllegalBatchTransition`` if it is absent."""
    try:
        return BATCH_TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalBatchTransition(batch_id, str(state), str(event)) from None


@dataclasses.dataclass(slots=True)
class BatchRecord:
    """One stored batch plus its lease columns: the row a persistent backend would keep.

    Mutate it only through its methods; each checks the transition table first, so an illegal
    move raises ``IllegalBatchTransition`` with the record untouched.
    """

    batch: QueuedWorkBatch
    fencing_counter: int = 0
    claim_id: str | None = None
    lease_token: str | None = None
    owner_id: str | None = None
    expires_at_ms: int = 0
    ended: BatchState | None = None  # COMPLETED or CANCELLED once removed from the queue

    def state(self, now_ms: int) -> BatchState:
        if self.ended is not None:
            return self.ended
        if self.claim_id is None:
            return BatchState.PENDING
        return BatchState.CLAIMED if self.expires_at_ms > now_ms else BatchState.LEASE_EXPIRED

    def is_held_by(self, claim_id: str, lease_token: str) -> bool:
        return self.ended is None and self.claim_id == claim_id and self.lease_token == lease_token

    def _move(self, event: BatchEvent, now_ms: int) -> BatchState:
        return next_batch_state(self.batch.batch_id, self.state(_uint(now_ms, "now_ms")), event)

    def claim(
        self,
        claim_id: str,
        lease_token: str,
        owner_id: str,
        expires_at_ms: int,
        now_ms: int,
        *,
        fencing_token: int | None = None,
    ) -> None:
        """Hold the batch under a new lease; its counter becomes ``fencing_token`` (default: +1).

        The token must be larger than the counter, so no claim on this batch ever repeats or
        lowers a token; a counter at 2**64-1 cannot be claimed again (``InvalidQueuedWorkError``).
        """
        self._move(BatchEvent.CLAIM, now_ms)
        token = self.fencing_counter + 1 if fencing_token is None else fencing_token
        _uint(token, "fencing_token")
        if token <= self.fencing_counter:
            raise InvalidQueuedWorkError(
                f"fencing token {token} of a claim on batch `{self.batch.batch_id}` does not"
                f" exceed its last token {self.fencing_counter}"
            )
        _text(claim_id, "claim_id")
        _text(lease_token, "lease_token")
        _text(owner_id, "owner_id")
        _uint(expires_at_ms, "expires_at_ms")
        self.fencing_counter = token
        self.claim_id, self.lease_token, self.owner_id = claim_id, lease_token, owner_id
        self.expires_at_ms = expires_at_ms

    def renew(self, expires_at_ms: int, now_ms: int) -> None:
        self._move(BatchEvent.RENEW, now_ms)
        self.expires_at_ms = _uint(expires_at_ms, "expires_at_ms")

    def release(self, now_ms: int) -> None:
        """Abandon: back to pending. The fencing counter stays, so later claims fence higher."""
        self._move(BatchEvent.ABANDON, now_ms)
        self.claim_id = self.lease_token = self.owner_id = None
        self.expires_at_ms = 0

    def complete(self, now_ms: int) -> None:
        self.ended = self._move(BatchEvent.COMPLETE, now_ms)

    def cancel(self, now_ms: int) -> None:
        self.ended = self._move(BatchEvent.CANCEL, now_ms)

    def to_dict(self) -> dict[str, Any]:
        """The live row (``ended`` is not kept: ended batches are deleted, not stored)."""
        return {
            "batch": self.batch.to_dict(),
            "fencing_counter": self.fencing_counter,
            "claim_id": self.claim_id,
            "lease_token": self.lease_token,
            "owner_id": self.owner_id,
            "expires_at_ms": self.expires_at_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchRecord:
        def build(d: Mapping[str, Any]) -> BatchRecord:
            held = [d.get(k) for k in ("claim_id", "lease_token", "owner_id")]
            if any(v is None for v in held) and any(v is not None for v in held):
                raise InvalidQueuedWorkError("claim_id, lease_token and owner_id go together")
            for value, field in zip(held, ("claim_id", "lease_token", "owner_id"), strict=True):
                _optional_text(value, field)
            return cls(
                QueuedWorkBatch.from_dict(d["batch"]),
                fencing_counter=_uint(d.get("fencing_counter", 0), "fencing_counter"),
                claim_id=held[0],
                lease_token=held[1],
                owner_id=held[2],
                expires_at_ms=_uint(d.get("expires_at_ms", 0), "expires_at_ms"),
            )

        return _from_dict(cls, data, build)


# --- the sans-IO core ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class QueueStatistics:
    """A cheap snapshot, with ``pending + claimed == batches``.

    ``pending`` is what ``list_pending_queued_work`` shows (``lease_expired`` batches included);
    ``claimed`` counts live leases.
    """

    sessions: int
    batches: int
    pending: int
    claimed: int
    lease_expired: int
    next_enqueue_seq: int


class QueueState:
    """All sessions' batches and leases. Pure: time arrives as ``now_ms``, results leave as values.

    ``new_id(prefix)`` makes batch ids (``qwb``), claim ids (``qwc``) and lease tokens (``qwl``);
    the default is a uuid4, so ids never repeat across claims or restarts.
    """

    def __init__(self, *, new_id: Callable[[str], str] = new_prefixed_id) -> None:
        self._new_id = new_id
        # session id -> batch id -> record; insertion order is enqueue_seq order
        self._sessions: dict[str, dict[str, BatchRecord]] = {}
        self._by_source_key: dict[tuple[str, str], str] = {}
        self._last_seq = 0

    @classmethod
    def from_records(
        cls,
        records: Iterable[BatchRecord],
        last_seq: int,
        *,
        new_id: Callable[[str], str] = new_prefixed_id,
    ) -> QueueState:
        """A state holding ``records`` (any sessions, listed in ``enqueue_seq`` order) whose
        counter last handed out ``last_seq``: what a durable store loads before it applies one
        operation of these rules, and writes back after."""
        state = cls(new_id=new_id)
        for record in records:
            if not isinstance(record, BatchRecord):
                raise InvalidQueuedWorkError(f"records must be BatchRecords, not {type(record).__name__}")
            batch = record.batch
            state._sessions.setdefault(batch.session_id, {})[batch.batch_id] = record
            if batch.source_key is not None:
                state._by_source_key[(batch.session_id, batch.source_key)] = batch.batch_id
        state._last_seq = _uint(last_seq, "last_seq")
        return state

    @property
    def last_seq(self) -> int:
        """The last ``enqueue_seq`` handed out (0 before the first enqueue)."""
        return self._last_seq

    # reads

    def records(self, session_id: str) -> list[BatchRecord]:
        return list(self._sessions.get(_text(session_id, "session_id"), {}).values())

    def record(self, session_id: str, batch_id: str) -> BatchRecord | None:
        session = self._sessions.get(_text(session_id, "session_id"), {})
        return session.get(_text(batch_id, "batch_id"))

    def batches(self, session_id: str) -> list[QueuedWorkBatch]:
        return [r.batch for r in self.records(_text(session_id, "session_id"))]

    def pending_batches(self, session_id: str, now_ms: int) -> list[QueuedWorkBatch]:
        _text(session_id, "session_id")
        _uint(now_ms, "now_ms")
        return [
            r.batch for r in self.records(session_id) if r.state(now_ms) is not BatchState.CLAIMED
        ]

    def statistics(self, now_ms: int) -> QueueStatistics:
        _uint(now_ms, "now_ms")
        states = [r.state(now_ms) for batches in self._sessions.values() for r in batches.values()]
        claimed = states.count(BatchState.CLAIMED)
        return QueueStatistics(
            sessions=len(self._sessions),
            batches=len(states),
            pending=len(states) - claimed,
            claimed=claimed,
            lease_expired=states.count(BatchState.LEASE_EXPIRED),
            next_enqueue_seq=self._last_seq + 1,
        )

    # writes

    def enqueue(self, draft: QueuedWorkBatchDraft, now_ms: int) -> QueuedWorkBatch:
        if not isinstance(draft, QueuedWorkBatchDraft):
            raise InvalidQueuedWorkError(
                f"expected a QueuedWorkBatchDraft, not {type(draft).__name__}"
            )
        _uint(now_ms, "now_ms")
        if draft.source_key is not None:
            existing = self._by_source_key.get((draft.session_id, draft.source_key))
            if existing is not None:
                return self._sessions[draft.session_id][existing].batch
        seq = self._last_seq + 1
        batch_id = self._new_id("qwb")
        batch = draft.to_batch(batch_id, seq, now_ms)
        session = self._sessions.setdefault(draft.session_id, {})
        if batch_id in session:
            raise InvalidQueuedWorkError(f"batch id `{batch_id}` is already in use")
        self._last_seq = seq
        session[batch_id] = BatchRecord(batch)
        if draft.source_key is not None:
            self._by_source_key[(draft.session_id, draft.source_key)] = batch_id
        return batch

    def claim_ready(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        max_batches: int,
        now_ms: int,
    ) -> QueuedWorkClaim | None:
        boundary = _claim_args(session_id, owner_id, boundary, lease_ttl_ms, now_ms)
        _uint(max_batches, "max_batches")
        if max_batches == 0:
            return None
        group = _ready_group(self.records(session_id), boundary, max_batches, now_ms)
        if not group:
            return None
        # Larger than every token any of these batches was ever given (rules: Fencing).
        fencing_token = max(r.fencing_counter for r in group) + 1
        if fencing_token > U64_MAX:
            raise InvalidQueuedWorkError(
                f"a batch of session `{session_id}` has used every fencing token up to 2**64-1"
            )
        # Build (and so validate) the claim before any record changes.
        claim = QueuedWorkClaim(
            session_id=session_id,
            claim_id=self._new_id("qwc"),
            owner_id=owner_id,
            lease_token=self._new_id("qwl"),
            fencing_token=fencing_token,
            claimed_at_epoch_ms=now_ms,
            expires_at_epoch_ms=min(now_ms + lease_ttl_ms, U64_MAX),
            batches=tuple(r.batch for r in group),
        )
        for record in group:
            record.claim(
                claim.claim_id,
                claim.lease_token,
                owner_id,
                claim.expires_at_epoch_ms,
                now_ms,
                fencing_token=fencing_token,
            )
        return claim

    def claim_ready_by_batch_ids(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        batch_ids: Sequence[str],
        now_ms: int,
    ) -> QueuedWorkClaim | None:
        """Claim the next ready group only if it is exactly ``batch_ids``, in order.

        As the spec (and Rust's default method) says, a mismatch claims and then abandons: the
        batches' fencing counters still go up, and a previous expired lease on them is gone.
        """
        boundary = _claim_args(session_id, owner_id, boundary, lease_ttl_ms, now_ms)
        wanted = _ids(batch_ids, "batch_ids")
        claim = self.claim_ready(session_id, owner_id, boundary, lease_ttl_ms, len(wanted), now_ms)
        if claim is None or claim.batch_ids == wanted:
            return claim
        self.abandon(claim, now_ms)
        return None

    def renew(self, claim: QueuedWorkClaim, lease_ttl_ms: int, now_ms: int) -> QueuedWorkClaim:
        _claim_like(claim, QueuedWorkClaim, "claim")
        _uint(lease_ttl_ms, "lease_ttl_ms")
        _uint(now_ms, "now_ms")
        records = self._held(claim.session_id, claim.claim_id, claim.lease_token, claim.batch_ids)
        expires_at = min(now_ms + lease_ttl_ms, U64_MAX)
        for record in records:
            record.renew(expires_at, now_ms)
        return dataclasses.replace(claim, expires_at_epoch_ms=expires_at)

    def abandon(self, claim: QueuedWorkClaim, now_ms: int) -> None:
        _claim_like(claim, QueuedWorkClaim, "claim")
        _uint(now_ms, "now_ms")
        for record in self.records(claim.session_id):
            if record.is_held_by(claim.claim_id, claim.lease_token):
                record.release(now_ms)

    def complete(self, completion: QueuedWorkCompletion, now_ms: int) -> None:
        _claim_like(completion, QueuedWorkCompletion, "completion")
        _uint(now_ms, "now_ms")
        records = self._held(
            completion.session_id, completion.claim_id, completion.lease_token, completion.batch_ids
        )
        for record in records:
            record.complete(now_ms)
        for record in records:
            self._remove(record)

    def cancel(self, session_id: str, batch_id: str, now_ms: int) -> QueuedWorkBatch | None:
        _uint(now_ms, "now_ms")
        record = self.record(_text(session_id, "session_id"), _text(batch_id, "batch_id"))
        if record is None or (record.state(now_ms), BatchEvent.CANCEL) not in BATCH_TRANSITIONS:
            return None  # unknown, or under a live lease: "already claimed or completed"
        record.cancel(now_ms)
        self._remove(record)
        return record.batch

    # helpers

    def _held(
        self, session_id: str, claim_id: str, lease_token: str, batch_ids: Iterable[str]
    ) -> list[BatchRecord]:
        """The records for ``batch_ids`` if all are held under the lease; else the claim expired."""
        records = [self.record(session_id, batch_id) for batch_id in dict.fromkeys(batch_ids)]
        if not all(r is not None and r.is_held_by(claim_id, lease_token) for r in records):
            raise QueuedWorkClaimExpired(session_id, claim_id)
        return records  # type: ignore[return-value]

    def _remove(self, record: BatchRecord) -> None:
        batch = record.batch
        session = self._sessions[batch.session_id]
        del session[batch.batch_id]
        if not session:
            del self._sessions[batch.session_id]
        if batch.source_key is not None:
            self._by_source_key.pop((batch.session_id, batch.source_key), None)


def _claim_args(
    session_id: Any, owner_id: Any, boundary: Any, lease_ttl_ms: Any, now_ms: Any
) -> QueuedWorkClaimBoundary:
    """Check what both claim operations take; the boundary comes back as the enum."""
    _text(session_id, "session_id")
    _text(owner_id, "owner_id")
    checked = _enum(QueuedWorkClaimBoundary, boundary, "boundary")
    _uint(lease_ttl_ms, "lease_ttl_ms")  # 0 is allowed: a lease that is expired at once
    _uint(now_ms, "now_ms")
    return checked


def _ready_group(
    records: Sequence[BatchRecord], boundary: QueuedWorkClaimBoundary, max_batches: int, now_ms: int
) -> list[BatchRecord]:
    """The head and the batches that join it (rules at the top); ``[]`` if nothing is claimable."""

    def ready(record: BatchRecord) -> bool:
        return (
            record.batch.available_at_ms <= now_ms
            and record.state(now_ms) is not BatchState.CLAIMED
        )

    start = next((i for i, r in enumerate(records) if ready(r)), None)
    if start is None:
        return []
    head = records[start].batch
    if boundary is QueuedWorkClaimBoundary.ACTIVE_TURN_CHECKPOINT and (
        head.delivery_policy is not DeliveryPolicy.EARLIEST_SAFE_BOUNDARY
    ):
        return []
    group = [records[start]]
    if head.slot_policy is SlotPolicy.JOIN:
        for record in records[start + 1 :]:
            batch = record.batch
            if len(group) >= max_batches or not (
                ready(record)
                and batch.slot_policy is SlotPolicy.JOIN
                and batch.delivery_policy is head.delivery_policy
                and batch.merge_key == head.merge_key
            ):
                break
            group.append(record)
    return group
