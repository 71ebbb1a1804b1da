"""Recorder: a followed session appended to a JSON Lines log (real files, real scenarios, one
SessionFollower underneath), read back with the exact loader."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lash_core import (
    AssistantProseDelta,
    FinalValue,
    LiveReplayGapReason,
    LiveReplayStoreFailure,
    MalformedCursorError,
    ReplayClosed,
    RetryPolicy,
    SessionCursor,
    SessionObservationEvent,
    SessionRevision,
    StoreSource,
    TurnActivity,
    TurnActivityPayload,
    WrongSessionError,
)
from lash_core.testing import Scenario
from lash_nb.forensics import (
    LineKind,
    LogLockedError,
    LogSessionError,
    LogTail,
    Recorder,
    RecorderError,
    RecorderStatistics,
    RecorderWriteError,
    encode_line,
    load_log,
    read_log_tail,
)
from lash_nb.forensics._load import split_lines
from lash_nb.forensics._recorder import TAIL_BLOCK, _resume_point, _scan_tail
from sources import OutageSource, delta

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST_RETRY = RetryPolicy(initial_delay_s=0.01, max_delay_s=0.02)


def tail_position(handle) -> int:
    return handle.current_session_observation().cursor.live_position()


async def settled(rec: Recorder, handle, timeout: float = 10.0) -> None:
    """Wait until the log holds everything up to the handle's tail (or the run failed)."""

    async def wait() -> None:
        target = tail_position(handle)
        while True:
            last = rec.statistics().last_cursor
            if last is not None and last.live_position() == target:
                return
            if rec.error is not None:
                raise rec.error
            await asyncio.sleep(0.005)

    await asyncio.wait_for(wait(), timeout)


def loaded(path, errors: int = 0):
    """The log through the exact loader, with exactly ``errors`` bad lines."""
    log = load_log(path)
    assert len(log.errors) == errors, log.errors.to_dict("records")
    return log


def wire(event: SessionObservationEvent) -> SessionObservationEvent:
    return SessionObservationEvent.from_dict(event.to_dict())


def history(handle) -> list[SessionObservationEvent]:
    """Every retained event of the handle's session, from the store."""
    return list(handle.resume_session_observation(SessionCursor.new(handle.session_id, 0, 0)).events)


def positions(log) -> list[int]:
    return [int(p) for p in log.frame["position"]]


def strictly_increasing(values: list[int]) -> bool:
    return all(a < b for a, b in zip(values, values[1:]))


# --- recording real turns -------------------------------------------------------------------------


async def test_real_turns_are_recorded_and_load_back_equal(tmp_path):
    path = tmp_path / "chat.jsonl"
    async with await Scenario.create(backend="memory", session_id="chat") as s:
        rec = Recorder(s.handle, path)
        assert repr(rec).startswith(f"<Recorder {str(path)!r} session='chat' stopped lines=0")
        await rec.start()
        assert rec.running and rec.follower.connected
        await s.handle.run_turn("hello")
        await s.handle.run_turn("add 2 and 3")
        await settled(rec, s.handle)
        assert "running" in repr(rec)
        stats = await rec.stop()
        expected = [wire(e) for e in history(s.handle)]
    log = loaded(path)
    assert log.events == expected and len(expected) > 10
    assert positions(log) == list(range(1, len(expected) + 1))
    assert log.frame["received_at"].notna().all()
    # one cursor row where the recording started (the empty session's tail), nothing else
    assert log.markers["kind"].tolist() == ["cursor"]
    assert log.markers["position"].tolist() == [0] and log.markers["line"].tolist() == [1]
    assert log.gaps.empty and log.lines == len(expected) + 1
    assert isinstance(stats, RecorderStatistics) and not stats.running
    assert (stats.lines, stats.events, stats.gaps, stats.lags, stats.reconnects, stats.runs) == (
        len(expected) + 1, len(expected), 0, 0, 0, 1
    )
    assert stats.bytes == path.stat().st_size
    assert stats.last_cursor == expected[-1].cursor
    assert stats.started_from == SessionCursor.new("chat", 0, 0)
    assert stats.path == str(path) and stats.session_id == "chat" and not stats.terminated_line
    assert await rec.stop() == stats  # stopping twice is harmless
    first = json.loads(path.read_bytes().splitlines()[1])
    assert first["protocol_version"] == 3 and first["received_at"].endswith("Z")


async def test_an_empty_log_starts_at_the_tail_and_from_start_replays_the_history(tmp_path):
    async with await Scenario.create(backend="memory", session_id="chat") as s:
        await s.handle.run_turn("before")
        before = tail_position(s.handle)
        async with Recorder(s.handle, tmp_path / "tail.jsonl") as tail_rec:
            async with Recorder.from_start(s.handle, tmp_path / "all.jsonl") as all_rec:
                await s.handle.run_turn("after")
                await settled(tail_rec, s.handle)
                await settled(all_rec, s.handle)
        everything = [wire(e) for e in history(s.handle)]
    new = loaded(tmp_path / "tail.jsonl")
    assert positions(new) == list(range(before + 1, len(everything) + 1))  # only new events
    assert new.markers["position"].tolist() == [before]
    full = loaded(tmp_path / "all.jsonl")
    assert full.events == everything and full.markers["position"].tolist() == [0]


async def test_from_start_past_retention_records_a_trimmed_gap(tmp_path):
    path = tmp_path / "log.jsonl"
    async with await Scenario.create(backend="memory", session_id="chat", max_events=4) as s:
        await s.handle.run_turn("hello")
        tail = s.handle.current_session_observation()
        async with Recorder(s.handle, path, cursor="start") as rec:
            await settled(rec, s.handle)
            assert rec.statistics().gaps == 1
    log = loaded(path)
    assert log.gaps["reason"].tolist() == ["trimmed"]
    assert log.gaps["requested_position"].tolist() == [0]
    assert log.gaps["latest_cursor"].tolist() == [str(tail.cursor)]
    assert log.gaps["observation_cursor"].tolist() == [str(tail.cursor)]
    assert log.frame.empty


async def test_a_gap_is_recorded_with_its_cursors_and_the_fresh_observation(tmp_path):
    path = tmp_path / "log.jsonl"
    async with await Scenario.create(backend="memory", session_id="chat", max_events=4) as s:
        async with Recorder(s.handle, path) as rec:
            delta(s.handle, "one")
            delta(s.handle, "two")
            await settled(rec, s.handle)
        left_at = rec.statistics().last_cursor
        await s.handle.run_turn("while nobody records")  # far more than 4 events: trimmed
        await s.handle.run_turn("and again")
        fresh = s.handle.current_session_observation()
        async with Recorder(s.handle, path) as rec2:
            delta(s.handle, "three")
            await settled(rec2, s.handle)
        stats = rec2.statistics()
    assert (stats.gaps, stats.events, stats.started_from) == (1, 1, left_at)
    log = loaded(path)
    assert positions(log) == [1, 2, fresh.cursor.live_position() + 1]
    gap = log.gaps.iloc[0]
    assert gap["reason"] == "trimmed" and gap["session_id"] == "chat"
    assert gap["requested_cursor"] == str(left_at) and gap["requested_position"] == 2
    assert gap["latest_cursor"] == str(fresh.cursor)
    assert gap["missed_events"] == fresh.cursor.live_position() - 2
    assert gap["observation_cursor"] == str(fresh.cursor)
    assert gap["observation_turn_index"] == fresh.read_view.turn_index == 2
    assert log.gap_observations[0].read_view.turn_index == 2
    # the gap row sits between the restart's cursor row and the next event
    assert log.markers["line"].tolist() == [1, 4] and gap["line"] == 5


async def test_a_lag_is_recorded_and_the_missed_events_follow(tmp_path):
    path = tmp_path / "log.jsonl"
    async with await Scenario.create(backend="memory", session_id="chat", subscriber_backlog=2) as s:
        async with Recorder(s.handle, path) as rec:
            for i in range(10):  # no await in between: the subscription overflows
                delta(s.handle, str(i))
            await settled(rec, s.handle)
        stats = rec.statistics()
    assert (stats.lags, stats.lagged_events, stats.events, stats.gaps) == (1, 8, 10, 0)
    log = loaded(path)
    assert positions(log) == list(range(1, 11))  # retention still held them: replayed, once
    lagged = log.markers[log.markers["kind"] == "lagged"]
    assert lagged["count"].tolist() == [8] and lagged["position"].tolist() == [0]
    assert lagged["line"].tolist() == [2]  # right after the start's cursor row


# --- stopping and resuming ---------------------------------------------------------------------------


async def test_stop_and_resume_cycles_never_duplicate_a_line(tmp_path):
    path = tmp_path / "log.jsonl"
    async with await Scenario.create(backend="memory", session_id="chat") as s:
        same = Recorder(s.handle, path)
        for cycle in range(3):
            await same.start()  # the same object again: it resumes from its log
            await s.handle.run_turn(f"turn {cycle}")
            await settled(same, s.handle)
            await same.stop()
            delta(s.handle, f"while stopped {cycle}")  # recorded by the next run, once
        for cycle in range(2):  # new recorders on the same log
            async with Recorder(s.handle, path) as rec:
                await s.handle.run_turn(f"later {cycle}")
                await settled(rec, s.handle)
            delta(s.handle, "stopped again")
        async with Recorder(s.handle, path) as rec:
            await settled(rec, s.handle)
        everything = [wire(e) for e in history(s.handle)]
    assert same.statistics().runs == 3
    log = loaded(path)
    assert positions(log) == list(range(1, len(everything) + 1))  # each event once, in order
    assert strictly_increasing(positions(log)) and log.events == everything
    assert log.markers["kind"].tolist() == ["cursor"] * 6


async def test_a_given_cursor_is_where_recording_starts(tmp_path):
    async with await Scenario.create(backend="memory", session_id="chat") as s:
        for i in range(5):
            delta(s.handle, str(i))
        after = SessionCursor.new("chat", 0, 3)
        async with Recorder(s.handle, tmp_path / "a.jsonl", cursor=after) as rec:
            await settled(rec, s.handle)
        async with Recorder(s.handle, tmp_path / "b.jsonl", cursor=str(after)) as rec:
            await settled(rec, s.handle)
    for name in ("a.jsonl", "b.jsonl"):
        log = loaded(tmp_path / name)
        assert positions(log) == [4, 5] and log.markers["position"].tolist() == [3]


async def test_a_given_cursor_the_log_is_already_past_yields_to_the_log(tmp_path):
    path = tmp_path / "log.jsonl"
    async with await Scenario.create(backend="memory", session_id="chat") as s:
        for i in range(3):
            delta(s.handle, str(i))
        for _ in range(2):  # the same notebook cell run twice: the history is written once
            async with Recorder.from_start(s.handle, path) as rec:
                delta(s.handle, "more")
                await settled(rec, s.handle)
        assert rec.statistics().started_from.live_position() == 4
        ahead = SessionCursor.new("chat", 0, 7)  # ahead of the log: honoured (a visible jump)
        for i in range(3):
            delta(s.handle, str(i))
        async with Recorder(s.handle, path, cursor=ahead) as rec:
            await settled(rec, s.handle)
    log = loaded(path)
    assert positions(log) == [1, 2, 3, 4, 5, 8]
    assert log.markers["position"].tolist() == [0, 4, 7]


async def test_the_running_recorder_of_a_path_can_be_found_and_stopped(tmp_path):
    path = tmp_path / "log.jsonl"
    async with await Scenario.create(backend="memory", session_id="chat") as s:
        assert Recorder.active(path) is None
        await Recorder(s.handle, path).start()  # the variable is lost, as in a re-run cell
        with pytest.raises(LogLockedError, match="Recorder.active"):
            await Recorder(s.handle, path).start()
        old = Recorder.active(str(tmp_path / "." / "log.jsonl"))
        assert old is not None and old.running
        await old.stop()
        assert Recorder.active(path) is None
        async with Recorder(s.handle, path) as rec:
            assert Recorder.active(path) is rec
    loaded(path)


async def test_a_store_source_is_recorded_like_a_handle(tmp_path):
    """A process that follows a session it does not run: a StoreSource on the shared store."""
    path = tmp_path / "log.jsonl"
    async with await Scenario.create(session_id="chat") as s:  # SQLite
        source = StoreSource(s.store, "chat")
        async with Recorder(source, path) as rec:
            await s.handle.run_turn("hello")
            await settled(rec, s.handle)
        everything = [wire(e) for e in history(s.handle)]
    assert loaded(path).events == everything


# --- a log cut by a crash --------------------------------------------------------------------------


async def test_a_line_cut_by_a_crash_is_ended_and_shows_as_one_bad_line(tmp_path, caplog):
    path = tmp_path / "log.jsonl"
    async with await Scenario.create(backend="memory", session_id="chat") as s:
        async with Recorder(s.handle, path) as rec:
            await s.handle.run_turn("hello")
            await settled(rec, s.handle)
        whole = path.read_bytes()
        last = whole.splitlines()[-1]
        with open(path, "ab") as f:  # a crash in the middle of the next write
            f.write(last[: len(last) // 2])
        tail = read_log_tail(path)
        assert tail.unterminated and tail.cut and tail.cursor == rec.statistics().last_cursor
        delta(s.handle, "after the crash")
        with caplog.at_level(logging.WARNING, logger="lash_nb.forensics"):
            async with Recorder(s.handle, path) as rec2:
                await settled(rec2, s.handle)
        assert rec2.statistics().terminated_line and rec2.statistics().events == 1
        assert "did not end with a newline" in caplog.text and "cut short" in caplog.text
        count = len(history(s.handle))
    log = loaded(path, errors=1)
    bad_line = len(whole.splitlines()) + 1
    assert log.errors["line"].tolist() == [bad_line]
    assert log.errors["raw"].iloc[0] == last[: len(last) // 2].decode()
    assert positions(log) == list(range(1, count + 1))  # resumed after the last whole line
    assert log.markers["line"].tolist() == [1, bad_line + 1]  # the restart's row is whole


async def test_a_last_line_missing_only_its_newline_is_resumed_from(tmp_path, caplog):
    path = tmp_path / "log.jsonl"
    async with await Scenario.create(backend="memory", session_id="chat") as s:
        async with Recorder(s.handle, path) as rec:
            for i in range(3):
                delta(s.handle, str(i))
            await settled(rec, s.handle)
        path.write_bytes(path.read_bytes()[:-1])  # the crash took the final newline only
        tail = read_log_tail(path)
        assert tail.unterminated and not tail.cut and tail.cursor.live_position() == 3
        delta(s.handle, "next")
        with caplog.at_level(logging.WARNING, logger="lash_nb.forensics"):
            async with Recorder(s.handle, path) as rec2:
                await settled(rec2, s.handle)
        assert "only missed its newline" in caplog.text
    log = loaded(path)  # nothing bad: the line was whole
    assert positions(log) == [1, 2, 3, 4]


# --- outages, restarts and failures ------------------------------------------------------------------


async def test_an_outage_is_ridden_out_and_marked_with_a_cursor_row(tmp_path):
    path = tmp_path / "log.jsonl"
    async with await Scenario.create(backend="memory", session_id="chat") as s:
        source = OutageSource(s.handle)
        async with Recorder(source, path, retry=FAST_RETRY) as rec:
            await s.handle.run_turn("before")
            await settled(rec, s.handle)
            down_at = rec.statistics().last_cursor
            source.down = True
            await s.handle.run_turn("during")  # appended while the recorder cannot read
            while source.refused < 3:
                await asyncio.sleep(0.005)
            assert rec.running and rec.error is None
            source.down = False
            await s.handle.run_turn("after")
            await settled(rec, s.handle)
        stats = rec.statistics()
        everything = [wire(e) for e in history(s.handle)]
    assert stats.reconnects == 1 and stats.gaps == 0 and stats.events == len(everything)
    log = loaded(path)
    assert log.events == everything  # nothing missed, nothing twice
    cursors = log.markers[log.markers["kind"] == "cursor"]
    assert cursors["cursor"].tolist() == [str(SessionCursor.new("chat", 0, 0)), str(down_at)]


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
async def test_a_store_restart_is_followed(tmp_path, backend):
    path = tmp_path / "log.jsonl"
    async with await Scenario.create(backend=backend, session_id="chat") as s:
        async with Recorder(s.handle, path) as rec:
            await s.handle.run_turn("before")
            await settled(rec, s.handle)
            before = rec.statistics().events
            s.restart_store()  # the subscription ends; the follower resubscribes to the new store
            await s.handle.run_turn("after")
            await settled(rec, s.handle)
        stats = rec.statistics()
    log = loaded(path)
    assert strictly_increasing(positions(log)) and rec.error is None
    if backend == "sqlite":  # durable: the missed events replay, no gap
        assert stats.gaps == 0 and positions(log) == list(range(1, stats.events + 1))
        assert stats.events > before
    else:  # a fresh in-memory store: an unavailable gap, then its events
        assert log.gaps["reason"].tolist() == [str(LiveReplayGapReason.UNAVAILABLE)]
        assert positions(log)[before] > log.gaps["latest_position"].iloc[0]


async def test_a_source_that_gives_up_ends_the_run_and_stop_raises_it(tmp_path):
    path = tmp_path / "log.jsonl"
    async with await Scenario.create(backend="memory", session_id="chat") as s:
        source = OutageSource(s.handle)
        retry = RetryPolicy(initial_delay_s=0.01, max_delay_s=0.01, give_up_after_s=0.05)
        rec = Recorder(source, path, retry=retry)
        await rec.start()
        delta(s.handle, "kept")
        await settled(rec, s.handle)
        source.down = True
        while rec.running:
            await asyncio.sleep(0.005)
        assert isinstance(rec.error, LiveReplayStoreFailure) and "failed" in repr(rec)
        with pytest.raises(RecorderError, match="last run failed"):
            await rec.start()  # the failure is not dropped by starting over
        with pytest.raises(LiveReplayStoreFailure, match="unreachable"):
            await rec.stop()
        with pytest.raises(LiveReplayStoreFailure):
            await rec.stop()  # kept until the next start
        source.down = False
        await rec.start()  # after stop(): resumes from the log
        assert rec.error is None
        await rec.stop()
    log = loaded(path)
    assert positions(log) == [1]


async def test_without_a_retry_policy_a_closed_store_ends_the_run(tmp_path):
    path = tmp_path / "log.jsonl"
    async with await Scenario.create(backend="memory", session_id="chat") as s:
        rec = Recorder(s.handle, path, retry=None)
        await rec.start()
        delta(s.handle, "kept")
        await settled(rec, s.handle)
        s.store.close()
        while rec.running:
            await asyncio.sleep(0.005)
        with pytest.raises(ReplayClosed):
            await rec.stop()
        assert isinstance(rec.error, ReplayClosed)
    assert positions(loaded(path)) == [1]


async def test_the_body_error_of_async_with_wins_and_the_recorder_error_is_a_note(tmp_path):
    async with await Scenario.create(backend="memory", session_id="chat") as s:
        with pytest.raises(KeyError) as info:
            async with Recorder(s.handle, tmp_path / "log.jsonl", retry=None) as rec:
                s.store.close()
                while rec.running:
                    await asyncio.sleep(0.005)
                raise KeyError("the body's own error")
        assert any("failed too" in note for note in info.value.__notes__)
        assert isinstance(rec.error, ReplayClosed)
    loaded(tmp_path / "log.jsonl")


async def test_a_full_disk_at_start_is_a_write_error_and_nothing_stays_open(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    async with await Scenario.create(backend="memory", session_id="chat") as s:
        rec = Recorder(s.handle, "/dev/full")
        with pytest.raises(RecorderWriteError, match="failed after 0 lines") as info:
            await rec.start()
        assert info.value.path == "/dev/full" and info.value.lines == 0
        assert isinstance(info.value.__cause__, OSError)
        assert not rec.running and rec._file is None


@pytest.mark.slow
def test_a_write_failing_mid_recording_keeps_every_line_before_it(tmp_path):
    """A file size limit (the kernel's stand-in for a full disk) hit while recording."""
    path = tmp_path / "log.jsonl"
    script = textwrap.dedent(
        """
        import asyncio, json, resource, signal, sys
        from lash_core.testing import Scenario
        from lash_nb.forensics import Recorder, RecorderWriteError

        async def main():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
            resource.setrlimit(resource.RLIMIT_FSIZE, (6000, resource.RLIM_INFINITY))
            async with await Scenario.create(backend="memory", session_id="chat") as s:
                rec = Recorder(s.handle, sys.argv[1])
                await rec.start()
                while rec.running:
                    await s.handle.run_turn("fill the disk")
                    await asyncio.sleep(0.01)
                try:
                    await rec.stop()
                except RecorderWriteError as err:
                    stats = rec.statistics()
                    print(json.dumps({"lines": err.lines, "stat_lines": stats.lines,
                                      "events": stats.events, "bytes": stats.bytes,
                                      "reason": err.reason}))

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        cwd=os.path.join(REPO, "tests"), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "File too large" in report["reason"]
    size = path.stat().st_size
    assert size == report["bytes"] <= 6000
    data = path.read_bytes()
    whole_lines = data.count(b"\n")
    assert report["lines"] == report["stat_lines"] == whole_lines
    log = loaded(path, errors=0 if data.endswith(b"\n") else 1)  # at most the cut last line
    assert len(log.frame) == report["events"] and strictly_increasing(positions(log))


# --- one writer per log ------------------------------------------------------------------------------


async def test_a_second_recorder_on_the_same_log_is_refused(tmp_path):
    path = tmp_path / "log.jsonl"
    async with await Scenario.create(backend="memory", session_id="chat") as s:
        first = Recorder(s.handle, path)
        await first.start()
        second = Recorder(s.handle, os.fspath(path))
        with pytest.raises(LogLockedError, match="another recorder") as info:
            await second.start()
        assert info.value.path == str(path) and not second.running
        with pytest.raises(RecorderError, match="running already"):
            await first.start()
        delta(s.handle, "one")
        await settled(first, s.handle)
        await first.stop()
        await second.start()  # the lock went with the first recorder
        delta(s.handle, "two")
        await settled(second, s.handle)
        await second.stop()
    assert positions(loaded(path)) == [1, 2]


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from lash_core.testing import Scenario
    from lash_nb.forensics import LogLockedError, Recorder

    async def main():
        async with await Scenario.create(backend="memory", session_id="chat") as s:
            try:
                async with Recorder(s.handle, sys.argv[1]):
                    pass
            except LogLockedError as err:
                print("locked", err.path)
                return 3
            print("recorded")
            return 0

    sys.exit(asyncio.run(main()))
    """
)


@pytest.mark.slow
async def test_a_recorder_in_another_process_is_refused(tmp_path):
    path = tmp_path / "log.jsonl"

    async def child() -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, str(path),
            cwd=os.path.join(REPO, "tests"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode in (0, 3), err.decode()
        return proc.returncode, out.decode()

    async with await Scenario.create(backend="memory", session_id="chat") as s:
        async with Recorder(s.handle, path) as rec:
            code, out = await child()
            assert (code, out.split()) == (3, ["locked", str(path)])
            delta(s.handle, "mine")
            await settled(rec, s.handle)
        code, out = await child()  # released by stop()
        assert (code, out.strip()) == (0, "recorded")
    loaded(path)


# --- start errors -------------------------------------------------------------------------------------


async def test_start_errors_are_typed_and_leave_the_log_untouched(tmp_path):
    path = tmp_path / "log.jsonl"
    async with await Scenario.create(backend="memory", session_id="chat") as s:
        with pytest.raises(MalformedCursorError):
            await Recorder(s.handle, path, cursor="nonsense").start()
        with pytest.raises(WrongSessionError):
            await Recorder(s.handle, path, cursor=SessionCursor.new("other", 0, 0)).start()
        assert not path.exists()  # checked before the file is opened
        async with Recorder(s.handle, path) as rec:
            delta(s.handle)
            await settled(rec, s.handle)
        recorded = path.read_bytes()
        async with await Scenario.create(backend="memory", session_id="other") as other:
            with pytest.raises(LogSessionError, match="records session `chat`, not `other`") as info:
                await Recorder(other.handle, path).start()
            assert (info.value.expected_session_id, info.value.log_session_id) == ("other", "chat")
            with pytest.raises(LogSessionError):  # a given cursor does not make it that session's
                await Recorder(other.handle, path, cursor="start").start()
        assert path.read_bytes() == recorded
        odd = tmp_path / "odd.jsonl"
        odd.write_bytes(b'{"type":"replay_cursor","cursor":"nonsense"}\n')
        with pytest.raises(RecorderError, match="malformed: its session cannot be checked"):
            await Recorder(s.handle, odd).start()
        (tmp_path / "log.jsonl.gz").write_bytes(gzip.compress(recorded))
        with pytest.raises(RecorderError, match="gzip"):
            await Recorder(s.handle, tmp_path / "log.jsonl.gz").start()
        with pytest.raises(RecorderError, match="Directory") as info:
            await Recorder(s.handle, tmp_path).start()
        assert isinstance(info.value.__cause__, OSError)
        with pytest.raises(RecorderError, match="No such file"):
            await Recorder(s.handle, tmp_path / "missing" / "log.jsonl").start()
        source = OutageSource(s.handle)
        source.down = True
        with pytest.raises(LiveReplayStoreFailure, match="unreachable"):
            await Recorder(source, tmp_path / "down.jsonl").start()  # no retry at start
        assert (tmp_path / "down.jsonl").read_bytes() == b""
        async with Recorder(s.handle, path):  # nothing left locked by any of the above
            pass
    loaded(path)


async def test_arguments_of_the_wrong_kind_are_refused_when_built(tmp_path):
    async with await Scenario.create(backend="memory", session_id="chat") as s:
        path = tmp_path / "log.jsonl"
        with pytest.raises(TypeError, match="session_id"):
            Recorder(object(), path)
        with pytest.raises(TypeError, match="path"):
            Recorder(s.handle, 3)
        with pytest.raises(ValueError, match="path"):
            Recorder(s.handle, "")
        with pytest.raises(TypeError, match="cursor"):
            Recorder(s.handle, path, cursor=5)
        for bad in (0, True, "3"):
            with pytest.raises(ValueError, match="protocol_version"):
                Recorder(s.handle, path, protocol_version=bad)
        with pytest.raises(TypeError, match="retry"):
            Recorder(s.handle, path, retry=0.1)
        with pytest.raises(TypeError, match="fsync"):
            Recorder(s.handle, path, fsync=1)


async def test_protocol_version_and_fsync_are_honoured(tmp_path):
    path = tmp_path / "log.jsonl"
    async with await Scenario.create(backend="memory", session_id="chat") as s:
        async with Recorder(s.handle, path, protocol_version=15, fsync=True) as rec:
            await s.handle.run_turn("hello")
            await settled(rec, s.handle)
    log = loaded(path)
    assert {e.to_dict(15)["protocol_version"] for e in log.events} == {15}
    docs = [json.loads(line) for line in path.read_bytes().splitlines()[1:]]
    assert {d["protocol_version"] for d in docs} == {15}


async def test_an_event_the_wire_cannot_carry_is_a_counted_row_and_recording_goes_on(tmp_path):
    path = tmp_path / "log.jsonl"
    async with await Scenario.create(backend="memory", session_id="chat") as s:
        async with Recorder(s.handle, path) as rec:
            delta(s.handle, "fine")
            s.handle.record_turn_activity(TurnActivity.independent(FinalValue(float("nan"))))
            await settled(rec, s.handle)
        assert rec.statistics().unencodable == 1 and rec.statistics().events == 1
        async with Recorder(s.handle, path) as rec2:  # resumes after the unencodable row
            delta(s.handle, "also fine")
            await settled(rec2, s.handle)
        assert rec2.statistics().unencodable == 0
    log = loaded(path)
    assert positions(log) == [1, 3] and log.skipped == {"unencodable": 1}
    row = json.loads(path.read_bytes().splitlines()[2])
    assert row["event_cursor"] == str(SessionCursor.new("chat", 0, 2))
    assert row["event_type"] == "turn_activity" and "out_of_range" in row["reason"]


# --- the tail of a log -------------------------------------------------------------------------------


def event_line(position: int, session_id: str = "s", text: str = "x") -> bytes:
    event = SessionObservationEvent(
        session_id,
        SessionRevision(1),
        SessionCursor.new(session_id, 1, position),
        TurnActivityPayload(TurnActivity.independent(AssistantProseDelta(text))),
    )
    return encode_line(event).rstrip(b"\n")


GAP_ROW = (
    b'{"type":"replay_gap","gap":{"protocol_version":3,"session_id":"s","requested_cursor":'
    b'"lashsc1:1:2:s","latest_cursor":"lashsc1:1:%d:s","latest_revision":1,"reason":"trimmed"},'
    b'"observation":{"protocol_version":3,"session_id":"s","cursor":"lashsc1:1:%d:s",'
    b'"turn_index":1,"usage":{"input_tokens":0,"output_tokens":0,"cache_read_input_tokens":0,'
    b'"cache_write_input_tokens":0,"reasoning_output_tokens":0}}}'
)

LINES = st.one_of(
    st.integers(1, 10**6).map(event_line),
    st.integers(1, 10**6).map(lambda p: b'{"type":"replay_cursor","cursor":"lashsc1:0:%d:s"}' % p),
    st.integers(1, 10**6).map(lambda p: GAP_ROW % (p, p)),
    st.integers(1, 10**6).map(
        lambda p: b'{"type":"lagged","count":3,"resumed_from":"lashsc1:0:%d:s"}' % p
    ),
    st.integers(1, 10**6).map(
        lambda p: b'{"type":"unencodable","event_cursor":"lashsc1:0:%d:s","reason":"r"}' % p
    ),
    st.just(b'{"type":"message","text":"an application row"}'),
    st.just(b""),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
)


def reference_tail(data: bytes, max_line: int) -> tuple:
    """The last resume point read forwards, line by line (the loader's split)."""
    found = None
    offset = 0
    lines = split_lines(data)
    for line in lines:
        if len(line) <= max_line:
            point = _resume_point(line)
            if point is not None:
                found = (point[1], point[0], offset)
        offset += len(line) + 1
    unterminated = bool(data) and not data.endswith(b"\n")
    cut = unterminated and (len(lines[-1]) > max_line or _resume_point(lines[-1]) is None and not _ok(lines[-1]))
    return found, unterminated, cut


def _ok(line: bytes) -> bool:
    from lash_nb.forensics import LogLineError, decode_line

    try:
        decode_line(line)
    except LogLineError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(LINES, max_size=12),
    ending=st.sampled_from([b"\n", b"", b'\n{"type":"obse']),
    block=st.integers(1, 80),
    max_line=st.sampled_from([30, 200, 10**6]),
)
def test_the_backward_tail_scan_agrees_with_a_forward_read(lines, ending, block, max_line):
    data = b"\n".join(lines) + ending if lines else ending.lstrip(b"\n")

    def read(offset: int, length: int) -> bytes:
        return data[offset : offset + length]

    tail = _scan_tail(read, len(data), block=block, max_line=max_line)
    found, unterminated, cut = reference_tail(data, max_line)
    assert isinstance(tail, LogTail) and tail.size == len(data)
    assert (tail.unterminated, tail.cut) == (unterminated, cut)
    if found is None:
        assert (tail.cursor, tail.kind, tail.offset, tail.session_id) == (None, None, None, None)
    else:
        assert (tail.cursor, tail.kind, tail.offset) == found
        assert tail.session_id == "s"


def test_the_tail_of_a_long_log_costs_one_block(tmp_path):
    path = tmp_path / "long.jsonl"
    with open(path, "wb") as f:
        for start in range(1, 20_001, 1000):
            f.write(b"".join(event_line(p) + b"\n" for p in range(start, start + 1000)))
    assert path.stat().st_size > 20 * TAIL_BLOCK
    tail = read_log_tail(path)
    assert tail.cursor == SessionCursor.new("s", 1, 20_000) and tail.kind is LineKind.EVENT
    assert tail.bytes_read <= TAIL_BLOCK + 1 and not tail.unterminated
    with open(path, "ab") as f:
        f.write(b"x" * (3 * TAIL_BLOCK))  # a long cut fragment at the end: still found
    tail = read_log_tail(path)
    assert tail.cursor == SessionCursor.new("s", 1, 20_000) and tail.cut
    assert tail.bytes_read <= 5 * TAIL_BLOCK
    assert read_log_tail(tmp_path / "long.jsonl").session_id == "s"
    with pytest.raises(RecorderError, match="No such file"):
        read_log_tail(tmp_path / "missing.jsonl")


async def test_stop_drains_what_was_appended_before_it(tmp_path) -> None:
    path = tmp_path / "drain.jsonl"
    async with await Scenario.create(backend="memory") as s:
        rec = Recorder(s.handle, path)
        await rec.start()
        for text in "abcdefgh":
            delta(s.handle, text)  # appended synchronously: the recording task has not run yet
        stats = await rec.stop()
        assert stats.events == 8
        log = load_log(path)
        assert list(log.frame.position) == list(range(1, 9))
        assert log.frame.position.iloc[-1] == tail_position(s.handle)
        # drain_s=0 stops at once: what is left is recorded by the next start
        rec2 = Recorder(s.handle, path)
        await rec2.start()
        delta(s.handle, "late")
        await rec2.stop(drain_s=0)
        await rec2.start()
        await rec2.stop()
        assert list(load_log(path).frame.position) == list(range(1, 10))
        with pytest.raises(ValueError, match="drain_s"):
            await rec2.stop(drain_s=-1)
