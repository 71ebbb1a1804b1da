"""The reusable scenario helpers in ``lash_core.testing``: bounded simulated clients, a strict clock."""

import math

import pytest

from lash_core._events import AssistantProseDelta, TurnActivity
from lash_core._gap import LiveReplayGapReason
from lash_core.testing import MAX_CLIENT_OUTCOMES, FakeClock, Scenario, SimulatedClient


def activity(text: str) -> TurnActivity:
    return TurnActivity.independent(AssistantProseDelta(text))


async def test_a_client_that_reconnects_forever_stays_bounded():
    s = await Scenario.create(session_id="bounded", max_events=1)
    client = s.client("c")
    assert (client.reconnects, client.gap_count, len(client.outcomes)) == (1, 0, 1)  # first connect
    rounds = MAX_CLIENT_OUTCOMES + 100
    for i in range(rounds):
        client.disconnect()
        if i % 2:  # two events while away, retention keeps one: a trimmed gap
            s.handle.record_turn_activity(activity(f"{i}a"))
            s.handle.record_turn_activity(activity(f"{i}b"))
        outcome = client.reconnect()
        assert outcome.kind == ("gap" if i % 2 else "replayed")
        assert client.outcomes[-1] is outcome
    assert len(client.outcomes) == MAX_CLIENT_OUTCOMES  # the recent ones only
    assert client.reconnects == rounds + 1  # but every one is counted
    assert client.gap_count == rounds // 2
    gaps = client.gaps
    assert len(gaps) == MAX_CLIENT_OUTCOMES // 2  # recent gaps, newest last
    assert all(o.gap.reason is LiveReplayGapReason.TRIMMED for o in gaps)
    assert gaps[-1] is client.outcomes[-1]
    assert client.view_matches_server()


async def test_client_arguments_are_checked_before_it_subscribes():
    s = await Scenario.create(session_id="args", backend="memory")  # statistics count subscribers
    for kwargs, error in (
        ({"keep_events": 2.5}, TypeError),
        ({"keep_events": True}, TypeError),
        ({"keep_events": -1}, ValueError),
        ({"keep_events": 10**30}, ValueError),
    ):
        with pytest.raises(error, match="keep_events"):
            SimulatedClient(s.handle, "x", **kwargs)
    with pytest.raises(TypeError, match="name"):
        SimulatedClient(s.handle, 5)  # type: ignore[arg-type]
    assert s.store.statistics(s.session_id).subscribers == 0  # no subscription leaked
    client = SimulatedClient(s.handle, "ok", keep_events=0)
    assert client.connected
    client.connect()  # again: the first subscription is closed, not left behind
    client.connect()
    assert s.store.statistics(s.session_id).subscribers == 1
    assert client.reconnects == 3


def test_fake_clock_refuses_what_a_monotonic_clock_cannot_be():
    for start, error in ((math.nan, ValueError), (math.inf, ValueError), ("1", TypeError), (True, TypeError)):
        with pytest.raises(error, match="start"):
            FakeClock(start)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="epoch_ms"):
        FakeClock(0.0, 1.5)  # type: ignore[arg-type]
    clock = FakeClock(10)
    with pytest.raises(ValueError):
        clock.advance(-1)
    assert clock() == 10.0 and clock.ms() == 1_750_000_000_000


def test_fake_clock_refuses_steps_past_what_its_readings_can_hold():
    from lash_core.testing import FakeClock

    clock = FakeClock()
    with pytest.raises(ValueError, match="2\\*\\*64-1"):
        clock.advance(1e308)
    clock.advance(1.5)
    assert clock() == 1001.5 and clock.ms() == 1_750_000_001_500


# -- where a scenario keeps its data (issue 8, part 1) ----------------------------------------------

import gc
import os
import pathlib

from lash_core import LashError, LiveReplayStoreFailure, QueuedWorkError
from lash_core._replay import InMemoryLiveReplayStore
from lash_core.stores.sqlite import SqliteLiveReplayStore, SqliteQueueStore
from lash_core.testing import DATABASE_ENV, StoreFileError, default_database_path


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project directory as the working directory, without ``$LASH_DB``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DATABASE_ENV, raising=False)
    return tmp_path


def test_the_default_file_is_the_projects_unless_lash_db_names_one(project, monkeypatch):
    assert default_database_path() == project / ".lash" / "lash.sqlite3"
    assert not (project / ".lash").exists()  # nothing is created by asking
    monkeypatch.setenv(DATABASE_ENV, "data/chat.db")  # relative to the working directory
    assert default_database_path() == project / "data" / "chat.db"
    monkeypatch.setenv(DATABASE_ENV, "~/lash.db")
    assert default_database_path() == pathlib.Path(os.path.expanduser("~/lash.db"))
    monkeypatch.setenv(DATABASE_ENV, "")  # empty: as if unset
    assert default_database_path() == project / ".lash" / "lash.sqlite3"
    assert default_database_path({DATABASE_ENV: "/x/y.db"}) == pathlib.Path("/x/y.db")


async def test_a_real_clock_scenario_uses_the_project_file_and_keeps_it(project):
    s = await Scenario.create(session_id="chat", fake_clock=False)
    assert (s.backend, s.temporary) == ("sqlite", False)
    assert s.path == str(project / ".lash" / "lash.sqlite3")
    assert isinstance(s.store, SqliteLiveReplayStore) and isinstance(s.queue, SqliteQueueStore)
    assert s.store.path == s.queue.path == s.processes.path == s.path  # one file for all three
    assert (project / ".lash" / ".gitignore").read_text().strip().endswith("*")
    s.handle.record_queue_changed("enqueued", ["a"])
    cursor = s.handle.current_session_observation().cursor
    s.close()
    assert pathlib.Path(s.path).exists()
    # the next run (a new scenario, same project) continues where the file is
    again = await Scenario.create(session_id="chat", fake_clock=False)
    assert again.path == s.path
    again.handle.record_queue_changed("enqueued", ["b"])
    result = again.store.replay_after_cursor(cursor)
    assert [e.payload.batch_ids for e in result.events] == [("b",)]
    assert result.events[0].live_position == 2
    again.close()


async def test_lash_db_overrides_the_project_file(project, monkeypatch):
    chosen = project / "elsewhere" / "mine.sqlite3"
    chosen.parent.mkdir()
    monkeypatch.setenv(DATABASE_ENV, str(chosen))
    async with await Scenario.create(fake_clock=False) as s:
        assert s.path == str(chosen) and not s.temporary
    assert chosen.exists() and not (project / ".lash").exists()


async def test_a_fake_clock_scenario_gets_a_fresh_temporary_file(project, monkeypatch):
    monkeypatch.setenv(DATABASE_ENV, str(project / "project.db"))  # a fake clock ignores it
    a = await Scenario.create()
    b = await Scenario.create()
    assert a.backend == "sqlite" and a.temporary and b.temporary
    assert a.path != b.path and pathlib.Path(a.path).exists()
    assert not (project / "project.db").exists() and not (project / ".lash").exists()
    a.handle.record_queue_changed("enqueued", ["a"])
    assert b.handle.current_session_observation().cursor.parse().live_position == 0  # no sharing
    directory = pathlib.Path(a.path).parent
    a.close()
    assert not directory.exists()  # removed with its scenario
    # one never closed is removed once its handle is gone
    directory = pathlib.Path(b.path).parent
    del b
    gc.collect()
    assert not directory.exists()


async def test_an_explicit_path_is_used_and_kept_whatever_the_clock(tmp_path):
    path = tmp_path / "given.sqlite3"
    async with await Scenario.create(path=path) as s:
        assert s.path == str(path) and not s.temporary and s.clock is not None
    assert path.exists()


async def test_a_bad_path_is_a_typed_error_naming_it(tmp_path, project, monkeypatch):
    missing = tmp_path / "no-such-dir" / "lash.sqlite3"
    with pytest.raises(StoreFileError, match="does not exist") as info:
        await Scenario.create(path=missing)
    assert info.value.path == str(missing) and isinstance(info.value, LashError)
    assert not missing.parent.exists()  # nothing made on the way
    a_file = tmp_path / "plain.txt"
    a_file.write_text("hello")
    with pytest.raises(StoreFileError, match="is not a directory"):
        await Scenario.create(path=a_file / "lash.sqlite3")
    with pytest.raises(StoreFileError, match="is a directory"):
        await Scenario.create(path=tmp_path)
    with pytest.raises(StoreFileError, match="NUL"):
        await Scenario.create(path=str(tmp_path / "a\x00b.sqlite3"))
    with pytest.raises(StoreFileError, match="file path is needed"):
        await Scenario.create(path=":memory:")
    with pytest.raises(TypeError, match="path must be"):
        await Scenario.create(path=5)  # type: ignore[arg-type]
    foreign = tmp_path / "foreign.sqlite3"
    foreign.write_bytes(b"this is not a SQLite database, not at all" * 100)
    with pytest.raises(StoreFileError, match="foreign.sqlite3") as info:
        await Scenario.create(path=foreign)
    assert isinstance(info.value.__cause__, LashError)  # the store's own error, chained
    monkeypatch.setenv(DATABASE_ENV, str(missing))  # a $LASH_DB directory must exist too
    with pytest.raises(StoreFileError, match="does not exist"):
        await Scenario.create(fake_clock=False)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
async def test_a_directory_that_is_not_writable_is_a_typed_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StoreFileError, match="not writable"):
            await Scenario.create(path=locked / "lash.sqlite3")
    finally:
        locked.chmod(0o700)


async def test_an_unwritable_directory_is_refused_before_sqlite_sees_it(tmp_path, monkeypatch):
    """The same check where permissions cannot be taken away (root): ``os.access`` says no."""
    import lash_core.testing as testing

    monkeypatch.setattr(testing.os, "access", lambda path, mode: False)
    with pytest.raises(StoreFileError, match="is not writable"):
        await Scenario.create(path=tmp_path / "lash.sqlite3")
    existing = tmp_path / "existing.sqlite3"
    existing.write_bytes(b"")
    with pytest.raises(StoreFileError, match="not readable and writable"):
        await Scenario.create(path=existing)


async def test_backend_arguments_are_checked():
    with pytest.raises(ValueError, match="backend must be 'sqlite' or 'memory'"):
        await Scenario.create(backend="redis")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="path is for backend='sqlite'"):
        await Scenario.create(backend="memory", path="x.db")


async def test_a_memory_scenario_keeps_no_file():
    async with await Scenario.create(backend="memory") as s:
        assert (s.backend, s.path, s.temporary) == ("memory", None, False)
        assert isinstance(s.store, InMemoryLiveReplayStore)
    assert s.closed and s.store.closed


async def test_close_closes_every_store_and_is_idempotent():
    s = await Scenario.create(session_id="c")
    directory = pathlib.Path(s.path).parent
    s.close()
    s.close()
    assert s.closed and s.store.closed and s.queue.closed and s.processes.closed
    assert not directory.exists()
    with pytest.raises(LiveReplayStoreFailure):
        s.handle.live_replay_store.append("c", 0, _delta())
    with pytest.raises(QueuedWorkError):
        await s.queue.list_queued_work("c")
    async with await Scenario.create() as t:
        pass
    assert t.closed and t.store.closed


def _delta():
    from lash_core._events import TurnActivityPayload

    return TurnActivityPayload(activity("x"))


async def test_a_sqlite_scenario_restart_reopens_the_same_file_and_the_client_replays():
    async with await Scenario.create(session_id="durable") as s:
        client = s.client("c")
        await s.handle.run_turn("hello")
        client.pump()
        client.disconnect()
        s.handle.record_queue_changed("enqueued", ["while away"])
        old = s.store
        s.restart_store()
        assert old.closed and s.store is not old and s.store.path == old.path == s.path
        assert s.handle.live_replay_store is s.store
        outcome = client.reconnect()
        assert outcome.kind == "replayed" and [e.type for e in outcome.replayed] == ["queue_changed"]
        assert client.view_matches_server()


async def test_a_client_that_replays_a_commit_read_back_from_the_file_rebuilds_its_view():
    async with await Scenario.create(session_id="durable") as s:
        client = s.client("c")
        client.disconnect()
        await s.handle.run_turn("hello")  # a commit while the client is away
        s.restart_store()  # the new store object reads the commit back from the file
        outcome = client.reconnect()
        assert outcome.kind == "replayed" and outcome.replayed[-1].type == "committed"
        assert outcome.replayed[-1].payload.read_view is None  # as on the wire
        assert client.view_matches_server()
        assert not client.follower.view_stale
