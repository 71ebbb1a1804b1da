"""The shared SQLite shell (lash_core/stores/_sqlite_db.py): schema creation, refusal of foreign
files, typed errors at the boundary, and two processes opening a new file at once."""

from __future__ import annotations

import multiprocessing
import sqlite3

import pytest

from lash_core import InvalidQueuedWorkError, LiveReplayStoreFailure, QueuedWorkError
from lash_core.stores._sqlite_db import FILE_FORMAT, database_path, open_database, transaction, translate

DDL = ["CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, value TEXT NOT NULL)"]


def test_a_new_file_gets_the_schema_the_format_mark_and_wal(tmp_path):
    path = tmp_path / "store.db"
    connection = open_database(path, "items", 1, DDL, LiveReplayStoreFailure)
    with transaction(connection):
        connection.execute("INSERT INTO items (value) VALUES ('a')")
    assert connection.execute("SELECT value FROM items").fetchall() == [("a",)]
    assert connection.execute("PRAGMA user_version").fetchone() == (FILE_FORMAT,)
    assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert connection.execute("SELECT component, version FROM lash_schema").fetchall() == [("items", 1)]
    connection.close()
    again = open_database(path, "items", 1, DDL, LiveReplayStoreFailure)  # idempotent
    assert again.execute("SELECT count(*) FROM items").fetchone() == (1,)


def test_foreign_files_and_newer_schemas_are_refused_with_the_callers_error(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a database, just words " * 100)
    with pytest.raises(QueuedWorkError, match="SQLite failed to open"):
        open_database(text, "items", 1, DDL, QueuedWorkError)
    other = tmp_path / "other.db"
    raw = sqlite3.connect(other)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(LiveReplayStoreFailure, match="file format 99"):
        open_database(other, "items", 1, DDL, LiveReplayStoreFailure)
    newer = tmp_path / "newer.db"
    open_database(newer, "items", 3, DDL, LiveReplayStoreFailure).close()
    with pytest.raises(LiveReplayStoreFailure, match="schema version 3"):
        open_database(newer, "items", 2, DDL, LiveReplayStoreFailure)


@pytest.mark.parametrize("bad", ["", ":memory:", "file:x?mode=memory", "a\0b.db", 7, None, b"x.db"])
def test_only_file_paths_are_stores_and_others_raise_the_callers_invalid_argument_error(bad):
    with pytest.raises(InvalidQueuedWorkError, match="SQLite store"):
        database_path(bad, InvalidQueuedWorkError)
    with pytest.raises(InvalidQueuedWorkError, match="SQLite store"):
        open_database(bad, "items", 1, DDL, QueuedWorkError, InvalidQueuedWorkError)
    with pytest.raises(LiveReplayStoreFailure, match="SQLite store"):  # no invalid: the error
        open_database(bad, "items", 1, DDL, LiveReplayStoreFailure)


def test_a_path_with_a_lone_surrogate_is_a_file_path(tmp_path):
    path = tmp_path / "caf\udce9.db"  # an undecodable byte, as os.fsdecode gives it
    assert database_path(path, InvalidQueuedWorkError) == str(path)
    open_database(path, "items", 1, DDL, QueuedWorkError).close()


def test_driver_errors_become_the_callers_error_with_the_cause_chained(tmp_path):
    connection = open_database(tmp_path / "s.db", "items", 1, DDL, LiveReplayStoreFailure)
    with pytest.raises(LiveReplayStoreFailure, match="SQLite failed to insert") as info:
        with translate(LiveReplayStoreFailure, "insert"):
            connection.execute("INSERT INTO nowhere VALUES (1)")
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    # a failed transaction leaves nothing behind
    with pytest.raises(sqlite3.IntegrityError):
        with transaction(connection):
            connection.execute("INSERT INTO items (value) VALUES ('kept?')")
            connection.execute("INSERT INTO items (value) VALUES (NULL)")
    assert connection.execute("SELECT count(*) FROM items").fetchone() == (0,)


def _open_and_insert(path: str, index: int) -> None:
    connection = open_database(path, "items", 1, DDL, LiveReplayStoreFailure)
    with transaction(connection):
        connection.execute("INSERT INTO items (value) VALUES (?)", (f"p{index}",))
    connection.close()


def test_processes_opening_a_new_file_at_once_create_it_once(tmp_path):
    path = str(tmp_path / "race.db")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_open_and_insert, args=(path, i)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    connection = open_database(path, "items", 1, DDL, LiveReplayStoreFailure)
    assert sorted(v for (v,) in connection.execute("SELECT value FROM items")) == ["p0", "p1", "p2", "p3"]
    assert connection.execute("SELECT count(*) FROM lash_schema").fetchone() == (1,)
