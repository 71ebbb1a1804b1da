"""Scenarios for process scopes, grants and the in-memory process registry."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lash_core._errors import LashError, ProcessRegistryError, UnknownProcessError
from lash_core._processes import (
    InMemoryProcessRegistry,
    ProcessHandleDescriptor,
    ProcessHandleGrantEntry,
    ProcessHandleSummary,
    ProcessListMode,
    ProcessRecord,
    ProcessScope,
    ProcessScopeId,
    ProcessStatus,
    list_session_process_handles,
    merge_process_handles,
)

ROOT = ProcessScope("s1")
FRAME = ProcessScope.for_agent_frame("s1", "f1")
OTHER_FRAME = ProcessScope.for_agent_frame("s1", "f2")


class FakeClock:
    def __init__(self, now_ms: int = 1_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def registry(clock: FakeClock) -> InMemoryProcessRegistry:
    return InMemoryProcessRegistry(clock_ms=clock)


async def ids(registry: InMemoryProcessRegistry, scope: ProcessScope, *, live: bool) -> list[str]:
    if live:
        entries = await registry.list_live_handle_grants(scope)
    else:
        entries = await registry.list_handle_grants(scope)
    return [entry.process_id for entry in entries]


# --- scopes and values ----------------------------------------------------------------------------


def test_scope_ids_for_root_and_agent_frames() -> None:
    assert ROOT.id() == "session:s1"
    assert FRAME.id() == "session:s1/frame:f1"
    assert FRAME == ProcessScope("s1", "f1")
    # An empty frame id is the root scope: a different value, the same id.
    assert ProcessScope.for_agent_frame("s1", "") != ROOT
    assert ProcessScope.for_agent_frame("s1", "").id() == ROOT.id()
    # Session ids may contain separators; the id is still built verbatim.
    assert ProcessScope("a:b/c", "f").id() == "session:a:b/c/frame:f"

    scope_id = FRAME.id()
    assert isinstance(scope_id, ProcessScopeId) and isinstance(scope_id, str)
    assert scope_id.as_str() == "session:s1/frame:f1"
    assert repr(scope_id) == "ProcessScopeId('session:s1/frame:f1')"
    assert hash(scope_id) == hash("session:s1/frame:f1")

    assert ROOT.to_dict() == {"session_id": "s1"}
    assert FRAME.to_dict() == {"session_id": "s1", "agent_frame_id": "f1"}
    assert ProcessScope("").is_empty() and not ROOT.is_empty()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ROOT.session_id = "s2"  # type: ignore[misc]


def test_scope_rejects_non_string_ids() -> None:
    with pytest.raises(TypeError, match="session id must be a str"):
        ProcessScope(1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="agent frame id must be a str or None"):
        ProcessScope("s1", 7)  # type: ignore[arg-type]


def test_status_and_list_mode_wire_strings() -> None:
    assert [str(s) for s in ProcessStatus] == ["running", "completed", "failed", "cancelled"]
    assert [s.is_terminal for s in ProcessStatus] == [False, True, True, True]
    assert [str(m) for m in ProcessListMode] == ["live", "all"]
    assert ProcessStatus("cancelled") is ProcessStatus.CANCELLED


# --- start, grant, revoke -------------------------------------------------------------------------


async def test_start_process_grants_the_starting_scope(
    registry: InMemoryProcessRegistry, clock: FakeClock
) -> None:
    first = registry.start_process(ROOT, "build", kind="tool")
    clock.advance(5)
    second = registry.start_process(FRAME, "index")

    assert first == ProcessHandleSummary(
        process_id="proc-000001",
        descriptor=ProcessHandleDescriptor(kind="tool", label="build"),
        status=ProcessStatus.RUNNING,
        scope_id=ProcessScopeId("session:s1"),
        granted_at_ms=1_000,
    )
    assert (first.id, first.name, first.kind) == ("proc-000001", "build", "tool")
    assert second.process_id == "proc-000002"
    assert second.scope_id == "session:s1/frame:f1"
    assert second.granted_at_ms == 1_005

    assert registry.get_process("proc-000001") == ProcessRecord(
        process_id="proc-000001",
        name="build",
        kind="tool",
        owner_scope=ROOT,
        status=ProcessStatus.RUNNING,
        created_at_ms=1_000,
        updated_at_ms=1_000,
    )
    assert registry.get_process("proc-000002").owner_scope_id == "session:s1/frame:f1"
    assert registry.get_process("nope") is None

    # Each scope sees only its own grants.
    assert await ids(registry, ROOT, live=False) == ["proc-000001"]
    assert await ids(registry, FRAME, live=False) == ["proc-000002"]
    assert await ids(registry, OTHER_FRAME, live=False) == []
    assert await ids(registry, ProcessScope("s2"), live=True) == []


async def test_summary_wire_shape(registry: InMemoryProcessRegistry) -> None:
    summary = registry.start_process(ROOT, "build", kind="tool")
    assert summary.to_dict() == {
        "__handle__": "process",
        "id": "proc-000001",
        "process_id": "proc-000001",
        "descriptor": {"kind": "tool", "label": "build"},
        "status": "running",
    }
    bare = registry.grant_handle(
        "proc-000001", FRAME, descriptor=ProcessHandleDescriptor()
    ).to_dict()
    assert bare["descriptor"] == {}


async def test_explicit_ids_replay_or_conflict(registry: InMemoryProcessRegistry) -> None:
    registry.start_process(ROOT, "build", process_id="proc-000001")
    # The counter skips an id that was taken explicitly.
    assert registry.start_process(ROOT, "x").process_id == "proc-000002"

    # The same registration again (name, kind and owner scope) is a replay: same process back.
    again = registry.start_process(ROOT, "build", process_id="proc-000001")
    assert again.process_id == "proc-000001"
    assert await ids(registry, ROOT, live=False) == ["proc-000001", "proc-000002"]

    with pytest.raises(ProcessRegistryError, match="`proc-000001` is already registered"):
        registry.start_process(ROOT, "different", process_id="proc-000001")
    with pytest.raises(ProcessRegistryError, match="already registered"):
        registry.start_process(FRAME, "build", process_id="proc-000001")
    assert registry.get_process("proc-000001").name == "build"
    assert await ids(registry, FRAME, live=False) == []

    with pytest.raises(ValueError, match="non-empty"):
        registry.start_process(ROOT, "build", process_id="")
    with pytest.raises(TypeError, match="ProcessScope"):
        registry.start_process("s1", "build")  # type: ignore[arg-type]


async def test_grant_handle_to_another_scope(
    registry: InMemoryProcessRegistry, clock: FakeClock
) -> None:
    started = registry.start_process(ROOT, "build", kind="tool")
    clock.advance(10)

    granted = registry.grant_handle(started.process_id, FRAME)
    assert granted == dataclasses.replace(
        started, scope_id=FRAME.id(), granted_at_ms=1_010
    )
    assert await ids(registry, FRAME, live=True) == ["proc-000001"]
    assert await ids(registry, ROOT, live=True) == ["proc-000001"]

    # Granting again replaces the descriptor and keeps the original grant time.
    clock.advance(10)
    relabelled = registry.grant_handle(
        started.process_id, FRAME, descriptor=ProcessHandleDescriptor(label="mine")
    )
    assert relabelled.descriptor == ProcessHandleDescriptor(label="mine")
    assert relabelled.granted_at_ms == 1_010
    [entry] = await registry.list_handle_grants(FRAME)
    assert isinstance(entry, ProcessHandleGrantEntry)
    assert entry.grant.descriptor.label == "mine"
    assert entry.grant.session_id == "s1"
    assert entry.record == registry.get_process("proc-000001")
    assert entry.summary() == relabelled


async def test_unknown_process_ids_raise_typed_errors(registry: InMemoryProcessRegistry) -> None:
    for call in (
        lambda: registry.grant_handle("ghost", FRAME),
        lambda: registry.cancel_process("ghost"),
        lambda: registry.complete_process("ghost"),
    ):
        with pytest.raises(UnknownProcessError, match="unknown process `ghost`") as info:
            call()
        assert info.value.process_id == "ghost"
        assert isinstance(info.value, ProcessRegistryError)
        assert isinstance(info.value, LashError)
        assert isinstance(info.value, KeyError)
    # Nothing was granted on the way.
    assert await ids(registry, FRAME, live=False) == []


async def test_revoke_handle(registry: InMemoryProcessRegistry) -> None:
    pid = registry.start_process(ROOT, "build").process_id
    registry.grant_handle(pid, FRAME)

    registry.revoke_handle(pid, FRAME)
    assert await ids(registry, FRAME, live=False) == []
    assert await ids(registry, ROOT, live=False) == [pid]
    assert registry.get_process(pid).status is ProcessStatus.RUNNING

    # Revoking what is not granted, or an unknown process, is a no-op.
    registry.revoke_handle(pid, FRAME)
    registry.revoke_handle("ghost", OTHER_FRAME)


# --- lifecycle ------------------------------------------------------------------------------------


async def test_cancel_process_and_cancel_twice(
    registry: InMemoryProcessRegistry, clock: FakeClock
) -> None:
    pid = registry.start_process(ROOT, "build").process_id
    clock.advance(7)

    cancelled = registry.cancel_process(pid)
    assert cancelled.status is ProcessStatus.CANCELLED
    assert (cancelled.created_at_ms, cancelled.updated_at_ms) == (1_000, 1_007)
    assert registry.get_process(pid) == cancelled

    # Cancelling again is a no-op returning the record unchanged.
    clock.advance(7)
    assert registry.cancel_process(pid) == cancelled
    assert registry.get_process(pid).updated_at_ms == 1_007


async def test_cancel_of_a_completed_process_changes_nothing(
    registry: InMemoryProcessRegistry,
) -> None:
    pid = registry.start_process(ROOT, "build").process_id
    completed = registry.complete_process(pid)
    assert completed.status is ProcessStatus.COMPLETED
    assert registry.cancel_process(pid) == completed


async def test_complete_process_rules(registry: InMemoryProcessRegistry, clock: FakeClock) -> None:
    done = registry.start_process(ROOT, "a").process_id
    failed = registry.start_process(ROOT, "b").process_id
    cancelled = registry.start_process(ROOT, "c").process_id
    clock.advance(3)

    record = registry.complete_process(done)
    assert (record.status, record.updated_at_ms) == (ProcessStatus.COMPLETED, 1_003)
    assert registry.complete_process(failed, status="failed").status is ProcessStatus.FAILED
    assert (
        registry.complete_process(cancelled, status=ProcessStatus.CANCELLED).status
        is ProcessStatus.CANCELLED
    )

    # The same terminal status again is a no-op.
    clock.advance(3)
    assert registry.complete_process(done) == record

    # A different terminal status raises and leaves the record alone.
    with pytest.raises(ProcessRegistryError, match="`proc-000001` is already terminal"):
        registry.complete_process(done, status=ProcessStatus.FAILED)
    assert registry.get_process(done) == record

    pid = registry.start_process(ROOT, "d").process_id
    with pytest.raises(ValueError, match="terminal status"):
        registry.complete_process(pid, status=ProcessStatus.RUNNING)
    with pytest.raises(ValueError):
        registry.complete_process(pid, status="paused")  # type: ignore[arg-type]
    assert registry.get_process(pid).status is ProcessStatus.RUNNING


async def test_live_versus_all_listing(registry: InMemoryProcessRegistry) -> None:
    a = registry.start_process(ROOT, "a").process_id
    b = registry.start_process(ROOT, "b").process_id
    c = registry.start_process(ROOT, "c").process_id
    d = registry.start_process(ROOT, "d").process_id
    registry.cancel_process(a)
    registry.complete_process(c)
    registry.complete_process(d, status=ProcessStatus.FAILED)

    assert await ids(registry, ROOT, live=True) == [b]
    assert await ids(registry, ROOT, live=False) == [a, b, c, d]
    statuses = [e.record.status for e in await registry.list_handle_grants(ROOT)]
    assert statuses == ["cancelled", "running", "completed", "failed"]


async def test_listing_is_sorted_by_process_id_not_start_order(
    registry: InMemoryProcessRegistry,
) -> None:
    for pid in ["zeta", "alpha", "proc-10", "proc-2"]:
        registry.start_process(ROOT, pid, process_id=pid)
    assert await ids(registry, ROOT, live=False) == ["alpha", "proc-10", "proc-2", "zeta"]


# --- the session view -----------------------------------------------------------------------------


def test_merge_process_handles_sorts_dedups_and_keeps_the_root_entry() -> None:
    def summary(pid: str, scope: ProcessScope) -> ProcessHandleSummary:
        return ProcessHandleSummary(
            process_id=pid,
            descriptor=ProcessHandleDescriptor(label=pid),
            status=ProcessStatus.RUNNING,
            scope_id=scope.id(),
            granted_at_ms=0,
        )

    root = [summary("b", ROOT), summary("d", ROOT)]
    frame = [summary("a", FRAME), summary("b", FRAME), summary("c", FRAME)]
    merged = merge_process_handles(root, frame)
    assert [(s.process_id, s.scope_id) for s in merged] == [
        ("a", "session:s1/frame:f1"),
        ("b", "session:s1"),
        ("c", "session:s1/frame:f1"),
        ("d", "session:s1"),
    ]
    assert merge_process_handles([], []) == []


@given(
    root=st.lists(st.sampled_from("abcdefgh"), unique=True),
    frame=st.lists(st.sampled_from("abcdefgh"), unique=True),
)
def test_merge_process_handles_property(root: list[str], frame: list[str]) -> None:
    tagged_root = [_Tagged(pid, "root") for pid in root]
    tagged_frame = [_Tagged(pid, "frame") for pid in frame]
    merged = merge_process_handles(tagged_root, tagged_frame)
    assert [t.process_id for t in merged] == sorted(set(root) | set(frame))
    for t in merged:
        assert t.origin == ("root" if t.process_id in root else "frame")


@dataclasses.dataclass(frozen=True)
class _Tagged:
    process_id: str
    origin: str


async def test_session_handles_root_only_without_a_frame(
    registry: InMemoryProcessRegistry,
) -> None:
    root_pid = registry.start_process(ROOT, "root-work").process_id
    registry.start_process(FRAME, "frame-work")
    registry.start_process(ProcessScope("s2"), "elsewhere")

    for frame_id in (None, ""):
        handles = await list_session_process_handles(registry, "s1", frame_id, live=True)
        assert [h.process_id for h in handles] == [root_pid]


async def test_session_handles_merge_root_and_frame_scopes(
    registry: InMemoryProcessRegistry,
) -> None:
    shared = registry.start_process(ROOT, "shared").process_id  # proc-000001
    frame_only = registry.start_process(FRAME, "frame-only").process_id  # proc-000002
    root_done = registry.start_process(ROOT, "root-done").process_id  # proc-000003
    registry.start_process(OTHER_FRAME, "other-frame")  # proc-000004: never visible here
    registry.grant_handle(shared, FRAME, descriptor=ProcessHandleDescriptor(label="frame view"))
    registry.complete_process(root_done)

    live = await list_session_process_handles(registry, "s1", "f1", live=True)
    assert [(h.process_id, h.scope_id, h.name) for h in live] == [
        (shared, "session:s1", "shared"),  # granted to both, listed once, root grant wins
        (frame_only, "session:s1/frame:f1", "frame-only"),
    ]

    every = await list_session_process_handles(registry, "s1", "f1", live=False)
    assert [(h.process_id, h.status) for h in every] == [
        (shared, ProcessStatus.RUNNING),
        (frame_only, ProcessStatus.RUNNING),
        (root_done, ProcessStatus.COMPLETED),
    ]

    # Once the shared process ends it drops out of the live view of both scopes.
    registry.cancel_process(shared)
    live = await list_session_process_handles(registry, "s1", "f1", live=True)
    assert [h.process_id for h in live] == [frame_only]


async def test_session_handles_without_a_registry() -> None:
    assert await list_session_process_handles(None, "s1", "f1", live=True) == []


class _FailingFrameRegistry(InMemoryProcessRegistry):
    async def list_handle_grants(self, scope: ProcessScope) -> list[ProcessHandleGrantEntry]:
        if scope.agent_frame_id:
            raise ProcessRegistryError("frame scope unavailable")
        return await super().list_handle_grants(scope)


async def test_session_handles_treat_a_failing_scope_as_empty(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = _FailingFrameRegistry(clock_ms=FakeClock())
    root_pid = registry.start_process(ROOT, "root-work").process_id
    registry.start_process(FRAME, "frame-work")

    with caplog.at_level(logging.WARNING, logger="lash_core._processes"):
        handles = await list_session_process_handles(registry, "s1", "f1", live=False)
    assert [h.process_id for h in handles] == [root_pid]
    assert "frame scope unavailable" in caplog.text
    assert "session:s1/frame:f1" in caplog.text
