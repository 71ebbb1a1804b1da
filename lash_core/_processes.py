"""Process scopes, handle grants and an in-memory process registry.

Rules (read these before the code):

* A *process* is one piece of background work with a lifecycle: it starts ``running`` and ends in
  exactly one terminal status, ``completed``, ``failed`` or ``cancelled``. A terminal process never
  changes status again.
* A *scope* is who can see a process: a session's root scope (``session:{session_id}``) or one agent
  frame inside it (``session:{session_id}/frame:{frame_id}``). An empty frame id means the root scope.
  Grants are keyed by the scope *id*, so two scopes with the same id share their grants.
* A *grant* gives one scope a handle on one process. Starting a process grants it to the starting
  scope; ``grant_handle`` adds it to another. Granting again to the same scope replaces the
  descriptor and keeps the original ``granted_at_ms``. Revoking a grant that does not exist is a no-op.
* Listing a scope: ``all`` is every grant of the scope, ``live`` only those whose process is still
  running. Both are sorted by process id (plain string order).
* ``cancel_process`` on a running process makes it ``cancelled``; on a terminal process it changes
  nothing and returns the record as it is (cancelling twice is a no-op).
* ``complete_process`` on a running process sets the given terminal status; repeating the same
  terminal status is a no-op; asking for a *different* terminal status raises.
* ``start_process`` with an explicit id that already exists: the same name, kind and owner scope is a
  replay (the existing process is granted to the scope again and returned); anything else raises.
* A session's visible handles (``list_session_process_handles``): the root scope, plus the current
  agent frame's scope when a non-empty frame id is current and its scope id differs; the two lists
  are merged, sorted by process id and de-duplicated, the root scope's grant winning a tie.
"""

from __future__ import annotations

import dataclasses
import functools
import enum
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from ._clock import read_clock_ms, wall_clock_ms
from ._errors import InvalidProcessError, ProcessRegistryError, UnknownProcessError
from ._json import short_repr
from ._validate import is_utf8_str

__all__ = [
    "ProcessScopeId",
    "ProcessScope",
    "ProcessStatus",
    "ProcessListMode",
    "ProcessHandleDescriptor",
    "ProcessRecord",
    "ProcessHandleGrant",
    "ProcessHandleGrantEntry",
    "ProcessHandleSummary",
    "ProcessRegistry",
    "PROCESS_REGISTRY_ASYNC_METHODS",
    "PROCESS_REGISTRY_SYNC_METHODS",
    "InMemoryProcessRegistry",
    "merge_process_handles",
    "list_session_process_handles",
]

_log = logging.getLogger(__name__)


# --- scopes ---------------------------------------------------------------------------------------


class ProcessScopeId(str):
    """The string that keys a scope's grants: ``session:{id}`` or ``session:{id}/frame:{frame}``."""

    __slots__ = ()

    def as_str(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"ProcessScopeId({str.__repr__(self)})"


#: What joins a session and a frame in a scope id (``session:{session_id}/frame:{frame_id}``).
_FRAME_SEPARATOR = "/frame:"


def _utf8(name: str, value: str | None) -> None:
    """Ids and names are stored and shown as UTF-8: a lone surrogate would fail there, later."""
    if value is not None and not is_utf8_str(value):
        raise InvalidProcessError(f"{name} is not valid UTF-8: {short_repr(value)}")


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessScope:
    """Who can see a process: a session's root (``agent_frame_id=None``) or one of its agent frames."""

    session_id: str
    agent_frame_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.session_id, str):
            raise TypeError(f"session id must be a str, not {type(self.session_id).__name__}")
        if self.agent_frame_id is not None and not isinstance(self.agent_frame_id, str):
            raise TypeError(
                f"agent frame id must be a str or None, not {type(self.agent_frame_id).__name__}"
            )
        _utf8("session id", self.session_id)
        _utf8("agent frame id", self.agent_frame_id)
        if _FRAME_SEPARATOR in self.session_id:  # else `session:{a}/frame:{f}` has two readings
            raise InvalidProcessError(
                f"a process scope's session id may not contain {_FRAME_SEPARATOR!r}: "
                f"{short_repr(self.session_id)}"
            )
        object.__setattr__(self, "session_id", str.__str__(self.session_id))
        if self.agent_frame_id is not None:
            object.__setattr__(self, "agent_frame_id", str.__str__(self.agent_frame_id))

    @classmethod
    def for_agent_frame(cls, session_id: str, frame_id: str) -> ProcessScope:
        return cls(session_id, frame_id)

    def id(self) -> ProcessScopeId:
        if self.agent_frame_id:
            return ProcessScopeId(f"session:{self.session_id}/frame:{self.agent_frame_id}")
        return ProcessScopeId(f"session:{self.session_id}")

    def is_empty(self) -> bool:
        return self.session_id == ""

    def to_dict(self) -> dict[str, str]:
        out = {"session_id": self.session_id}
        if self.agent_frame_id is not None:
            out["agent_frame_id"] = self.agent_frame_id
        return out


# --- values ---------------------------------------------------------------------------------------


class ProcessStatus(enum.StrEnum):
    """A process's lifecycle status; the values are the wire strings."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self is not ProcessStatus.RUNNING


class ProcessListMode(enum.StrEnum):
    """``live``: grants whose process is still running; ``all``: every grant."""

    LIVE = "live"
    ALL = "all"


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessHandleDescriptor:
    """How a grant presents its process to the scope holding it."""

    kind: str | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        for field, value in (("kind", self.kind), ("label", self.label)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"descriptor {field} must be a str or None")
            _utf8(f"descriptor {field}", value)

    def to_dict(self) -> dict[str, str]:
        out = {}
        if self.kind is not None:
            out["kind"] = self.kind
        if self.label is not None:
            out["label"] = self.label
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessRecord:
    """The process itself, independent of who holds a handle on it."""

    process_id: str
    name: str
    kind: str | None
    owner_scope: ProcessScope
    status: ProcessStatus
    created_at_ms: int
    updated_at_ms: int

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def owner_scope_id(self) -> ProcessScopeId:
        return self.owner_scope.id()


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessHandleGrant:
    """One scope's handle on one process."""

    scope_id: ProcessScopeId
    session_id: str
    process_id: str
    descriptor: ProcessHandleDescriptor
    granted_at_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessHandleGrantEntry:
    """A grant with the process record as it was when listed; what a registry's list returns."""

    grant: ProcessHandleGrant
    record: ProcessRecord

    @property
    def process_id(self) -> str:
        return self.grant.process_id

    def summary(self) -> ProcessHandleSummary:
        return ProcessHandleSummary(
            process_id=self.record.process_id,
            descriptor=self.grant.descriptor,
            status=self.record.status,
            scope_id=self.grant.scope_id,
            granted_at_ms=self.grant.granted_at_ms,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessHandleSummary:
    """What a client sees of a handle. ``to_dict`` gives the wire shape (``__handle__: "process"``);
    ``scope_id`` and ``granted_at_ms`` are local extras that are not on the wire."""

    process_id: str
    descriptor: ProcessHandleDescriptor
    status: ProcessStatus
    scope_id: ProcessScopeId
    granted_at_ms: int

    HANDLE_TYPE = "process"

    @property
    def id(self) -> str:
        return self.process_id

    @property
    def name(self) -> str | None:
        return self.descriptor.label

    @property
    def kind(self) -> str | None:
        return self.descriptor.kind

    def to_dict(self) -> dict[str, Any]:
        return {
            "__handle__": self.HANDLE_TYPE,
            "id": self.process_id,
            "process_id": self.process_id,
            "descriptor": self.descriptor.to_dict(),
            "status": str(self.status),
        }


# --- the registry protocol ------------------------------------------------------------------------


@runtime_checkable
class ProcessRegistry(Protocol):
    """Where processes and their handle grants live (in-memory here; durable backends later).
    This docstring and the rules block of ``lash_core._processes`` are the whole contract: a
    registry written from them passes ``tests/conformance``.

    Sync and async. The mutations (``start_process``, ``grant_handle``, ``revoke_handle``,
    ``cancel_process``, ``complete_process``) and ``get_process`` are plain synchronous methods
    that return quickly: the handle calls them on the event loop (a notebook button, a tool) and
    records the change right after. The two listings are coroutine functions (``async def``): the
    observation awaits them, so a durable registry may do its I/O there.
    ``LashRuntime.builder().with_process_registry(registry)`` refuses, when it builds, a registry
    that lacks a method or gets one of these kinds wrong (``LashRuntimeError``, code
    ``invalid_configuration``).

    Threads. Every method may be called from any thread (background workers and the notebook's
    loop share a registry); each call is atomic.

    Time. ``created_at_ms``, ``updated_at_ms`` and ``granted_at_ms`` are epoch milliseconds from
    the registry's own clock (``clock_ms``).

    Operations (see the rules at the top of ``lash_core._processes`` for the lifecycle):

    * ``start_process(scope, name, *, process_id=None, kind=None)``: registers a ``running``
      process owned by ``scope`` (``created_at_ms == updated_at_ms == now``) and grants ``scope``
      a handle on it; returns that grant's ``ProcessHandleSummary``. Without ``process_id`` the
      registry makes a new one, unique for the registry's lifetime (never one taken explicitly).
      An explicit id that exists already is a replay when name, kind and owner scope id match
      (the process is granted to ``scope`` again and returned as it is), else
      ``ProcessRegistryError``, changing nothing. An empty ``process_id`` is a ``ValueError``.
    * ``grant_handle(process_id, scope, *, descriptor=None)``: gives ``scope`` a handle on an
      existing process, terminal or not (``granted_at_ms = now``). Without a descriptor the grant
      shows the process's ``kind`` and ``name`` (as ``label``). Granting again to the same scope
      id replaces the descriptor and keeps the first ``granted_at_ms``.
    * ``revoke_handle(process_id, scope)``: removes that grant if there is one; a missing grant or
      an unknown process is a no-op. The process itself is untouched.
    * ``cancel_process(process_id)``: a running process becomes ``cancelled``
      (``updated_at_ms = now``); a terminal one is returned unchanged.
    * ``complete_process(process_id, *, status=COMPLETED)``: ``status`` must be terminal
      (``completed``, ``failed``, ``cancelled``; its wire string is accepted), else
      ``ValueError``. A running process takes it; the same terminal status again is a no-op
      returning the record; a different one raises ``ProcessRegistryError`` and changes nothing.
    * ``get_process(process_id)``: the ``ProcessRecord``, or ``None``.
    * ``await list_handle_grants(scope)``: every grant held by the scope's *id* (so a scope with
      an empty frame id lists the root's), as ``ProcessHandleGrantEntry(grant, record)`` with the
      record as it is now, sorted by process id (plain string order).
      ``await list_live_handle_grants(scope)``: the same, without terminal processes.

    Errors. ``UnknownProcessError(process_id)`` (a ``ProcessRegistryError`` and ``KeyError``) from
    ``grant_handle``, ``cancel_process`` and ``complete_process`` for an id the registry does not
    know; ``ProcessRegistryError`` for the conflicts above; ``TypeError`` for arguments of the
    wrong type and ``InvalidProcessError`` for text that is not valid UTF-8. A refused call
    changes nothing. A backend translates its driver's errors into ``ProcessRegistryError`` at its
    own boundary.
    """

    async def list_handle_grants(self, scope: ProcessScope) -> list[ProcessHandleGrantEntry]:
        """Every grant of the scope's id, sorted by process id."""
        ...

    async def list_live_handle_grants(
        self, scope: ProcessScope
    ) -> list[ProcessHandleGrantEntry]:
        """The grants of the scope's id whose process is still running, sorted by process id."""
        ...

    def get_process(self, process_id: str) -> ProcessRecord | None:
        """The record, or ``None`` for an unknown id."""
        ...

    def start_process(
        self,
        scope: ProcessScope,
        name: str,
        *,
        process_id: str | None = None,
        kind: str | None = None,
    ) -> ProcessHandleSummary:
        """Register a running process owned by ``scope`` and grant ``scope`` a handle on it."""
        ...

    def grant_handle(
        self,
        process_id: str,
        scope: ProcessScope,
        *,
        descriptor: ProcessHandleDescriptor | None = None,
    ) -> ProcessHandleSummary:
        """Give ``scope`` a handle on an existing process."""
        ...

    def revoke_handle(self, process_id: str, scope: ProcessScope) -> None:
        """Remove ``scope``'s handle on the process, if it has one."""
        ...

    def cancel_process(self, process_id: str) -> ProcessRecord:
        """Cancel a running process; a terminal one is returned unchanged."""
        ...

    def complete_process(
        self, process_id: str, *, status: ProcessStatus = ProcessStatus.COMPLETED
    ) -> ProcessRecord:
        """End a running process with a terminal ``status``."""
        ...


#: ``ProcessRegistry`` methods that are coroutine functions; the others must be plain methods.
PROCESS_REGISTRY_ASYNC_METHODS: tuple[str, ...] = ("list_handle_grants", "list_live_handle_grants")
#: ``ProcessRegistry`` methods that are plain, synchronous methods.
PROCESS_REGISTRY_SYNC_METHODS: tuple[str, ...] = (
    "get_process",
    "start_process",
    "grant_handle",
    "revoke_handle",
    "cancel_process",
    "complete_process",
)


# --- in-memory registry ---------------------------------------------------------------------------


def check_start_args(scope: Any, name: Any, kind: Any, process_id: Any) -> None:
    """``start_process``'s arguments, checked before anything changes (every registry): a
    ``ProcessScope``, a ``str`` name, a ``str`` kind or ``None``, a non-empty ``str`` id or ``None``,
    all valid UTF-8."""
    _check_scope(scope)
    if not isinstance(name, str):
        raise TypeError(f"process name must be a str, not {type(name).__name__}")
    if kind is not None and not isinstance(kind, str):
        raise TypeError(f"process kind must be a str or None, not {type(kind).__name__}")
    _utf8("process name", name)
    _utf8("process kind", kind)
    if process_id is not None:
        if not isinstance(process_id, str) or process_id == "":
            raise ValueError("process id must be a non-empty string")
        _utf8("process id", process_id)


def finished_already(record: ProcessRecord, status: ProcessStatus) -> bool:
    """``complete_process``'s rule (every registry): ``True`` when ``record`` already ended with
    ``status`` (a no-op); ``ProcessRegistryError`` when it ended otherwise; ``False`` to go on."""
    if record.status is status:
        return True
    if record.is_terminal:
        raise ProcessRegistryError(
            f"process `{record.process_id}` is already terminal (`{record.status}`); "
            f"cannot mark it `{status}`"
        )
    return False


def _check_scope(scope: Any) -> None:
    if not isinstance(scope, ProcessScope):
        raise TypeError(f"scope must be a ProcessScope, not {type(scope).__name__}")


_F = TypeVar("_F", bound=Callable[..., Any])


def _locked(method: _F) -> _F:
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class InMemoryProcessRegistry:
    """A process registry held in memory; see the rules at the top of this module.

    ``clock_ms`` returns epoch milliseconds (default: the wall clock). Generated process ids are
    ``proc-000001``, ``proc-000002``, ...: zero-padded so that id order is start order (up to a
    million processes; past that ids stay unique but no longer sort by start).
    """

    def __init__(self, *, clock_ms: Callable[[], int] | None = None) -> None:
        self._clock_ms = clock_ms if clock_ms is not None else wall_clock_ms
        self._records: dict[str, ProcessRecord] = {}
        self._grants: dict[ProcessScopeId, dict[str, ProcessHandleGrant]] = {}
        self._next_number = 1
        # one lock around every read and change: workers on threads and the notebook's loop share it
        self._lock = threading.RLock()

    # reads

    @_locked
    def get_process(self, process_id: str) -> ProcessRecord | None:
        return self._records.get(process_id)

    async def list_handle_grants(self, scope: ProcessScope) -> list[ProcessHandleGrantEntry]:
        return self._entries(scope, live=False)

    async def list_live_handle_grants(self, scope: ProcessScope) -> list[ProcessHandleGrantEntry]:
        return self._entries(scope, live=True)

    @_locked
    def _entries(self, scope: ProcessScope, *, live: bool) -> list[ProcessHandleGrantEntry]:
        _check_scope(scope)
        grants = self._grants.get(scope.id(), {})
        entries = [
            ProcessHandleGrantEntry(grant, self._records[process_id])
            for process_id, grant in grants.items()
            if not (live and self._records[process_id].is_terminal)
        ]
        entries.sort(key=lambda entry: entry.process_id)
        return entries

    # mutations

    @_locked
    def start_process(
        self,
        scope: ProcessScope,
        name: str,
        *,
        process_id: str | None = None,
        kind: str | None = None,
    ) -> ProcessHandleSummary:
        """Register a running process owned by ``scope`` and grant ``scope`` a handle on it."""
        check_start_args(scope, name, kind, process_id)
        if process_id is None:
            process_id = self._generate_id()
        existing = self._records.get(process_id)
        if existing is not None:
            if (existing.name, existing.kind, existing.owner_scope.id()) != (name, kind, scope.id()):
                raise ProcessRegistryError(
                    f"process `{process_id}` is already registered with a different "
                    f"name, kind or owner scope"
                )
        else:
            now = read_clock_ms(self._clock_ms, ProcessRegistryError)
            self._records[process_id] = ProcessRecord(
                process_id=process_id,
                name=name,
                kind=kind,
                owner_scope=scope,
                status=ProcessStatus.RUNNING,
                created_at_ms=now,
                updated_at_ms=now,
            )
        return self.grant_handle(process_id, scope)

    @_locked
    def grant_handle(
        self,
        process_id: str,
        scope: ProcessScope,
        *,
        descriptor: ProcessHandleDescriptor | None = None,
    ) -> ProcessHandleSummary:
        """Give ``scope`` a handle on an existing process (terminal ones included).

        Without a descriptor the grant shows the process's own kind and name.
        """
        _check_scope(scope)
        if descriptor is not None and not isinstance(descriptor, ProcessHandleDescriptor):
            raise TypeError(
                f"descriptor must be a ProcessHandleDescriptor, not {type(descriptor).__name__}"
            )
        record = self._require(process_id)
        if descriptor is None:
            descriptor = ProcessHandleDescriptor(kind=record.kind, label=record.name)
        scope_id = scope.id()
        scope_grants = self._grants.setdefault(scope_id, {})
        previous = scope_grants.get(process_id)
        grant = ProcessHandleGrant(
            scope_id=scope_id,
            session_id=scope.session_id,
            process_id=process_id,
            descriptor=descriptor,
            granted_at_ms=(
                previous.granted_at_ms
                if previous is not None
                else read_clock_ms(self._clock_ms, ProcessRegistryError)
            ),
        )
        scope_grants[process_id] = grant
        return ProcessHandleGrantEntry(grant, record).summary()

    @_locked
    def revoke_handle(self, process_id: str, scope: ProcessScope) -> None:
        """Remove ``scope``'s handle on the process, if it has one. The process itself is untouched."""
        _check_scope(scope)
        scope_grants = self._grants.get(scope.id())
        if scope_grants is not None:
            scope_grants.pop(process_id, None)

    @_locked
    def cancel_process(self, process_id: str) -> ProcessRecord:
        """Cancel a running process. A terminal process is returned unchanged (no error)."""
        record = self._require(process_id)
        if record.is_terminal:
            return record
        return self._set_status(record, ProcessStatus.CANCELLED)

    @_locked
    def complete_process(
        self, process_id: str, *, status: ProcessStatus = ProcessStatus.COMPLETED
    ) -> ProcessRecord:
        """End a running process with a terminal ``status`` (completed, failed or cancelled).

        Repeating the status it already ended with is a no-op; a different one raises
        ``ProcessRegistryError`` and leaves the record unchanged.
        """
        status = ProcessStatus(status)
        if not status.is_terminal:
            raise ValueError(f"complete_process needs a terminal status, not `{status}`")
        record = self._require(process_id)
        if finished_already(record, status):
            return record
        return self._set_status(record, status)

    # internals

    def _require(self, process_id: str) -> ProcessRecord:
        record = self._records.get(process_id)
        if record is None:
            raise UnknownProcessError(process_id)
        return record

    def _set_status(self, record: ProcessRecord, status: ProcessStatus) -> ProcessRecord:
        updated = dataclasses.replace(record, status=status, updated_at_ms=read_clock_ms(self._clock_ms, ProcessRegistryError))
        self._records[record.process_id] = updated
        return updated

    def _generate_id(self) -> str:
        while True:
            candidate = f"proc-{self._next_number:06d}"
            self._next_number += 1
            if candidate not in self._records:
                return candidate


# --- the session view -----------------------------------------------------------------------------


class _HasProcessId(Protocol):
    @property
    def process_id(self) -> str: ...


_E = TypeVar("_E", bound=_HasProcessId)


def merge_process_handles(root_entries: Iterable[_E], frame_entries: Iterable[_E]) -> list[_E]:
    """Root then frame entries, sorted by process id, keeping the first of each id.

    The sort is stable, so when both scopes hold a process the root scope's entry is kept.
    Works on anything with a ``process_id`` (grant entries or summaries).
    """
    merged = sorted([*root_entries, *frame_entries], key=lambda entry: entry.process_id)
    out: list[_E] = []
    for entry in merged:
        if not out or out[-1].process_id != entry.process_id:
            out.append(entry)
    return out


async def list_session_process_handles(
    registry: ProcessRegistry | None,
    session_id: str,
    current_agent_frame_id: str | None,
    *,
    live: bool,
) -> list[ProcessHandleSummary]:
    """The handles a session sees: its root scope, plus the current agent frame's scope.

    No registry gives an empty list. A scope whose listing raises ``ProcessRegistryError``
    counts as empty (logged at warning), as the observation must not fail on it.
    """
    if registry is None:
        return []
    root_scope = ProcessScope(session_id)
    root_entries = await _list_scope(registry, root_scope, live=live)
    frame_entries: Sequence[ProcessHandleGrantEntry] = ()
    if current_agent_frame_id:
        frame_scope = ProcessScope.for_agent_frame(session_id, current_agent_frame_id)
        if frame_scope.id() != root_scope.id():
            frame_entries = await _list_scope(registry, frame_scope, live=live)
    return [entry.summary() for entry in merge_process_handles(root_entries, frame_entries)]


async def _list_scope(
    registry: ProcessRegistry, scope: ProcessScope, *, live: bool
) -> list[ProcessHandleGrantEntry]:
    try:
        if live:
            return list(await registry.list_live_handle_grants(scope))
        return list(await registry.list_handle_grants(scope))
    except Exception as err:  # as in Rust (unwrap_or_default): a failing listing shows as empty
        _log.warning("listing process handles of scope %s failed: %r", scope.id(), err)
        return []
