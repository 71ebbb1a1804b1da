"""python -m lash_core.follow: a second process following a session, as JSON Lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import servers

from lash_core import AssistantProseDelta, Committed, TurnActivity, TurnActivityPayload
from lash_core.stores.sqlite import SqliteLiveReplayStore


def follow(*args: str, timeout: float = 60.0, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lash_core.follow", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )  # fmt: skip


def lines(done: subprocess.CompletedProcess[str]) -> list[dict]:
    return [json.loads(line) for line in done.stdout.splitlines()]


def delta(text: str = "x") -> TurnActivityPayload:
    return TurnActivityPayload(TurnActivity.independent(AssistantProseDelta(text)))


@pytest.mark.parametrize(
    "target", ["127.0.0.1:6390", "redis:/nope", "http://example.com/x", "no-such-file.sqlite3"]
)
def test_a_store_that_is_neither_a_redis_url_nor_a_file_is_refused_and_nothing_is_created(
    tmp_path, target
):
    done = follow(target, "s", "--idle", "1", cwd=str(tmp_path))
    assert done.returncode == 1
    end = lines(done)[-1]
    assert end["kind"] == "end" and end["reason"] == "error"
    assert "lash_core.follow:" in done.stderr and "Traceback" not in done.stderr
    assert os.listdir(tmp_path) == []  # no SQLite file made from a mistyped URL


@pytest.mark.parametrize("option", [["--idle", "-1"], ["--retry-for", "nan"], ["--max-events", "0"]])
def test_bad_options_exit_2(tmp_path, option):
    done = follow(str(tmp_path / "x"), "s", *option)
    assert done.returncode == 2 and "must be" in done.stderr


def test_follows_a_sqlite_file_from_a_cursor_and_stops_after_max_events(tmp_path):
    path = str(tmp_path / "replay.sqlite3")
    store = SqliteLiveReplayStore(path)
    start = store.current_cursor("s", 0)
    for i in range(5):
        store.append("s", 0, delta(str(i)))
    store.append("s", 1, Committed(None))
    done = follow(path, "s", "--cursor", str(start), "--max-events", "6", "--idle", "5")
    store.close()
    assert done.returncode == 0, done.stderr
    items = lines(done)
    assert [i["position"] for i in items if i["kind"] == "event"] == [1, 2, 3, 4, 5, 6]
    assert items[-2]["type"] == "committed"
    assert items[-1] == {
        "kind": "end", "reason": "max_events", "cursor": items[-2]["event"]["cursor"],
        "received": 6, "gaps": 0, "lags": 0,
    }  # fmt: skip


def test_a_cursor_of_another_session_is_a_clean_error(tmp_path):
    path = str(tmp_path / "replay.sqlite3")
    store = SqliteLiveReplayStore(path)
    other = store.current_cursor("other", 0)
    store.close()
    done = follow(path, "s", "--cursor", str(other), "--idle", "1")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert lines(done)[-1]["reason"] == "error"


@pytest.mark.servers
def test_follows_redis_live_and_reports_a_server_that_stays_down(tmp_path):
    server = servers.own_redis()
    try:
        from lash_core.stores.redis import RedisLiveReplayStore

        store = RedisLiveReplayStore.from_url(server.url, namespace="follow-test")
        start = store.current_cursor("s", 0)
        child = subprocess.Popen(
            [sys.executable, "-m", "lash_core.follow", server.url, "s", "--namespace",
             "follow-test", "--cursor", str(start), "--max-events", "3", "--idle", "30"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(0.5)
        for i in range(3):
            store.append("s", 0, delta(str(i)))
        out, err = child.communicate(timeout=60)
        store.close()
        items = [json.loads(line) for line in out.splitlines()]
        assert child.returncode == 0, err
        base = start.parse().live_position  # instance numbering: positions count from a base
        assert [i["position"] - base for i in items if i["kind"] == "event"] == [1, 2, 3]
        server.kill()
        started = time.monotonic()
        done = follow(server.url, "s", "--namespace", "follow-test", "--retry-for", "1")
        assert done.returncode == 1 and time.monotonic() - started < 30
        assert lines(done)[-1]["reason"] == "error" and "Traceback" not in done.stderr
    finally:
        server.stop()
