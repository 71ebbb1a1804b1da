"""Process registry conformance, run against every backend in ``backends.py``.

Each test names the Rust case it carries over (lash-core 0.1.0-alpha.39 ``testing/conformance.rs``,
suite ``process_registry``). Most of that suite is about what our port leaves out (registration
hashes, declared event types, wakes, process leases, external refs, durability tiers); what it
checks of scopes, grants and terminal states is here. Where Rust and our rules differ, the test
follows ours and says so.
"""

from __future__ import annotations

import dataclasses
import inspect
import threading

import pytest

from lash_core import (
    InvalidProcessError,
    ProcessRegistry,
    ProcessRegistryError,
    ProcessScope,
    ProcessStatus,
    UnknownProcessError,
)
from lash_core._processes import (
    PROCESS_REGISTRY_ASYNC_METHODS,
    PROCESS_REGISTRY_SYNC_METHODS,
    ProcessHandleDescriptor,
    ProcessHandleGrantEntry,
    ProcessHandleSummary,
    ProcessRecord,
    ProcessScopeId,
)

ROOT = ProcessScope("s1")
FRAME = ProcessScope.for_agent_frame("s1", "f1")
OTHER_FRAME = ProcessScope.for_agent_frame("s1", "f2")


@pytest.fixture
def registry(process_registry_factory, clock):
    return process_registry_factory.open(clock=clock)


async def ids(registry, scope: ProcessScope, *, live: bool) -> list[str]:
    lister = registry.list_live_handle_grants if live else registry.list_handle_grants
    return [entry.process_id for entry in await lister(scope)]


def test_registry_satisfies_the_protocol_with_the_right_kinds(registry):
    assert isinstance(registry, ProcessRegistry)
    for name in PROCESS_REGISTRY_ASYNC_METHODS:
        assert inspect.iscoroutinefunction(getattr(registry, name)), name
    for name in PROCESS_REGISTRY_SYNC_METHODS:
        assert not inspect.iscoroutinefunction(getattr(registry, name)), name


# --- start, grant, revoke -------------------------------------------------------------------


async def test_start_process_grants_the_starting_scope(registry, clock):
    t0 = clock.ms()
    first = registry.start_process(ROOT, "build", kind="tool")
    clock.advance(0.005)
    second = registry.start_process(FRAME, "index")
    assert first == ProcessHandleSummary(
        process_id=first.process_id,
        descriptor=ProcessHandleDescriptor(kind="tool", label="build"),
        status=ProcessStatus.RUNNING,
        scope_id=ProcessScopeId("session:s1"),
        granted_at_ms=t0,
    )
    assert (first.id, first.name, first.kind) == (first.process_id, "build", "tool")
    assert isinstance(first.process_id, str) and first.process_id != second.process_id
    assert (second.scope_id, second.granted_at_ms) == ("session:s1/frame:f1", t0 + 5)
    assert registry.get_process(first.process_id) == ProcessRecord(
        process_id=first.process_id,
        name="build",
        kind="tool",
        owner_scope=ROOT,
        status=ProcessStatus.RUNNING,
        created_at_ms=t0,
        updated_at_ms=t0,
    )
    assert registry.get_process(second.process_id).owner_scope_id == "session:s1/frame:f1"
    assert registry.get_process("nope") is None
    # each scope sees only its own grants
    assert await ids(registry, ROOT, live=False) == [first.process_id]
    assert await ids(registry, FRAME, live=False) == [second.process_id]
    assert await ids(registry, OTHER_FRAME, live=False) == []
    assert await ids(registry, ProcessScope("s2"), live=True) == []


async def test_summary_wire_shape(registry):
    summary = registry.start_process(ROOT, "build", kind="tool")
    pid = summary.process_id
    assert summary.to_dict() == {
        "__handle__": "process",
        "id": pid,
        "process_id": pid,
        "descriptor": {"kind": "tool", "label": "build"},
        "status": "running",
    }
    bare = registry.grant_handle(pid, FRAME, descriptor=ProcessHandleDescriptor()).to_dict()
    assert bare["descriptor"] == {}


async def test_generated_ids_are_unique_and_never_an_explicit_one(registry):
    taken = {registry.start_process(ROOT, f"explicit-{i}", process_id=f"proc-{i:06d}").process_id
             for i in range(1, 4)}
    made = [registry.start_process(ROOT, f"made-{i}").process_id for i in range(20)]
    assert len(set(made)) == 20 and not taken & set(made)
    assert all(isinstance(pid, str) and pid for pid in made)


async def test_explicit_ids_replay_or_conflict(registry):
    """Rust ``registration_is_idempotent_and_hash_conflicts_fail``, on name, kind and owner scope
    (our registrations carry no declared event types to hash)."""
    registry.start_process(ROOT, "build", process_id="p1", kind="tool")
    # the same registration again (name, kind and owner scope) is a replay: same process back
    again = registry.start_process(ROOT, "build", process_id="p1", kind="tool")
    assert again.process_id == "p1" and again.kind == "tool"
    assert await ids(registry, ROOT, live=False) == ["p1"]
    for scope, name, kind in ((ROOT, "different", "tool"), (FRAME, "build", "tool"), (ROOT, "build", None)):
        with pytest.raises(ProcessRegistryError, match="`p1`"):
            registry.start_process(scope, name, process_id="p1", kind=kind)
    assert registry.get_process("p1").name == "build"
    assert await ids(registry, FRAME, live=False) == []
    with pytest.raises(ValueError):
        registry.start_process(ROOT, "build", process_id="")
    assert registry.get_process("") is None


async def test_grant_handle_to_another_scope(registry, clock):
    started = registry.start_process(ROOT, "build", kind="tool")
    pid = started.process_id
    clock.advance(0.010)
    granted = registry.grant_handle(pid, FRAME)
    assert granted == dataclasses.replace(started, scope_id=FRAME.id(), granted_at_ms=started.granted_at_ms + 10)
    assert await ids(registry, FRAME, live=True) == [pid]
    assert await ids(registry, ROOT, live=True) == [pid]
    # granting again replaces the descriptor and keeps the original grant time
    clock.advance(0.010)
    relabelled = registry.grant_handle(pid, FRAME, descriptor=ProcessHandleDescriptor(label="mine"))
    assert relabelled.descriptor == ProcessHandleDescriptor(label="mine")
    assert relabelled.granted_at_ms == granted.granted_at_ms
    [entry] = await registry.list_handle_grants(FRAME)
    assert isinstance(entry, ProcessHandleGrantEntry)
    assert (entry.grant.descriptor.label, entry.grant.session_id, entry.grant.scope_id) == (
        "mine",
        "s1",
        FRAME.id(),
    )
    assert entry.record == registry.get_process(pid)
    assert entry.summary() == relabelled


async def test_grant_membership_round_trip(registry):
    """Rust ``external_refs_and_handle_grant_membership_round_trip`` (its grant part; we have no
    ``has_handle_grant``, a listing answers it)."""
    owner = ProcessScope("grant-owner")
    pid = registry.start_process(ROOT, "external ref", process_id="proc-external-ref").process_id
    assert await ids(registry, owner, live=False) == []
    registry.grant_handle(pid, owner, descriptor=ProcessHandleDescriptor("test", "external ref"))
    assert await ids(registry, owner, live=False) == [pid]
    registry.revoke_handle(pid, owner)
    assert await registry.list_handle_grants(owner) == []


async def test_a_process_can_exist_with_zero_grants(registry):
    """Rust ``processes_can_exist_with_zero_grants`` (here: starting grants, so revoke it)."""
    pid = registry.start_process(ROOT, "build").process_id
    registry.revoke_handle(pid, ROOT)
    assert await ids(registry, ROOT, live=False) == []
    assert registry.get_process(pid).status is ProcessStatus.RUNNING
    registry.grant_handle(pid, ROOT)  # and it can be granted again
    assert await ids(registry, ROOT, live=True) == [pid]


async def test_multiple_sessions_and_frames_can_hold_grants(registry):
    """Rust ``multiple_sessions_can_hold_grants``; a terminal process leaves every live list."""
    s2 = ProcessScope("s2")
    pid = registry.start_process(ROOT, "shared", process_id="proc-5").process_id
    registry.grant_handle(pid, s2)
    registry.grant_handle(pid, FRAME)
    for scope in (ROOT, s2, FRAME):
        assert await ids(registry, scope, live=True) == [pid]
    registry.complete_process(pid)
    for scope in (ROOT, s2, FRAME):
        assert await ids(registry, scope, live=True) == []
        assert await ids(registry, scope, live=False) == [pid]


async def test_an_empty_frame_id_is_the_root_scope(registry):
    """Grants are keyed by scope *id*: ``for_agent_frame(s, "")`` is ``session:{s}``."""
    empty_frame = ProcessScope.for_agent_frame("s1", "")
    pid = registry.start_process(empty_frame, "build").process_id
    assert await ids(registry, ROOT, live=True) == [pid]
    registry.revoke_handle(pid, ROOT)
    assert await ids(registry, empty_frame, live=False) == []


async def test_unknown_process_ids_raise_typed_errors(registry):
    """Rust: ``grant_handle`` (and ``set_external_ref``) on a missing process fail."""
    for call in (
        lambda: registry.grant_handle("ghost", FRAME),
        lambda: registry.cancel_process("ghost"),
        lambda: registry.complete_process("ghost"),
    ):
        with pytest.raises(UnknownProcessError, match="ghost") as info:
            call()
        assert info.value.process_id == "ghost"
        assert isinstance(info.value, ProcessRegistryError) and isinstance(info.value, KeyError)
    assert await ids(registry, FRAME, live=False) == []
    assert registry.get_process("ghost") is None


async def test_revoke_handle(registry):
    pid = registry.start_process(ROOT, "build").process_id
    registry.grant_handle(pid, FRAME)
    registry.revoke_handle(pid, FRAME)
    assert await ids(registry, FRAME, live=False) == []
    assert await ids(registry, ROOT, live=False) == [pid]
    assert registry.get_process(pid).status is ProcessStatus.RUNNING
    # revoking what is not granted, or an unknown process, is a no-op
    registry.revoke_handle(pid, FRAME)
    registry.revoke_handle("ghost", OTHER_FRAME)
    assert await ids(registry, ROOT, live=False) == [pid]


# --- lifecycle ----------------------------------------------------------------------------------


async def test_cancel_process_and_cancel_twice(registry, clock):
    """Rust's ``cancel_process`` only *requests* a cancel (an event; the process ends when it
    completes as cancelled, ``terminal_and_cancel_events_require_keys``); ours ends it at once."""
    started = registry.start_process(ROOT, "build")
    pid, t0 = started.process_id, started.granted_at_ms
    clock.advance(0.007)
    cancelled = registry.cancel_process(pid)
    assert cancelled.status is ProcessStatus.CANCELLED and cancelled.is_terminal
    assert (cancelled.created_at_ms, cancelled.updated_at_ms) == (t0, t0 + 7)
    assert registry.get_process(pid) == cancelled
    clock.advance(0.007)
    assert registry.cancel_process(pid) == cancelled  # a no-op returning the record unchanged
    assert registry.get_process(pid).updated_at_ms == t0 + 7


async def test_cancel_of_a_completed_process_changes_nothing(registry):
    pid = registry.start_process(ROOT, "build").process_id
    completed = registry.complete_process(pid)
    assert completed.status is ProcessStatus.COMPLETED
    assert registry.cancel_process(pid) == completed


async def test_complete_process_rules(registry, clock):
    """Rust ``await_reads_terminal_materialized_output`` (the record is terminal) and its
    "already terminal" rule for a different terminal state."""
    done = registry.start_process(ROOT, "a").process_id
    failed = registry.start_process(ROOT, "b").process_id
    cancelled = registry.start_process(ROOT, "c").process_id
    t0 = registry.get_process(done).created_at_ms
    clock.advance(0.003)
    record = registry.complete_process(done)
    assert (record.status, record.updated_at_ms, record.is_terminal) == (
        ProcessStatus.COMPLETED,
        t0 + 3,
        True,
    )
    assert registry.complete_process(failed, status="failed").status is ProcessStatus.FAILED
    assert (
        registry.complete_process(cancelled, status=ProcessStatus.CANCELLED).status
        is ProcessStatus.CANCELLED
    )
    clock.advance(0.003)
    assert registry.complete_process(done) == record  # the same terminal status: a no-op
    with pytest.raises(ProcessRegistryError, match="already terminal"):
        registry.complete_process(done, status=ProcessStatus.FAILED)
    assert registry.get_process(done) == record
    pid = registry.start_process(ROOT, "d").process_id
    with pytest.raises(ValueError):
        registry.complete_process(pid, status=ProcessStatus.RUNNING)
    with pytest.raises(ValueError):
        registry.complete_process(pid, status="paused")  # type: ignore[arg-type]
    assert registry.get_process(pid).status is ProcessStatus.RUNNING


async def test_live_versus_all_listing(registry):
    """Rust ``list_live_handle_grants_excludes_terminal_history``."""
    owner = ProcessScope("history-owner")
    registry.start_process(owner, "live", process_id="proc-live-grant")
    registry.start_process(owner, "done", process_id="proc-done-grant")
    registry.complete_process("proc-done-grant")
    assert await ids(registry, owner, live=True) == ["proc-live-grant"]
    assert await ids(registry, owner, live=False) == ["proc-done-grant", "proc-live-grant"]
    a, b, c, d = (registry.start_process(ROOT, n, process_id=n).process_id for n in "abcd")
    registry.cancel_process(a)
    registry.complete_process(c)
    registry.complete_process(d, status=ProcessStatus.FAILED)
    assert await ids(registry, ROOT, live=True) == [b]
    assert await ids(registry, ROOT, live=False) == [a, b, c, d]
    statuses = [e.record.status for e in await registry.list_handle_grants(ROOT)]
    assert statuses == ["cancelled", "running", "completed", "failed"]


async def test_listing_is_sorted_by_process_id_not_start_order(registry):
    for pid in ["zeta", "alpha", "proc-10", "proc-2", "Zulu", "ä"]:
        registry.start_process(ROOT, pid, process_id=pid)
    assert await ids(registry, ROOT, live=False) == ["Zulu", "alpha", "proc-10", "proc-2", "zeta", "ä"]


async def test_wrong_arguments_are_refused_and_change_nothing(registry):
    pid = registry.start_process(ROOT, "build").process_id
    for call in (
        lambda: registry.start_process("s1", "build"),  # type: ignore[arg-type]
        lambda: registry.start_process(ROOT, 7),  # type: ignore[arg-type]
        lambda: registry.start_process(ROOT, "x", kind=3),  # type: ignore[arg-type]
        lambda: registry.grant_handle(pid, "s1"),  # type: ignore[arg-type]
        lambda: registry.grant_handle(pid, FRAME, descriptor={"label": "x"}),  # type: ignore[arg-type]
        lambda: registry.revoke_handle(pid, "s1"),  # type: ignore[arg-type]
    ):
        with pytest.raises(TypeError):
            call()
    for call in (
        lambda: registry.start_process(ROOT, "bad\ud800"),
        lambda: registry.start_process(ROOT, "x", process_id="p\udcff"),
        lambda: registry.start_process(ROOT, "x", kind="k\ud800"),
    ):
        with pytest.raises(InvalidProcessError):
            call()
    assert await ids(registry, ROOT, live=False) == [pid]
    assert await ids(registry, FRAME, live=False) == []


def test_concurrent_starts_from_threads_get_distinct_ids(registry):
    made: list[list[str]] = [[] for _ in range(4)]

    def starter(i: int) -> None:
        for j in range(100):
            made[i].append(registry.start_process(ROOT, f"{i}:{j}").process_id)

    threads = [threading.Thread(target=starter, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [pid for ps in made for pid in ps]
    assert len(set(everything)) == 400
    assert all(registry.get_process(pid) is not None for pid in everything)


# --- reopen (durable backends) ------------------------------------------------------------------


async def test_processes_and_grants_survive_reopen(process_registry_factory, clock):
    """Rust ``process_registry_survives_reopen`` (without its events)."""
    registry = process_registry_factory.open(clock=clock)
    scope = ProcessScope("reopen-session")
    started = registry.start_process(scope, "reopened", kind="tool")
    done = registry.start_process(scope, "done").process_id
    registry.complete_process(done)
    registry = process_registry_factory.reopen(registry)
    assert registry.get_process(started.process_id).name == "reopened"
    assert await ids(registry, scope, live=True) == [started.process_id]
    assert sorted(await ids(registry, scope, live=False)) == sorted([started.process_id, done])
    again = registry.start_process(scope, "reopened", process_id=started.process_id, kind="tool")
    assert again.granted_at_ms == started.granted_at_ms  # a replay, with the first grant time
    fresh = registry.start_process(scope, "fresh").process_id
    assert fresh not in (started.process_id, done)


def test_a_clock_that_raises_is_a_typed_registry_error(process_registry_factory):
    """A failing clock is ``ProcessRegistryError`` (the registry cannot serve the call), with the
    clock's error chained; nothing is registered."""
    from lash_core import ProcessRegistryError
    from lash_core.testing import FakeClock

    broken = OSError("clock unplugged")
    clock = FakeClock()
    registry = process_registry_factory.open(clock=clock)
    try:
        clock.failure = broken
        with pytest.raises(ProcessRegistryError, match="clock failed: .*clock unplugged") as info:
            registry.start_process(ROOT, "build", process_id="p1")
        assert info.value.__cause__ is broken
        clock.failure = None
        assert registry.start_process(ROOT, "build", process_id="p1").process_id == "p1"
    finally:
        process_registry_factory.close(registry)
