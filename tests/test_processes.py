"""Process scopes and values, the session's merged view of handles, and what only the in-memory
registry does. What every ``ProcessRegistry`` must do is checked once, for every backend, by
``tests/conformance/test_process_registry.py``."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lash_core import LashRuntime, LashRuntimeError, RuntimeErrorCode
from lash_core._errors import ProcessRegistryError
from lash_core._processes import (
    InMemoryProcessRegistry,
    ProcessRegistry,
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


# --- the in-memory registry's own rules --------------------------------------------------------
# (what every ProcessRegistry must do is in tests/conformance/test_process_registry.py)


async def test_generated_ids_are_zero_padded_in_start_order_and_skip_taken_ones(
    registry: InMemoryProcessRegistry,
) -> None:
    assert registry.start_process(ROOT, "a").process_id == "proc-000001"
    registry.start_process(ROOT, "taken", process_id="proc-000002")
    assert registry.start_process(FRAME, "b").process_id == "proc-000003"
    assert await ids(registry, ROOT, live=False) == ["proc-000001", "proc-000002"]


class _AsyncMutations(InMemoryProcessRegistry):
    async def cancel_process(self, process_id: str) -> ProcessRecord:  # type: ignore[override]
        return super().cancel_process(process_id)


class _SyncListing(InMemoryProcessRegistry):
    def list_live_handle_grants(self, scope: ProcessScope) -> list[ProcessHandleGrantEntry]:  # type: ignore[override]
        return []


class _NoGrants:
    async def list_handle_grants(self, scope: ProcessScope) -> list[ProcessHandleGrantEntry]:
        return []


async def test_the_builder_refuses_what_is_not_a_process_registry() -> None:
    assert isinstance(InMemoryProcessRegistry(), ProcessRegistry)
    assert not isinstance(_NoGrants(), ProcessRegistry)
    for registry, message in (
        (_NoGrants(), r"_NoGrants is not a ProcessRegistry \(missing: list_live_handle_grants, "),
        (_AsyncMutations(), r"_AsyncMutations\.cancel_process must be a plain method"),
        (_SyncListing(), r"_SyncListing\.list_live_handle_grants must be a coroutine function"),
    ):
        with pytest.raises(LashRuntimeError, match=message) as info:
            await LashRuntime.builder().with_process_registry(registry).build()
        assert info.value.code is RuntimeErrorCode.INVALID_CONFIGURATION
    runtime = await LashRuntime.builder().with_process_registry(InMemoryProcessRegistry()).build()
    assert isinstance(runtime.process_registry, InMemoryProcessRegistry)


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
