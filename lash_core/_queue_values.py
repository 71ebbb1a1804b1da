"""Queued-work values: policies, merge keys, drafts, batches, items, claims and completions.

Frozen, slotted dataclasses, validated when built (``InvalidQueuedWorkError`` naming the field),
with ``to_dict``/``from_dict`` for stores that persist them. The rules that act on them live in
``_queue_state.py``; the store protocol and the in-memory shell in ``_queue.py``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from ._errors import InvalidQueuedWorkError
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
]


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

    def to_batch(self, batch_id: str, enqueue_seq: int, enqueued_at_ms: int) -> QueuedWorkBatch:
        """The batch this draft becomes when a store assigns it ``batch_id``, ``enqueue_seq`` and
        ``enqueued_at_ms``: the draft's fields, items ``f"{batch_id}:item:{index}"``."""
        return QueuedWorkBatch(
            batch_id=batch_id,
            session_id=self.session_id,
            enqueue_seq=enqueue_seq,
            source_key=self.source_key,
            delivery_policy=self.delivery_policy,
            slot_policy=self.slot_policy,
            merge_key=self.merge_key,
            available_at_ms=self.available_at_ms,
            enqueued_at_ms=enqueued_at_ms,
            items=tuple(
                QueuedWorkItem(f"{batch_id}:item:{i}", payload)
                for i, payload in enumerate(self.payloads)
            ),
        )

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
