"""Queued work: durable per-session batches of turn input, claimed under expiring leases.

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
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from ._clock import wall_clock_ms
from ._cursor import U64_MAX
from ._errors import IllegalBatchTransition, InvalidQueuedWorkError, QueuedWorkClaimExpired
from ._ids import new_prefixed_id
from ._input import TurnInput
from ._json import error_message, short_repr
from ._validate import enum_member, is_uint, is_utf8_str

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

#: Times, sequence numbers and tokens are unsigned 64-bit on the wire (the Rust store and the
#: SQL backends); the expiry saturates here instead of overflowing, as Rust's does.


# --- wire enums ---------------------------------------------------------------------------------


class DeliveryPolicy(enum.StrEnum):
    EARLIEST_SAFE_BOUNDARY = "earliest_safe_boundary"
    AFTER_CURRENT_TURN_COMMIT = "after_current_turn_commit"


class SlotPolicy(enum.StrEnum):
    JOIN = "join"
    EXCLUSIVE = "exclusive"


class QueuedWorkClaimBoundary(enum.StrEnum):
    IDLE = "idle"
    ACTIVE_TURN_CHECKPOINT = "active_turn_checkpoint"


# --- validation helpers -------------------------------------------------------------------------


def _enum(cls: type[E], value: Any, field: str) -> E:
    member: E = enum_member(cls, value, field, InvalidQueuedWorkError)
    return member


def _uint(value: Any, field: str) -> int:
    if not is_uint(value):
        raise InvalidQueuedWorkError(f"{field} must be an int in 0..2**64-1, not {short_repr(value)}")
    return value


def _utf8(value: str, field: str) -> str:
    """Identifiers are stored by backends as UTF-8: a lone surrogate would fail there, later."""
    if not is_utf8_str(value):
        raise InvalidQueuedWorkError(f"{field} is not valid UTF-8 text: {short_repr(value)}")
    return str.__str__(value)  # a str subclass's own __eq__/__hash__ never reach the store


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidQueuedWorkError(f"{field} must be a non-empty str, not {short_repr(value)}")
    return _utf8(value, field)


def _optional_text(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidQueuedWorkError(f"{field} must be a str or None, not {short_repr(value)}")
    return _utf8(value, field)


def _claim_like(value: Any, cls: type, field: str) -> Any:
    if not isinstance(value, cls):
        raise InvalidQueuedWorkError(f"{field} must be a {cls.__name__}, not {type(value).__name__}")
    return value


#: Sequences that are not lists of anything: iterating them would yield characters or byte values.
_BARE = (str, bytes, bytearray, memoryview)


def _tuple_of(value: Any, cls: type, field: str) -> tuple[Any, ...]:
    if isinstance(value, _BARE):
        raise InvalidQueuedWorkError(
            f"{field} must be a list or tuple of {cls.__name__}, not a bare"
            f" {type(value).__name__} ({short_repr(value)})"
        )
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, cls) for v in value):
        raise InvalidQueuedWorkError(f"{field} must be a list or tuple of {cls.__name__}")
    return tuple(value)


def _ids(value: Any, field: str) -> tuple[str, ...]:
    """A list or tuple of distinct, non-empty, UTF-8 ids; a bare ``str`` is refused, not split."""
    ids = _tuple_of(value, str, field)
    for index, one in enumerate(ids):
        _text(one, f"{field}[{index}]")
    if len(set(ids)) != len(ids):
        twice = next(one for i, one in enumerate(ids) if one in ids[:i])
        raise InvalidQueuedWorkError(f"{field} names `{twice}` more than once")
    return ids


def _list_data(data: Mapping[str, Any], key: str) -> list[Any] | tuple[Any, ...]:
    """A list field of a ``from_dict`` document, refused (not iterated) if it is anything else."""
    value = data[key]
    if not isinstance(value, (list, tuple)):
        raise InvalidQueuedWorkError(f"{key} must be a list, not {type(value).__name__}")
    return value


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # normalise a field of a frozen dataclass in __post_init__


_T = TypeVar("_T")
E = TypeVar("E", bound=enum.Enum)


def _from_dict(cls: type[_T], data: Any, build: Callable[[Mapping[str, Any]], _T]) -> _T:
    """Run ``build``; a missing key or wrong shape becomes ``InvalidQueuedWorkError``."""
    if not isinstance(data, Mapping):
        raise InvalidQueuedWorkError(
            f"{cls.__name__} data must be a mapping, not {type(data).__name__}"
        )
    try:
        return build(data)
    except InvalidQueuedWorkError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError, OverflowError) as err:
        # ValueError covers InvalidTurnInputError; RecursionError a document nested too deeply
        raise InvalidQueuedWorkError(f"bad {cls.__name__} data: {error_message(err, 200)}") from None


# --- values -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class MergeKey:
    """Which ``join`` batches may be claimed together: those whose keys are equal.

    Keys compare by value, and ``MergeKey.NEVER == MergeKey.NEVER`` (as Rust's derived
    ``PartialEq`` has it, and as the spec's "an equal merge key" reads literally). So two adjacent
    ``join`` batches that both keep the default ``NEVER`` key *do* gather; ``NEVER`` only keeps a
    batch apart from batches with a different key. Use ``SlotPolicy.EXCLUSIVE`` to claim a batch
    alone.
    """

    kind: str
    name: str | None = None

    NEVER: ClassVar[MergeKey]
    PAYLOAD_DEFAULT: ClassVar[MergeKey]
    _KINDS: ClassVar[frozenset[str]] = frozenset({"never", "payload_default", "group"})

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in self._KINDS:
            raise InvalidQueuedWorkError(
                f"merge key kind must be one of {sorted(self._KINDS)}, not {short_repr(self.kind)}"
            )
        if self.kind == "group":
            _text(self.name, "merge key group name")
        elif self.name is not None:
            raise InvalidQueuedWorkError(f"merge key `{self.kind}` takes no name")

    @classmethod
    def group(cls, name: str) -> MergeKey:
        return cls("group", name)

    def __repr__(self) -> str:
        return (
            f"MergeKey.group({short_repr(self.name)})"
            if self.kind == "group"
            else f"MergeKey.{self.kind.upper()}"
        )

    def to_dict(self) -> dict[str, Any]:
        return (
            {"kind": self.kind, "name": self.name} if self.kind == "group" else {"kind": self.kind}
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MergeKey:
        return _from_dict(cls, data, lambda d: cls(d["kind"], d.get("name")))


MergeKey.NEVER = MergeKey("never")
MergeKey.PAYLOAD_DEFAULT = MergeKey("payload_default")


def _merge_key(value: Any) -> MergeKey:
    if not isinstance(value, MergeKey):
        raise InvalidQueuedWorkError(f"merge_key must be a MergeKey, not {short_repr(value)}")
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class QueuedWorkBatchDraft:
    """What a producer hands ``enqueue_queued_work``; validated here, so no store sees a bad one."""

    session_id: str
    delivery_policy: DeliveryPolicy
    slot_policy: SlotPolicy
    payloads: Sequence[TurnInput]  # stored as a tuple
    _: dataclasses.KW_ONLY
    source_key: str | None = None
    merge_key: MergeKey = MergeKey.NEVER
    available_at_ms: int = 0

    def __post_init__(self) -> None:
        _text(self.session_id, "session_id")
        _set(
            self, "delivery_policy", _enum(DeliveryPolicy, self.delivery_policy, "delivery_policy")
        )
        _set(self, "slot_policy", _enum(SlotPolicy, self.slot_policy, "slot_policy"))
        _set(self, "payloads", _tuple_of(self.payloads, TurnInput, "payloads"))
        if not self.payloads:
            raise InvalidQueuedWorkError("a queued work draft needs at least one payload")
        _optional_text(self.source_key, "source_key")
        _merge_key(self.merge_key)
        _uint(self.available_at_ms, "available_at_ms")

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "delivery_policy": self.delivery_policy.value,
            "slot_policy": self.slot_policy.value,
            "payloads": [p.to_dict() for p in self.payloads],
            "source_key": self.source_key,
            "merge_key": self.merge_key.to_dict(),
            "available_at_ms": self.available_at_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueuedWorkBatchDraft:
        return _from_dict(
            cls,
            data,
            lambda d: cls(
                d["session_id"],
                d["delivery_policy"],
                d["slot_policy"],
                [TurnInput.from_dict(p) for p in _list_data(d, "payloads")],
                source_key=d.get("source_key"),
                merge_key=MergeKey.from_dict(d.get("merge_key", {"kind": "never"})),
                available_at_ms=d.get("available_at_ms", 0),
            ),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class QueuedWorkItem:
    item_id: str
    payload: TurnInput

    def __post_init__(self) -> None:
        _text(self.item_id, "item_id")
        if not isinstance(self.payload, TurnInput):
            raise InvalidQueuedWorkError(f"payload must be a TurnInput, not {short_repr(self.payload)}")

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "payload": self.payload.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueuedWorkItem:
        return _from_dict(cls, data, lambda d: cls(d["item_id"], TurnInput.from_dict(d["payload"])))


@dataclasses.dataclass(frozen=True, slots=True)
class QueuedWorkBatch:
    """A stored batch. Its item ids are ``{batch_id}:item:{index}``; that is checked on build."""

    batch_id: str
    session_id: str
    enqueue_seq: int
    source_key: str | None
    delivery_policy: DeliveryPolicy
    slot_policy: SlotPolicy
    merge_key: MergeKey
    available_at_ms: int
    enqueued_at_ms: int
    items: Sequence[QueuedWorkItem]  # stored as a tuple

    def __post_init__(self) -> None:
        _text(self.batch_id, "batch_id")
        _text(self.session_id, "session_id")
        _uint(self.enqueue_seq, "enqueue_seq")
        _optional_text(self.source_key, "source_key")
        _set(
            self, "delivery_policy", _enum(DeliveryPolicy, self.delivery_policy, "delivery_policy")
        )
        _set(self, "slot_policy", _enum(SlotPolicy, self.slot_policy, "slot_policy"))
        _merge_key(self.merge_key)
        _uint(self.available_at_ms, "available_at_ms")
        _uint(self.enqueued_at_ms, "enqueued_at_ms")
        _set(self, "items", _tuple_of(self.items, QueuedWorkItem, "items"))
        for index, item in enumerate(self.items):
            if item.item_id != f"{self.batch_id}:item:{index}":
                raise InvalidQueuedWorkError(
                    f"item {index} of batch `{self.batch_id}` has id `{item.item_id}`"
                )

    @property
    def payloads(self) -> tuple[TurnInput, ...]:
        return tuple(item.payload for item in self.items)

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "session_id": self.session_id,
            "enqueue_seq": self.enqueue_seq,
            "source_key": self.source_key,
            "delivery_policy": self.delivery_policy.value,
            "slot_policy": self.slot_policy.value,
            "merge_key": self.merge_key.to_dict(),
            "available_at_ms": self.available_at_ms,
            "enqueued_at_ms": self.enqueued_at_ms,
            "items": [item.to_dict() for item in self.items],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueuedWorkBatch:
        return _from_dict(
            cls,
            data,
            lambda d: cls(
                batch_id=d["batch_id"],
                session_id=d["session_id"],
                enqueue_seq=d["enqueue_seq"],
                source_key=d.get("source_key"),
                delivery_policy=d["delivery_policy"],
                slot_policy=d["slot_policy"],
                merge_key=MergeKey.from_dict(d["merge_key"]),
                available_at_ms=d["available_at_ms"],
                enqueued_at_ms=d["enqueued_at_ms"],
                items=[QueuedWorkItem.from_dict(i) for i in _list_data(d, "items")],
            ),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class QueuedWorkCompletion:
    """Proof of a claim, handed to ``complete_queued_work``: which batches, under which lease."""

    session_id: str
    claim_id: str
    lease_token: str
    batch_ids: Sequence[str]  # stored as a tuple

    def __post_init__(self) -> None:
        for field in ("session_id", "claim_id", "lease_token"):
            _text(getattr(self, field), field)
        _set(self, "batch_ids", _ids(self.batch_ids, "batch_ids"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "claim_id": self.claim_id,
            "lease_token": self.lease_token,
            "batch_ids": list(self.batch_ids),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueuedWorkCompletion:
        return _from_dict(
            cls,
            data,
            lambda d: cls(d["session_id"], d["claim_id"], d["lease_token"], d["batch_ids"]),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class QueuedWorkClaim:
    """Batches leased to ``owner_id`` until ``expires_at_epoch_ms``; fencing tokens order claims."""

    session_id: str
    claim_id: str
    owner_id: str
    lease_token: str
    fencing_token: int
    claimed_at_epoch_ms: int
    expires_at_epoch_ms: int
    batches: Sequence[QueuedWorkBatch]  # stored as a tuple

    def __post_init__(self) -> None:
        for field in ("session_id", "claim_id", "owner_id", "lease_token"):
            _text(getattr(self, field), field)
        _uint(self.fencing_token, "fencing_token")
        _uint(self.claimed_at_epoch_ms, "claimed_at_epoch_ms")
        _uint(self.expires_at_epoch_ms, "expires_at_epoch_ms")
        _set(self, "batches", _tuple_of(self.batches, QueuedWorkBatch, "batches"))
        _ids(self.batch_ids, "batches' batch ids")  # distinct, so completion() is valid too

    @property
    def batch_ids(self) -> tuple[str, ...]:
        return tuple(batch.batch_id for batch in self.batches)

    def completion(self) -> QueuedWorkCompletion:
        return QueuedWorkCompletion(
            self.session_id, self.claim_id, self.lease_token, self.batch_ids
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "claim_id": self.claim_id,
            "owner_id": self.owner_id,
            "lease_token": self.lease_token,
            "fencing_token": self.fencing_token,
            "claimed_at_epoch_ms": self.claimed_at_epoch_ms,
            "expires_at_epoch_ms": self.expires_at_epoch_ms,
            "batches": [batch.to_dict() for batch in self.batches],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueuedWorkClaim:
        return _from_dict(
            cls,
            data,
            lambda d: cls(
                session_id=d["session_id"],
                claim_id=d["claim_id"],
                owner_id=d["owner_id"],
                lease_token=d["lease_token"],
                fencing_token=d["fencing_token"],
                claimed_at_epoch_ms=d["claimed_at_epoch_ms"],
                expires_at_epoch_ms=d["expires_at_epoch_ms"],
                batches=[QueuedWorkBatch.from_dict(b) for b in _list_data(d, "batches")],
            ),
        )


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
        batch = QueuedWorkBatch(
            batch_id=batch_id,
            session_id=draft.session_id,
            enqueue_seq=seq,
            source_key=draft.source_key,
            delivery_policy=draft.delivery_policy,
            slot_policy=draft.slot_policy,
            merge_key=draft.merge_key,
            available_at_ms=draft.available_at_ms,
            enqueued_at_ms=now_ms,
            items=tuple(
                QueuedWorkItem(f"{batch_id}:item:{i}", p) for i, p in enumerate(draft.payloads)
            ),
        )
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
        return self._claim(session_id, owner_id, boundary, lease_ttl_ms, max_batches, now_ms)

    def _claim(
        self,
        session_id: str,
        owner_id: str,
        boundary: QueuedWorkClaimBoundary,
        lease_ttl_ms: int,
        max_batches: int,
        now_ms: int,
    ) -> QueuedWorkClaim | None:
        """``claim_ready`` on validated arguments."""
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
        claim = self._claim(session_id, owner_id, boundary, lease_ttl_ms, len(wanted), now_ms)
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
        return _uint(self._clock_ms(), "clock_ms()")

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
