"""lash_core.http under concurrency, on real sockets: many followers of one session, clients
that vanish or stall mid-request or mid-stream, ``stop()`` with streams open and connections
arriving, a follower across quick restarts, and mixed good and bad requests under load."""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from typing import Any

import httpx
import pytest

from lash_core import (
    ObservationRow,
    ReplayCursorRow,
    SessionCursor,
    SessionFollower,
    SessionObservationEvent,
    StreamRowDecoder,
)
from lash_core._follower import RetryPolicy
from lash_core._handle import GapResume
from lash_core._replay import Replayed
from lash_core.http import HttpSource, ObservationServer, serve
from lash_core.testing import Scenario

from test_http import WAIT_S, append, wait_until  # the shared helpers of the HTTP tests

#: uvicorn's graceful-shutdown timeout is only a backstop: a stop that had to wait for it is the
#: fault these tests look for. They raise it to ``BACKSTOP_S`` so a prompt stop (about 0.1-0.3 s)
#: and one that waited for the backstop stay far apart on a loaded machine too.
BACKSTOP_S = 30.0
PROMPT_S = BACKSTOP_S / 3


@pytest.fixture(autouse=True)
def _long_backstop(monkeypatch: pytest.MonkeyPatch) -> None:
    import lash_core.http

    monkeypatch.setattr(lash_core.http, "GRACEFUL_SHUTDOWN_S", BACKSTOP_S)


def positions_after(scenario: Scenario, cursor: SessionCursor) -> list[str]:
    result = scenario.handle.resume_session_observation(cursor)
    assert isinstance(result, Replayed)
    return [str(event.cursor) for event in result.events]


def subscribers(scenario: Scenario) -> int:
    return scenario.store.statistics(scenario.session_id).subscribers


def request_line(server: ObservationServer, session_id: str, query: str) -> bytes:
    path = server.events_url(session_id).removeprefix(server.url)
    return f"GET {path}?{query} HTTP/1.1\r\nHost: test\r\n\r\n".encode()


def write_paused(server: ObservationServer) -> bool:
    """Some connection of ``server`` has a client that stopped reading (uvicorn's flow control
    paused the writes)."""
    connections = server._server.server_state.connections
    return any(getattr(getattr(c, "flow", None), "write_paused", False) for c in connections)


async def test_stop_ends_a_stream_whose_client_stopped_reading_at_once_without_an_error(caplog):
    # a client that keeps its connection but never reads: the response blocks in a write, so
    # closing its subscription alone does not end it; stop() must not wait for uvicorn's
    # graceful-shutdown timeout and have the response cancelled (an ERROR and a traceback)
    s = await Scenario.create(backend="memory")
    start = s.handle.current_session_observation().cursor
    server = await serve(s.handle)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(request_line(server, s.session_id, f"cursor={start}"))
    await writer.drain()
    await wait_until(lambda: server.open_streams == 1, "the stream is open")
    for _ in range(200):
        if write_paused(server):
            break
        append(s, 200, "fill", size=50)
        await asyncio.sleep(0.01)
    assert write_paused(server)
    with caplog.at_level(logging.INFO):
        started = asyncio.get_running_loop().time()
        await server.stop()
        took = asyncio.get_running_loop().time() - started
    assert took < PROMPT_S  # far under the graceful-shutdown backstop (BACKSTOP_S)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert server.open_streams == 0 and subscribers(s) == 0
    writer.close()
    s.close()


async def read_positions(
    client: httpx.AsyncClient, url: str, start: SessionCursor, count: int
) -> list[str]:
    """The cursors of the first ``count`` observation rows of a following stream from ``start``."""
    got: list[str] = []
    async with client.stream("GET", url, params={"cursor": str(start)}) as response:
        assert response.status_code == 200
        decoder = StreamRowDecoder()
        async for chunk in response.aiter_bytes():
            for row in decoder.feed(chunk):
                if isinstance(row, ObservationRow):
                    got.append(str(row.event.cursor))
                else:
                    assert row == ReplayCursorRow(start)
            if len(got) >= count:
                return got
    return got


@pytest.mark.slow
async def test_many_followers_of_one_session_each_get_every_event_once_in_order():
    s = await Scenario.create(backend="memory")
    start = s.handle.current_session_observation().cursor
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
    async with await serve(s.handle) as server, httpx.AsyncClient(limits=limits) as client:
        url = server.events_url(s.session_id)
        readers = [
            asyncio.ensure_future(read_positions(client, url, start, 200)) for _ in range(150)
        ]
        await wait_until(lambda: server.open_streams == 150, "150 streams are open")
        for i in range(200):
            append(s, 1, f"e{i}")
            if i % 10 == 0:
                await asyncio.sleep(0)
        results = await asyncio.wait_for(asyncio.gather(*readers), WAIT_S * 2)
        expected = positions_after(s, start)
        assert len(expected) == 200 and all(result == expected for result in results)
        await wait_until(
            lambda: server.open_streams == 0 and subscribers(s) == 0, "every stream is released"
        )
    s.close()


async def test_clients_that_vanish_or_stall_are_released_and_others_are_still_served():
    s = await Scenario.create(backend="memory")
    start = s.handle.current_session_observation().cursor
    async with await serve(s.handle) as server:
        request = request_line(server, s.session_id, f"cursor={start}")
        gone = []
        for _ in range(30):  # a full request, then gone without reading a byte
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request)
            gone.append(writer)
        await wait_until(lambda: subscribers(s) == 30, "30 subscriptions")
        for i, writer in enumerate(gone):
            if i % 2:  # half of them reset the connection instead of closing it
                writer.transport.abort()
            else:
                writer.close()
        stalled = []
        for i in range(20):  # half a request line; headers that never end (slowloris)
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request[:12] if i % 2 else request[:-2] + b"X-Slow: 1\r\n")
            stalled.append(writer)
        await wait_until(
            lambda: server.open_streams == 0 and subscribers(s) == 0, "the vanished are released"
        )
        async with httpx.AsyncClient() as client:
            url = server.events_url(s.session_id)
            append(s, 3)
            done = await client.get(url, params={"cursor": str(start), "follow": "0"})
            assert done.status_code == 200 and len(done.content.splitlines()) == 4
            assert (await client.get(server.observation_url(s.session_id))).status_code == 200
        started = asyncio.get_running_loop().time()
        await server.stop()  # the stalled requests do not hold the stop up
        assert asyncio.get_running_loop().time() - started < PROMPT_S
        for writer in stalled:
            writer.close()
    s.close()


async def test_stop_with_open_streams_and_arriving_connections_is_prompt_and_the_port_is_reused(
    caplog,
):
    s = await Scenario.create(backend="memory")
    start = s.handle.current_session_observation().cursor
    server = await serve(s.handle)
    url = server.events_url(s.session_id)
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
    async with httpx.AsyncClient(limits=limits, timeout=5) as client:

        async def follow() -> str:
            try:
                async with client.stream("GET", url, params={"cursor": str(start)}) as response:
                    async for _ in response.aiter_bytes():
                        pass
                return "ended"
            except httpx.HTTPError as err:
                return type(err).__name__

        async def arrive(i: int) -> int | str:
            await asyncio.sleep(i * 0.002)
            try:
                response = await client.get(url, params={"follow": "0"})
            except httpx.HTTPError:  # refused, or dropped by the stopping server
                return "transport"
            return response.status_code

        streams = [asyncio.ensure_future(follow()) for _ in range(50)]
        await wait_until(lambda: server.open_streams == 50, "50 streams are open")
        arriving = [asyncio.ensure_future(arrive(i)) for i in range(100)]
        await asyncio.sleep(0.05)
        with caplog.at_level(logging.INFO):
            started = asyncio.get_running_loop().time()
            await server.stop()
            assert asyncio.get_running_loop().time() - started < PROMPT_S
        assert await asyncio.wait_for(asyncio.gather(*streams), WAIT_S) == ["ended"] * 50
        answers = collections.Counter(await asyncio.wait_for(asyncio.gather(*arriving), WAIT_S))
        assert set(answers) <= {200, 503, "transport"}, answers
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert server.open_streams == 0 and subscribers(s) == 0
    async with await serve(s.handle, port=server.port) as again, httpx.AsyncClient() as client:
        response = await client.get(again.events_url(s.session_id), params={"follow": "0"})
        assert response.status_code == 200
    s.close()


@pytest.mark.slow
@pytest.mark.parametrize("retained", [None, 20])
async def test_a_follower_across_five_quick_restarts_misses_nothing_or_announces_the_gap(retained):
    options: dict[str, Any] = {} if retained is None else {"max_events": retained}
    s = await Scenario.create(backend="memory", **options)
    server = await serve(s.handle)
    port = server.port
    source = HttpSource(server.events_url(s.session_id), timeout_s=2)
    start = (await source.current_session_observation()).cursor
    follower = SessionFollower(
        source, start, retry=RetryPolicy(initial_delay_s=0.01, max_delay_s=0.05)
    )
    items: list[Any] = []
    writing = True

    async def write() -> None:
        while writing:
            append(s, 1, "w")
            await asyncio.sleep(0.002)

    async def read() -> None:
        while True:
            items.extend(await follower.next_items())

    writer, reader = asyncio.ensure_future(write()), asyncio.ensure_future(read())
    for _ in range(5):
        await asyncio.sleep(0.15)
        await server.stop()
        await asyncio.sleep(0.03)
        server = await serve(s.handle, port=port)
    await asyncio.sleep(0.1)
    writing = False
    await writer
    tail = s.handle.current_session_observation().cursor
    await wait_until(lambda: follower.cursor == tail, "the follower caught up")
    reader.cancel()
    at = start.parse().live_position
    for item in items:  # each event follows the one before, or an announced gap from there
        if isinstance(item, GapResume):
            assert item.gap.requested_cursor.parse().live_position == at
            at = item.observation.cursor.parse().live_position
        elif isinstance(item, SessionObservationEvent):
            assert item.cursor.parse().live_position == at + 1
            at += 1
    if retained is None:
        assert not any(isinstance(item, GapResume) for item in items)
        events = [str(i.cursor) for i in items if isinstance(i, SessionObservationEvent)]
        assert events == positions_after(s, start)
    follower.close()
    await source.aclose()
    await server.stop()
    s.close()


@pytest.mark.slow
async def test_observation_and_bad_cursor_requests_interleaved_with_live_streams():
    s = await Scenario.create(backend="memory", session_id="mixed")
    start = s.handle.current_session_observation().cursor
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    bad = {
        "garbage": "malformed_cursor",
        "lashsc1:zz": "malformed_cursor",
        str(SessionCursor.new("other", 0, 1)): "wrong_session",
        "x" * 5000: "cursor_too_long",
    }
    async with await serve(s.handle) as server, httpx.AsyncClient(limits=limits) as client:
        url = server.events_url("mixed")
        readers = [
            asyncio.ensure_future(read_positions(client, url, start, 100)) for _ in range(20)
        ]
        await wait_until(lambda: server.open_streams == 20, "20 streams are open")

        async def noise(k: int) -> list[tuple[int, Any]]:
            answers = []
            for i in range(60):
                if i % 2:
                    response = await client.get(server.observation_url("mixed"))
                    answers.append((response.status_code, response.json().get("code")))
                else:
                    cursor = list(bad)[(i // 2 + k) % len(bad)]
                    response = await client.get(url, params={"cursor": cursor, "follow": "0"})
                    body = response.json()
                    assert body["type"] == "error", body
                    answers.append((response.status_code, body["code"]))
            return answers

        noisy = [asyncio.ensure_future(noise(k)) for k in range(4)]
        for i in range(100):
            append(s, 1, f"m{i}")
            if i % 5 == 0:
                await asyncio.sleep(0.001)
        answers = [a for batch in await asyncio.gather(*noisy) for a in batch]
        results = await asyncio.wait_for(asyncio.gather(*readers), WAIT_S)
        expected = positions_after(s, start)
        assert all(result == expected for result in results)
        assert {a for a in answers if a[0] == 200} == {(200, None)}
        assert {a[1] for a in answers if a[0] != 200} == set(bad.values())
        await wait_until(lambda: server.open_streams == 0, "the streams are released")
    s.close()
