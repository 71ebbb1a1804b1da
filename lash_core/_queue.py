"""Queued work: the ``QueuedWorkStore`` protocol and ``InMemoryQueueStore``, its thin async shell.

The values are in ``_queue_values.py``; the rules (read them first) and the pure ``QueueState`` in
``_queue_state.py``. This module re-exports all of them, so ``lash_core._queue`` stays the one
import for queued work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from ._clock import read_clock_ms, wall_clock_ms
from ._errors import QueuedWorkError
from ._queue_state import (
    BATCH_TRANSITIONS,
    BatchEvent,
    BatchRecord,
    BatchState,
    QueueState,
    QueueStatistics,
    next_batch_state,
)
from ._queue_values import (
    DeliveryPolicy,
    MergeKey,
    QueuedWorkBatch,
    QueuedWorkBatchDraft,
    QueuedWorkClaim,
    QueuedWorkClaimBoundary,
    QueuedWorkCompletion,
    QueuedWorkItem,
    SlotPolicy,
    _uint,
)

__all__ = [
    "DeliveryPolicy",
    "SlotPolicy",
    "QueuedWorkClaimBoundary",
    "MergeKey",
    "QueuedWorkBatchDraft",
    "QueuedWorkItem",
    "QueuedWorkBatch",
    "QueuedWorkClaim",
    "QueuedWorkCompletion",
    "BatchState",
    "BatchEvent",
    "BATCH_TRANSITIONS",
    "next_batch_state",
    "BatchRecord",
    "QueueState",
    "QueueStatistics",
    "QueuedWorkStore",
    "QUEUED_WORK_STORE_METHODS",
    "InMemoryQueueStore",
]


# --- the protocol and the in-memory shell -------------------------------------------------------


@runtime_checkable
class QueuedWorkStore(Protocol):
    """What every queued-work backend offers (in-memory, SQLite, Redis, PostgreSQL): spec section 5.
    This docstring and the rules block of ``lash_core._queue`` are the whole contract: a store
    written from them passes ``tests/conformance``.

    Async. Every method is a coroutine function (``async def``), and the runtime and the handle
    await it directly. ``LashRuntime.builder().with_queue_store(store)`` refuses, when it builds,
    a store whose methods are not coroutine functions (``LashRuntimeError``, code
    ``invalid_configuration``, naming the method). A method must not block the event loop: a
    backend with a blocking driver runs it in a thread.

    Time. Times are epoch milliseconds from the store's own clock (``clock_ms``), read once per
    call; a lease is *live* while ``expires_at > now``.

    Atomicity. Each call is atomic with respect to every other call on the same data (the same
    object, or another object over the same durable backend): two claims never both hold a batch
    under a live lease, and a refused call changes nothing. (``InMemoryQueueStore`` is atomic on
    its event loop; it is not thread-safe.)

    Identifiers. ``batch_id``, ``claim_id`` and ``lease_token`` are non-empty strings that are
    never reused (not across claims, sessions, or a reopen); the item ids of a batch are
    ``f"{batch_id}:item:{index}"``. ``enqueue_seq`` comes from one store-wide counter that only
    grows; a session's batches are always listed and scanned in ``enqueue_seq`` order.

    Operations:

    * ``enqueue_queued_work(draft)``: if the session still holds a batch with the draft's
      ``source_key`` (pending or claimed), that batch is returned unchanged (same ids and
      payloads, whatever the new draft says) and nothing is added, not even a sequence number.
      Otherwise a new batch takes the next ``enqueue_seq``, ``enqueued_at_ms = now`` and the
      draft's fields. Completed and cancelled batches are gone, so their key makes a new batch.
    * ``claim_ready_queued_work(session_id, owner_id, boundary, lease_ttl_ms, max_batches)``:
      ``None`` when ``max_batches == 0``. The *head* is the session's first batch (enqueue order)
      that is available (``available_at_ms <= now``) and not under a live lease; batches before
      it are skipped, not blocking. No head: ``None``. At ``active_turn_checkpoint`` a head whose
      delivery policy is not ``earliest_safe_boundary`` blocks: ``None``. An ``exclusive`` head
      is claimed alone; a ``join`` head gathers the session's batches directly behind it while
      each is available, not under a live lease, ``join``, of the head's delivery policy and of an
      equal merge key (``MergeKey`` compares by value: ``NEVER == NEVER``), up to ``max_batches``
      in all; the first that differs ends the group (other sessions' batches are not in between).
      Each batch keeps the last fencing token issued for it (0 at first); the claim's
      ``fencing_token`` is one more than the largest of its batches' counters, and each claimed
      batch's counter becomes that token, so a batch is never claimed twice with the same or a
      smaller token. (A batch whose counter is 2**64-1 is refused: ``InvalidQueuedWorkError``.)
      The claim has a new ``claim_id`` and ``lease_token``, ``owner_id``,
      ``claimed_at_epoch_ms = now``, ``expires_at_epoch_ms = min(now + lease_ttl_ms, 2**64-1)``
      and the claimed batches as stored, in order. ``lease_ttl_ms == 0`` is allowed: the lease is
      never live, so the batches are pending and re-claimable at once, yet still held.
    * ``claim_ready_queued_work_by_batch_ids(..., batch_ids)``: claims as above with
      ``max_batches = len(batch_ids)``; returns the claim if its batch ids are exactly
      ``batch_ids`` in order, otherwise abandons it and returns ``None`` (the head cannot be
      skipped). That abandoned claim still raised the fencing counters and replaced any expired
      lease on its batches. An empty list gives ``None`` and changes nothing.
    * ``renew_queued_work_claim(claim, lease_ttl_ms)``: every batch of the claim must still be held
      under its claim id and lease token (an expired lease nobody re-claimed still counts), else
      ``QueuedWorkClaimExpired(session_id, claim_id)`` and nothing changes. Sets
      ``expires_at = min(now + lease_ttl_ms, 2**64-1)`` on them (shorter than before is allowed)
      and returns the claim with only ``expires_at_epoch_ms`` changed.
    * ``abandon_queued_work_claim(claim)``: releases the claim's session's batches still held
      under its claim id and lease token (pending again, fencing counters kept); anything else is
      left alone, and nothing raises.
    * ``complete_queued_work(completion)``: removes the completion's batches only if every one is
      still held under its claim id and lease token (expired or not); otherwise
      ``QueuedWorkClaimExpired`` and nothing is removed.
    * ``cancel_queued_work_batch(session_id, batch_id)``: removes and returns a batch of that
      session that is not under a live lease (an expired lease does not protect it); ``None`` for
      an unknown id, another session's batch, or a batch under a live lease.
    * ``list_queued_work(session_id)``: every batch of the session, held or not, available or
      not; ``list_pending_queued_work(session_id)``: those not under a live lease. Both return a
      new list, in ``enqueue_seq`` order.

    Errors. Arguments are checked before anything changes, with ``InvalidQueuedWorkError`` (a
    ``ValueError``) naming the argument: session, owner and batch ids are non-empty ``str``
    encodable as UTF-8; ``boundary`` is a ``QueuedWorkClaimBoundary`` or its wire string;
    ``lease_ttl_ms`` and ``max_batches`` are ``int`` (``bool`` refused) in ``0..2**64-1``;
    ``batch_ids`` is a list or tuple of distinct ids, never a bare ``str``; ``draft``, ``claim``
    and ``completion`` are instances of their classes. ``QueuedWorkClaimExpired`` is only for a
    lease that is no longer held. A backend raises a ``QueuedWorkError`` when it cannot serve, with
    its driver's errors translated at its own boundary; the runtime reports any failure of a store
    call as ``LashRuntimeError`` with code ``store_commit_failed``.
    """

    async def enqueue_queued_work(self, draft: QueuedWorkBatchDraft) -> QueuedWorkBatch:
        """Store the draft as a new batch, or return the session's batch with its source key."""
        ...

    async def claim_ready_queued_work(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        max_batches: int,
    ) -> QueuedWorkClaim | None:
        """Lease the head and the batches that join it, or ``None`` when nothing is claimable."""
        ...

    async def claim_ready_queued_work_by_batch_ids(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        batch_ids: Sequence[str],
    ) -> QueuedWorkClaim | None:
        """Claim the next ready group only if it is exactly ``batch_ids``, in order."""
        ...

    async def renew_queued_work_claim(
        self, claim: QueuedWorkClaim, lease_ttl_ms: int
    ) -> QueuedWorkClaim:
        """Extend a lease that is still held; ``QueuedWorkClaimExpired`` otherwise."""
        ...

    async def abandon_queued_work_claim(self, claim: QueuedWorkClaim) -> None:
        """Release what the claim still holds; never raises for a lost lease."""
        ...

    async def complete_queued_work(self, completion: QueuedWorkCompletion) -> None:
        """Remove the batches if all are still held; ``QueuedWorkClaimExpired`` otherwise."""
        ...

    async def cancel_queued_work_batch(
        self, session_id: str, batch_id: str
    ) -> QueuedWorkBatch | None:
        """Remove and return a batch no live lease protects; ``None`` otherwise."""
        ...

    async def list_queued_work(self, session_id: str) -> list[QueuedWorkBatch]:
        """Every batch of the session, in enqueue order."""
        ...

    async def list_pending_queued_work(self, session_id: str) -> list[QueuedWorkBatch]:
        """The session's batches not under a live lease, in enqueue order."""
        ...


#: The method names of ``QueuedWorkStore``; each must be a coroutine function.
QUEUED_WORK_STORE_METHODS: tuple[str, ...] = (
    "enqueue_queued_work",
    "claim_ready_queued_work",
    "claim_ready_queued_work_by_batch_ids",
    "renew_queued_work_claim",
    "abandon_queued_work_claim",
    "complete_queued_work",
    "cancel_queued_work_batch",
    "list_queued_work",
    "list_pending_queued_work",
)




class InMemoryQueueStore:
    """``QueuedWorkStore`` over a ``QueueState``, for tests, notebooks and single-process runtimes.

    Each method reads ``clock_ms()`` once and runs the core without awaiting, so it is atomic on
    its event loop. It is not thread-safe, and nothing survives the process.
    """

    def __init__(self, *, clock_ms: Callable[[], int] | None = None) -> None:
        self._clock_ms = clock_ms if clock_ms is not None else wall_clock_ms
        self._state = QueueState()

    @property
    def state(self) -> QueueState:
        """The core, for inspection (tests, notebook views); change it only through the store."""
        return self._state

    def _now(self) -> int:
        return _uint(read_clock_ms(self._clock_ms, QueuedWorkError), "clock_ms()")

    def statistics(self) -> QueueStatistics:
        return self._state.statistics(self._now())

    async def enqueue_queued_work(self, draft: QueuedWorkBatchDraft) -> QueuedWorkBatch:
        return self._state.enqueue(draft, self._now())

    async def claim_ready_queued_work(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        max_batches: int,
    ) -> QueuedWorkClaim | None:
        return self._state.claim_ready(
            session_id, owner_id, boundary, lease_ttl_ms, max_batches, self._now()
        )

    async def claim_ready_queued_work_by_batch_ids(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        batch_ids: Sequence[str],
    ) -> QueuedWorkClaim | None:
        return self._state.claim_ready_by_batch_ids(
            session_id, owner_id, boundary, lease_ttl_ms, batch_ids, self._now()
        )

    async def renew_queued_work_claim(
        self, claim: QueuedWorkClaim, lease_ttl_ms: int
    ) -> QueuedWorkClaim:
        return self._state.renew(claim, lease_ttl_ms, self._now())

    async def abandon_queued_work_claim(self, claim: QueuedWorkClaim) -> None:
        self._state.abandon(claim, self._now())

    async def complete_queued_work(self, completion: QueuedWorkCompletion) -> None:
        self._state.complete(completion, self._now())

    async def cancel_queued_work_batch(
        self, session_id: str, batch_id: str
    ) -> QueuedWorkBatch | None:
        return self._state.cancel(session_id, batch_id, self._now())

    async def list_queued_work(self, session_id: str) -> list[QueuedWorkBatch]:
        return self._state.batches(session_id)

    async def list_pending_queued_work(self, session_id: str) -> list[QueuedWorkBatch]:
        return self._state.pending_batches(session_id, self._now())

    def __repr__(self) -> str:
        stats = self.statistics()
        return (
            f"<InMemoryQueueStore sessions={stats.sessions} batches={stats.batches}"
            f" claimed={stats.claimed}>"
        )
