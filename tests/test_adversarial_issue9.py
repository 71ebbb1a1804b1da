"""Adversarial inputs (issue 9): each test failed before its fix."""

from __future__ import annotations

import asyncio
import gzip
import os
import threading
import time
from typing import Any

import pytest

from lash_core import LiveReplayStoreFailure, ReplayClosed, SessionCursor, SessionFollower
from lash_core._follower import RetryPolicy
from lash_core.http import HttpSource, HttpSourceError
from lash_core.testing import Scenario
from lash_nb.forensics import LogLoadError, load_log

LINE = (
    b'{"protocol_version":3,"session_id":"s","revision":1,"cursor":"lashsc1:1:1:s",'
    b'"type":"committed"}\n'
)


@pytest.mark.parametrize("exact", [False, True])
def test_a_truncated_gzip_stream_is_one_clear_error_not_a_wrapped_one(exact: bool) -> None:
    whole = gzip.compress(LINE * 50)
    with pytest.raises(LogLoadError) as caught:
        load_log(whole[:-4], exact=exact)
    assert caught.value.reason == "truncated gzip stream: it ends inside a member"
    assert str(caught.value).count("cannot load observation log") == 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
@pytest.mark.parametrize("exact", [False, True])
def test_a_fifo_loads_like_a_file(tmp_path, exact: bool) -> None:
    fifo = tmp_path / "log.jsonl"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(LINE * 3))
    writer.start()
    try:
        log = load_log(fifo, exact=exact)
    finally:
        writer.join(5)
    assert log.frame["line"].tolist() == [1, 2, 3] and log.errors.empty


async def _stalling_error_server(status: bytes) -> tuple[asyncio.base_events.Server, int]:
    """A server that answers ``status`` with a body it never finishes sending."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 100\r\n\r\nnot all")
            await writer.drain()
            await asyncio.sleep(30)
        except (asyncio.CancelledError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("status", [b"500 Oops", b"404 Not Found"])
async def test_an_error_body_that_never_ends_times_out(status: bytes) -> None:
    server, port = await _stalling_error_server(status)
    source = HttpSource(f"http://127.0.0.1:{port}/sessions/s/events", timeout_s=0.3)
    cursor = SessionCursor.new("s", 1, 1)
    try:
        for call in (source.resume_session_observation, source.subscribe_session_observation):
            started = time.monotonic()
            with pytest.raises(HttpSourceError, match="timed out"):
                await asyncio.wait_for(call(cursor), 5)
            assert time.monotonic() - started < 3
    finally:
        await source.aclose()
        server.close()


class _SlowSubscribe:
    """A handle whose first subscribe fails and whose next ones take a while."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.failures = 1
        self.subscriptions: list[Any] = []

    @property
    def session_id(self) -> str:
        return str(self.handle.session_id)

    async def current_session_observation(self) -> Any:
        return self.handle.current_session_observation()

    async def resume_session_observation(self, cursor: Any) -> Any:
        return self.handle.resume_session_observation(cursor)

    async def subscribe_session_observation(self, cursor: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise LiveReplayStoreFailure("down")
        await asyncio.sleep(0.1)
        result = self.handle.subscribe_session_observation(cursor)
        self.subscriptions.append(result.subscription)
        return result


@pytest.mark.parametrize("retry", [True, False])
async def test_closing_the_follower_while_it_subscribes_keeps_no_subscription_open(retry: bool) -> None:
    s = await Scenario.create(backend="memory")
    source = _SlowSubscribe(s.handle)
    if not retry:
        source.failures = 0
    follower = SessionFollower(
        source, retry=RetryPolicy(initial_delay_s=0.01, max_delay_s=0.01) if retry else None
    )
    reading = asyncio.ensure_future(follower.next_items())
    await asyncio.sleep(0.05)
    follower.close()
    with pytest.raises(ReplayClosed):
        await asyncio.wait_for(reading, 5)
    assert source.subscriptions and all(sub.closed for sub in source.subscriptions)
    assert s.store.statistics(s.session_id).subscribers == 0
    s.close()


def test_a_closed_file_object_is_a_load_error(tmp_path) -> None:
    from lash_nb.forensics import LogLoadError, load_log

    path = tmp_path / "log.jsonl"
    path.write_bytes(b"")
    with open(path, "rb") as f:
        pass
    with pytest.raises(LogLoadError, match="closed file"):
        load_log(f)
