"""``SqliteLiveReplayStore`` beyond the conformance suite: restarts, several processes and
connections on one file, and files it must refuse."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from lash_core import (
    Committed,
    Gap,
    InMemoryLiveReplayStoreConfig,
    InvalidObservationError,
    LiveReplayGapReason,
    LiveReplayStoreFailure,
    Replayed,
    SessionCursor,
    Subscribed,
    SubscriberLagged,
    UnknownPayload,
)
from lash_core.stores._sqlite_replay import SqliteLiveReplayStore
from lash_core.testing import FakeClock

from conformance.replay_model import delta, positions, texts

TRIMMED = LiveReplayGapReason.TRIMMED


def _store(path: Path, clock: FakeClock, n: int = 16, age: float = 120.0) -> SqliteLiveReplayStore:
    return SqliteLiveReplayStore(path, InMemoryLiveReplayStoreConfig(n, age), clock=clock)


def test_reopen_continues_positions_and_an_old_cursor_replays_exactly(tmp_path):
    clock = FakeClock()
    path = tmp_path / "replay.db"
    s = _store(path, clock)
    start = s.current_cursor("s", 0)
    a = s.append("s", 0, delta("a"))
    b = s.append("s", 1, delta("b"))
    s.append("other", 0, delta("x"))
    s.close()
    with pytest.raises(LiveReplayStoreFailure, match="closed"):
        s.append("s", 0, delta("late"))

    s = _store(path, clock)  # a kernel restart: a new object on the same file
    assert s.current_cursor("s", 7) == SessionCursor.new("s", 7, 2)
    assert s.current_cursor("other", 0) == SessionCursor.new("other", 0, 1)
    c = s.append("s", 2, delta("c"))
    assert c.cursor == SessionCursor.new("s", 2, 3)  # continues, never reused
    # events from before the restart come back from the file, equal to what append returned
    assert s.replay_after_cursor(start) == Replayed((a, b, c))
    assert s.replay_after_cursor(a.cursor) == Replayed((b, c))
    assert s.replay_after_cursor(c.cursor) == Replayed(())
    assert s.replay_after_cursor(SessionCursor.new("s", 0, 4)) == Gap(
        LiveReplayGapReason.UNAVAILABLE
    )
    s.close()


def test_committed_reads_back_without_read_view_and_ages_count_across_restarts(tmp_path):
    clock = FakeClock()
    path = tmp_path / "replay.db"
    s = _store(path, clock, age=10.0)
    start = s.current_cursor("s", 0)
    committed = s.append("s", 4, Committed(None))
    s.append("s", 4, delta("later"))
    s.close()
    clock.advance(5)
    s = _store(path, clock, age=10.0)
    result = s.replay_after_cursor(start)
    assert isinstance(result, Replayed)
    assert result.events[0] == committed and result.events[0].payload == Committed(None)
    clock.advance(6)  # 11 s after the appends, on the store's clock: trimmed despite the restart
    assert s.replay_after_cursor(start) == Gap(TRIMMED)
    assert s.replay_after_cursor(SessionCursor.new("s", 0, 2)) == Replayed(())
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT count(*) FROM lash_replay_events").fetchone() == (0,)
        assert raw.execute("SELECT tail FROM lash_replay_sessions").fetchall() == [(2,)]
    s.close()


def test_another_connection_appends_reach_replay_and_later_live_subscribers(tmp_path):
    clock = FakeClock()
    path = tmp_path / "replay.db"
    mine, theirs = _store(path, clock), _store(path, clock)
    start = mine.current_cursor("s", 0)
    result = mine.subscribe_after_cursor(start)
    assert isinstance(result, Subscribed)
    sub = result.subscription
    mine.append("s", 0, delta("1"))
    theirs.append("s", 0, delta("2"))
    theirs.append("s", 0, delta("3"))
    assert texts(sub.next_batch_nowait()) == ["1"]  # the other object's appends are not followed
    assert sub.next_nowait() is None
    assert texts(mine.replay_after_cursor(start).events) == ["1", "2", "3"]  # replay sees them
    mine.append("s", 0, delta("4"))  # this object's next append reads them into the window
    assert positions(sub.next_batch_nowait()) == [2, 3, 4]
    assert texts(theirs.replay_after_cursor(start).events) == ["1", "2", "3", "4"]
    sub.close()
    mine.close()
    theirs.close()


def _append_many(path: str, worker: int, count: int) -> list[int]:
    store = SqliteLiveReplayStore(path, InMemoryLiveReplayStoreConfig(100_000, 3600.0))
    try:
        return [
            store.append("shared", 0, delta(f"{worker}:{i}")).cursor.parse().live_position
            for i in range(count)
        ]
    finally:
        store.close()


def test_two_processes_appending_to_one_session_get_distinct_contiguous_positions(tmp_path):
    path = str(tmp_path / "replay.db")
    SqliteLiveReplayStore(path).close()  # create the file before the race
    per_worker = 300
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(_append_many, [(path, 0, per_worker), (path, 1, per_worker)])
    assert all(len(r) == per_worker and r == sorted(r) for r in results)  # each one's order kept
    assert sorted(results[0] + results[1]) == list(range(1, 2 * per_worker + 1))
    store = SqliteLiveReplayStore(path, InMemoryLiveReplayStoreConfig(100_000, 3600.0))
    events = store.replay_after_cursor(SessionCursor.new("shared", 0, 0)).events
    assert positions(events) == list(range(1, 2 * per_worker + 1))
    by_text = {t: p for t, p in zip(texts(events), positions(events))}
    assert all(by_text[f"{w}:{i}"] == results[w][i] for w in (0, 1) for i in range(per_worker))
    store.close()


def test_a_file_that_is_not_a_lash_store_is_refused_with_a_typed_error(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database, just some bytes" * 100)
    with pytest.raises(LiveReplayStoreFailure, match="SQLite failed to open") as info:
        SqliteLiveReplayStore(garbage)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)

    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as raw:
        raw.execute("PRAGMA user_version = 42")
    with pytest.raises(LiveReplayStoreFailure, match="file format 42"):
        SqliteLiveReplayStore(foreign)

    with pytest.raises(InvalidObservationError, match="file path"):
        SqliteLiveReplayStore(":memory:")
    with pytest.raises(InvalidObservationError, match="config"):
        SqliteLiveReplayStore(tmp_path / "x.db", {"max_age": 1})  # type: ignore[arg-type]


def test_a_broken_file_under_an_open_store_raises_the_typed_failure(tmp_path):
    path = tmp_path / "replay.db"
    s = _store(path, FakeClock())
    s.append("s", 0, delta("a"))
    with sqlite3.connect(path) as raw:
        raw.execute("DROP TABLE lash_replay_events")
    with pytest.raises(LiveReplayStoreFailure, match="SQLite failed to append") as info:
        s.append("s", 0, delta("b"))
    assert isinstance(info.value.__cause__, sqlite3.Error)
    assert s.current_cursor("s", 0) == SessionCursor.new("s", 0, 1)  # the failure used no position
    s.close()


def test_a_payload_the_wire_cannot_carry_is_refused_typed_and_uses_no_position(tmp_path):
    s = _store(tmp_path / "replay.db", FakeClock())
    sub = s.subscribe_after_cursor(SessionCursor.new("s", 0, 0)).subscription
    for bad in (delta("bad \udc80 byte"), UnknownPayload("x", {"\udcff": 1})):
        with pytest.raises(InvalidObservationError, match="payload cannot be stored as wire JSON"):
            s.append("s", 0, bad)
    assert s.current_cursor("s", 0) == SessionCursor.new("s", 0, 0)  # no position used
    assert sub.next_nowait() is None  # nothing reached the live window
    assert positions([s.append("s", 0, delta("ok"))]) == [1]
    assert positions(sub.next_batch_nowait()) == [1]
    sub.close()
    s.close()


def test_events_retention_dropped_before_a_catch_up_reach_live_subscribers_as_a_lag(tmp_path):
    clock = FakeClock()
    path = tmp_path / "replay.db"
    mine, theirs = _store(path, clock, n=4, age=10.0), _store(path, clock, n=4, age=10.0)
    mine.append("s", 0, delta("1"))
    sub = mine.subscribe_after_cursor(SessionCursor.new("s", 0, 0)).subscription
    for i in range(2, 12):
        theirs.append("s", 0, delta(str(i)))
    theirs.trim_session("s")  # keeps 8..11 of what this object's window has not seen
    mine.append("s", 0, delta("12"))  # catches up from the file: 2..7 are gone
    assert positions(sub.next_batch_nowait()) == [1]  # the replay part
    with pytest.raises(SubscriberLagged) as info:
        sub.next_batch_nowait()
    assert info.value.count == 6
    assert positions(sub.next_batch_nowait()) == [8, 9, 10, 11, 12]
    # every event the other object appended expired before the catch-up: still a lag, not a hole
    theirs.append("s", 0, delta("13"))
    clock.advance(11)
    theirs.trim_session("s")
    mine.append("s", 0, delta("14"))
    with pytest.raises(SubscriberLagged) as info:
        sub.next_nowait()
    assert info.value.count == 1
    assert positions(sub.next_batch_nowait()) == [14]
    # a subscribe catches the window up too; a batch stops before the hole, the next read lags
    mine.append("s", 0, delta("15"))
    for i in range(16, 22):
        theirs.append("s", 0, delta(str(i)))
    theirs.trim_session("s")  # keeps 18..21
    late = mine.subscribe_after_cursor(mine.current_cursor("s", 0)).subscription
    assert positions(sub.next_batch_nowait()) == [15]
    with pytest.raises(SubscriberLagged) as info:
        sub.next_batch_nowait()
    assert info.value.count == 2
    assert positions(sub.next_batch_nowait()) == [18, 19, 20, 21]
    mine.append("s", 0, delta("22"))
    assert positions(sub.next_batch_nowait()) == positions(late.next_batch_nowait()) == [22]
    for one in (sub, late, mine, theirs):
        one.close()


def test_a_tail_at_sqlites_largest_integer_refuses_the_next_append_and_bad_rows_are_typed(tmp_path):
    path = tmp_path / "replay.db"
    s = _store(path, FakeClock())
    s.append("s", 0, delta("a"))
    top = 2**63 - 1
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE lash_replay_sessions SET tail = ?", (top - 1,))
    last = s.append("s", 0, delta("last"))
    assert positions([last]) == [top]
    with pytest.raises(LiveReplayStoreFailure, match="'s'.*2\\*\\*63-1"):
        s.append("s", 0, delta("past"))
    assert s.current_cursor("s", 0) == SessionCursor.new("s", 0, top)  # nothing written
    assert s.replay_after_cursor(SessionCursor.new("s", 0, top - 1)) == Replayed((last,))
    assert s.replay_after_cursor(SessionCursor.new("s", 0, 2**63)) == Gap(
        LiveReplayGapReason.UNAVAILABLE
    )
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT tail, typeof(tail) FROM lash_replay_sessions").fetchall() == [
            (top, "integer")
        ]
    # a tail or a position that is not an integer in range is a store failure naming the session
    for column, value in (("tail", 2.5), ("tail", "x"), ("position", 1.5)):
        fresh = tmp_path / f"{column}-{value}.db"
        t = _store(fresh, FakeClock())
        t.append("s", 0, delta("a"))
        t.append("s", 0, delta("b"))
        with sqlite3.connect(fresh) as raw:
            if column == "tail":
                raw.execute("UPDATE lash_replay_sessions SET tail = ?", (value,))
            else:
                raw.execute(
                    "UPDATE lash_replay_events SET position = ? WHERE position = 1", (value,)
                )
        calls = [
            lambda: t.replay_after_cursor(SessionCursor.new("s", 0, 0)),
            lambda: t.subscribe_after_cursor(SessionCursor.new("s", 0, 0)),
        ]
        if column == "tail":
            calls += [lambda: t.append("s", 0, delta("c")), lambda: t.current_cursor("s", 0)]
        for call in calls:
            with pytest.raises(LiveReplayStoreFailure, match="session 's'"):
                call()
        t.close()
    s.close()
