"""lash_core.http: a handle served as the NDJSON rows of stream.md on a real uvicorn (free
loopback port), followed over real httpx by ``HttpSource`` and ``SessionFollower``."""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import signal
import subprocess
import sys
import threading
from typing import Any, AsyncIterator, Callable

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from lash_core import (
    AgentFrameSwitched,
    AssistantProseDelta,
    Committed,
    InMemoryLiveReplayStore,
    InMemoryLiveReplayStoreConfig,
    LiveReplayGap,
    LiveReplayGapReason,
    LiveReplayStoreFailure,
    MalformedCursorError,
    ObservationRow,
    ObservationSummary,
    ProcessChanged,
    QueueChanged,
    ReplayClosed,
    ReplayCursorRow,
    ReplayGapRow,
    SessionCursor,
    SessionFollower,
    SessionObservation,
    SessionObservationEvent,
    SessionProcessEventKind,
    SessionQueueEventKind,
    SessionRevision,
    StoreSource,
    StreamRowDecoder,
    TurnActivity,
    TurnActivityPayload,
    WrongSessionError,
    encode_stream_row,
)
from lash_core._follower import Reconnected, RetryPolicy
from lash_core._handle import GapResume
from lash_core._replay import LiveReplaySubscription, Replayed, Subscribed
from lash_core.http import (
    KEEPALIVE_HEADER,
    MAX_CURSOR_CHARS,
    STREAM_START_HEADER,
    HttpSource,
    HttpSourceError,
    HttpSubscription,
    ObservationServer,
    UnknownSessionError,
    observation_app,
    serve,
)
from lash_core.servers import free_port
from lash_core.testing import Scenario

ENQUEUED = SessionQueueEventKind.ENQUEUED
WAIT_S = 10.0  # generous deadline for things that happen in milliseconds


async def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)


def append(scenario: Scenario, count: int, tag: str = "b", size: int = 1) -> None:
    """``count`` queue events, batch ids ``{tag}-{i}`` repeated ``size`` times (to make big rows)."""
    for i in range(count):
        scenario.handle.record_queue_changed(ENQUEUED, [f"{tag}-{i}" * size])


def store_events_after(scenario: Scenario, cursor: SessionCursor) -> list[SessionObservationEvent]:
    result = scenario.handle.resume_session_observation(cursor)
    assert isinstance(result, Replayed)
    return list(result.events)


def docs(events: Any) -> list[dict[str, Any]]:
    return [event.to_dict() for event in events]


async def follow_events(follower: SessionFollower, count: int) -> list[Any]:
    """Items from the follower until ``count`` events came (other items kept in order)."""
    items: list[Any] = []
    while sum(isinstance(i, SessionObservationEvent) for i in items) < count:
        items += await asyncio.wait_for(follower.next_items(), WAIT_S)
    return items


def events_of(items: list[Any]) -> list[SessionObservationEvent]:
    return [i for i in items if isinstance(i, SessionObservationEvent)]


async def memory_scenario(**kwargs: Any) -> Scenario:
    return await Scenario.create(backend="memory", **kwargs)


async def read_rows(response: httpx.Response) -> list[Any]:
    decoder = StreamRowDecoder()
    rows: list[Any] = []
    async for chunk in response.aiter_bytes():
        rows += decoder.feed(chunk)
    return rows + decoder.close()


# --- the server, read raw --------------------------------------------------------------------


async def test_follow_0_replays_rows_then_ends_and_without_cursor_starts_at_the_tail():
    s = await memory_scenario()
    start = s.handle.current_session_observation().cursor
    append(s, 3)
    async with await serve(s.handle) as server, httpx.AsyncClient() as client:
        url = server.events_url(s.session_id)
        response = await client.get(url, params={"cursor": str(start), "follow": "0"})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        assert response.headers[STREAM_START_HEADER] == "replay"
        rows = StreamRowDecoder().feed(response.content)
        assert rows[0] == ReplayCursorRow(start)
        assert docs(r.event for r in rows[1:]) == docs(store_events_after(s, start))
        assert all(isinstance(r, ObservationRow) for r in rows[1:]) and len(rows) == 4

        tail = await client.get(url, params={"follow": "false"})
        assert StreamRowDecoder().feed(tail.content) == [
            ReplayCursorRow(s.handle.current_session_observation().cursor)
        ]
        document = (await client.get(server.observation_url(s.session_id))).json()
        assert document == s.handle.current_session_observation().to_dict()
    s.close()


async def test_a_following_stream_replays_then_sends_live_rows_as_they_are_appended():
    s = await memory_scenario()
    start = s.handle.current_session_observation().cursor
    append(s, 2, "old")
    async with await serve(s.handle) as server, httpx.AsyncClient() as client:
        params = {"cursor": str(start)}
        async with client.stream("GET", server.events_url(s.session_id), params=params) as response:
            decoder = StreamRowDecoder()
            chunks = response.aiter_bytes()
            rows: list[Any] = []
            while len(rows) < 3:
                rows += decoder.feed(await chunks.__anext__())
            append(s, 2, "new")  # live: flushed as appended
            while len(rows) < 5:
                rows += decoder.feed(await chunks.__anext__())
        assert rows[0] == ReplayCursorRow(start)
        assert docs(r.event for r in rows[1:]) == docs(store_events_after(s, start))
    s.close()


async def test_a_trimmed_cursor_gets_one_replay_gap_row_then_live_rows_after_the_fresh_cursor():
    s = await memory_scenario(max_events=3)
    start = s.handle.current_session_observation().cursor
    append(s, 6)
    fresh = s.handle.current_session_observation()
    async with await serve(s.handle) as server, httpx.AsyncClient() as client:
        url = server.events_url(s.session_id)
        async with client.stream("GET", url, params={"cursor": str(start)}) as response:
            assert response.headers[STREAM_START_HEADER] == "gap"
            decoder = StreamRowDecoder()
            chunks = response.aiter_bytes()
            rows: list[Any] = []
            while len(rows) < 2:
                rows += decoder.feed(await chunks.__anext__())
            append(s, 1, "live")
            while len(rows) < 3:
                rows += decoder.feed(await chunks.__anext__())
        assert rows[0] == ReplayCursorRow(start)
        gap_row = rows[1]
        assert isinstance(gap_row, ReplayGapRow)
        assert gap_row.gap.reason is LiveReplayGapReason.TRIMMED
        assert gap_row.gap.requested_cursor == start
        assert gap_row.gap.latest_cursor == fresh.cursor == gap_row.observation.cursor
        assert gap_row.observation.read_view.turn_index == fresh.read_view.turn_index
        assert docs([rows[2].event]) == docs(store_events_after(s, fresh.cursor))

        done = await client.get(url, params={"cursor": str(start), "follow": "0"})
        assert [type(r) for r in StreamRowDecoder().feed(done.content)] == [
            ReplayCursorRow,
            ReplayGapRow,
        ]
    s.close()


async def test_errors_are_json_bodies_with_codes_and_never_a_traceback():
    s = await memory_scenario(session_id="chat-1")
    async with await serve(s.handle) as server, httpx.AsyncClient() as client:
        url = server.events_url("chat-1")

        async def error(target: str, **params: str) -> tuple[int, dict[str, Any]]:
            response = await client.get(target, params=params)
            assert "Traceback" not in response.text
            assert response.headers["content-type"] == "application/json"
            return response.status_code, response.json()

        status, body = await error(url, cursor="lashsc1:x:1:chat-1")
        assert status == 400 and body["type"] == "error" and body["code"] == "malformed_cursor"
        assert "invalid session revision" in body["message"]
        status, body = await error(url, cursor="")
        assert (status, body["code"]) == (400, "malformed_cursor")
        status, body = await error(url, cursor="lashsc1:1:1:other")
        assert (status, body["code"]) == (400, "wrong_session")
        assert (body["expected_session_id"], body["actual_session_id"]) == ("chat-1", "other")
        assert "other" in body["message"]
        status, body = await error(url, follow="maybe")
        assert (status, body["code"]) == (400, "bad_request")
        status, body = await error(url, cursor="lashsc1:1:1:" + "x" * MAX_CURSOR_CHARS)
        assert (status, body["code"]) == (414, "cursor_too_long")
        status, body = await error(server.events_url("<b>nobody</b>"))
        assert (status, body["code"], body["session_id"]) == (404, "unknown_session", "<b>nobody</b>")
        status, body = await error(server.url + "/nothing/here")
        assert (status, body["code"]) == (404, "not_found")
        response = await client.post(url)
        assert (response.status_code, response.json()["code"]) == (405, "method_not_allowed")

        s.store.close()  # the store fails: 503, for the stream and for the observation
        status, body = await error(url, cursor=str(SessionCursor.new("chat-1", 0, 0)))
        assert (status, body["code"]) == (503, "store_failure")
    s.close()


async def test_serve_installs_no_signal_handlers_and_restarts_on_the_same_port():
    s = await memory_scenario()
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = await serve(s.handle)
    assert {sig: signal.getsignal(sig) for sig in before} == before
    port = server.port
    with pytest.raises(OSError):  # the port is taken while the server runs
        await serve(s.handle, port=port)
    async with httpx.AsyncClient() as client:
        # a connection the server closes sits in TIME_WAIT on the server's port
        assert (await client.get(server.observation_url(s.session_id))).status_code == 200
        await server.stop()
        assert not server.running
        await server.stop()  # idempotent
        again = await serve(s.handle, port=port)
        assert again.port == port and again.url == f"http://127.0.0.1:{port}"
        assert (await client.get(again.observation_url(s.session_id))).status_code == 200
        await again.stop()
    assert {sig: signal.getsignal(sig) for sig in before} == before
    with pytest.raises(TypeError, match="sources must be"):
        observation_app(42)  # type: ignore[arg-type]
    s.close()


async def test_a_mapping_or_a_callable_serves_many_sessions():
    a = await memory_scenario(session_id="a")
    b = await memory_scenario(session_id="b")
    table = {"a": a.handle}

    async def lookup(session_id: str) -> Any:
        return {"a": a.handle, "b": b.handle}.get(session_id)

    async with httpx.AsyncClient() as client:
        async with await serve(table) as server:
            assert (await client.get(server.observation_url("a"))).status_code == 200
            assert (await client.get(server.observation_url("b"))).status_code == 404
            table["b"] = b.handle  # read at each request
            assert (await client.get(server.observation_url("b"))).json()["session_id"] == "b"
        async with await serve(lookup) as server:
            assert (await client.get(server.observation_url("b"))).json()["session_id"] == "b"
            assert (await client.get(server.observation_url("c"))).status_code == 404
    a.close()
    b.close()


async def test_a_quiet_stream_gets_keepalive_lines_and_odd_query_bytes_are_a_bad_cursor():
    s = await memory_scenario()
    async with await serve(s.handle, keepalive_s=0.02) as server, httpx.AsyncClient() as client:
        url = server.events_url(s.session_id)
        async with client.stream("GET", url) as response:
            assert response.headers[KEEPALIVE_HEADER] == "0.02"
            decoder = StreamRowDecoder()
            rows: list[Any] = []
            async for chunk in response.aiter_bytes():
                rows += decoder.feed(chunk)
                if decoder.keepalives >= 2:
                    break
        assert rows == [ReplayCursorRow(s.handle.current_session_observation().cursor)]
        response = await client.get(url + "?cursor=%FF%FE")  # not UTF-8
        assert (response.status_code, response.json()["code"]) == (400, "malformed_cursor")
        response = await client.get(server.url + "/sessions/%FF/events")
        assert (response.status_code, response.json()["code"]) == (404, "unknown_session")
    with pytest.raises(ValueError, match="keepalive_s"):
        observation_app(s.handle, keepalive_s=0)
    s.close()


# --- HttpSource against our server -----------------------------------------------------------


async def test_http_source_resumes_and_subscribes_like_the_handle():
    s = await memory_scenario()
    start = s.handle.current_session_observation().cursor
    await s.handle.run_turn("hello")
    async with await serve(s.handle) as server:
        async with HttpSource(server.events_url(s.session_id)) as source:
            assert source.session_id == s.session_id
            assert source.observation_url == server.observation_url(s.session_id)
            fresh = await source.current_session_observation()
            assert fresh.to_dict() == s.handle.current_session_observation().to_dict()
            assert fresh.read_view.turn_index == 1

            resumed = await source.resume_session_observation(start)
            assert isinstance(resumed, Replayed)
            assert docs(resumed.events) == docs(store_events_after(s, start))
            assert isinstance(resumed.events[-1].payload, Committed)  # no read view on the wire

            subscribed = await source.subscribe_session_observation(str(start))
            assert isinstance(subscribed, Subscribed)
            async with subscribed.subscription as subscription:
                assert isinstance(subscription, HttpSubscription)
                assert isinstance(subscription, LiveReplaySubscription)
                got: list[SessionObservationEvent] = []
                while len(got) < len(resumed.events):
                    got += await asyncio.wait_for(subscription.next_batch(4), WAIT_S)
                assert docs(got) == docs(resumed.events)
                assert subscription.next_nowait() is None
                assert subscription.next_batch_nowait() == []
                append(s, 1)
                event = await asyncio.wait_for(subscription.next_event(), WAIT_S)
                assert event.to_dict() == store_events_after(s, got[-1].cursor)[0].to_dict()
                assert subscription.cursor == event.cursor
            assert subscription.closed
            with pytest.raises(ReplayClosed):
                subscription.next_nowait()
            with pytest.raises(ReplayClosed):
                await subscription.next_batch()
    s.close()


async def test_a_follower_on_http_follows_live_and_reloads_the_view_after_a_commit():
    s = await memory_scenario()
    async with await serve(s.handle) as server:
        async with HttpSource(server.events_url(s.session_id)) as source:
            follower = SessionFollower(source)  # an async source: started at the first await
            assert (await follower.catch_up()) == Replayed(())
            start = follower.cursor
            await s.handle.run_turn("hello")
            expected = store_events_after(s, start)
            items = await follow_events(follower, len(expected))
            assert docs(items) == docs(expected)
            assert follower.cursor == expected[-1].cursor
            assert follower.read_view is not None and follower.read_view.turn_index == 1
            assert not follower.view_stale and follower.gap_count == 0
            follower.close()
    s.close()


async def test_http_source_answers_a_gap_with_the_fresh_observation():
    s = await memory_scenario(max_events=3)
    start = s.handle.current_session_observation().cursor
    await s.handle.run_turn("hello")
    fresh = s.handle.current_session_observation()
    async with await serve(s.handle) as server:
        async with HttpSource(server.events_url(s.session_id)) as source:
            for result in (
                await source.resume_session_observation(start),
                await source.subscribe_session_observation(start),
            ):
                assert isinstance(result, GapResume)
                assert result.gap.reason is LiveReplayGapReason.TRIMMED
                assert result.gap.latest_cursor == fresh.cursor
                assert result.observation.to_dict() == fresh.to_dict()
            await wait_until(lambda: source.open_streams == 0, "the gap's response is closed")
            await wait_until(lambda: server.open_streams == 0, "the server released it")

            follower = SessionFollower(source, start)
            items = await asyncio.wait_for(follower.next_items(), WAIT_S)
            assert [type(i) for i in items] == [GapResume]
            assert follower.gap_count == 1 and follower.cursor == fresh.cursor
            assert follower.read_view is not None and follower.read_view.turn_index == 1
            append(s, 2)
            assert docs(await follow_events(follower, 2)) == docs(store_events_after(s, fresh.cursor))
            follower.close()
    s.close()


async def test_error_statuses_become_typed_errors():
    s = await memory_scenario(session_id="chat-1")
    async with await serve(s.handle) as server:
        async with HttpSource(server.events_url("chat-1")) as source:
            with pytest.raises(MalformedCursorError):  # refused before any request
                await source.subscribe_session_observation("nope")
            with pytest.raises(WrongSessionError):
                await source.resume_session_observation(SessionCursor.new("other", 0, 0))
        # the service itself reports a cursor of another session (the URL names another one)
        async with HttpSource(server.events_url("chat-1"), session_id="chat-2") as source:
            with pytest.raises(WrongSessionError) as wrong:
                await source.subscribe_session_observation(SessionCursor.new("chat-2", 0, 0))
            assert (wrong.value.expected_session_id, wrong.value.actual_session_id) == (
                "chat-1",
                "chat-2",
            )
        async with HttpSource(server.events_url("nobody")) as source:
            with pytest.raises(UnknownSessionError, match="nobody") as unknown:
                await source.current_session_observation()
            assert (unknown.value.session_id, unknown.value.status) == ("nobody", 404)
            with pytest.raises(UnknownSessionError):
                await source.subscribe_session_observation(SessionCursor.new("nobody", 0, 0))
        async with HttpSource(server.events_url("chat-1")) as source:
            s.store.close()
            with pytest.raises(HttpSourceError) as failed:
                await source.subscribe_session_observation(SessionCursor.new("chat-1", 0, 0))
            assert failed.value.status == 503 and isinstance(failed.value, LiveReplayStoreFailure)
            assert "store" in str(failed.value)
    down = f"http://127.0.0.1:{free_port()}/sessions/chat-1/events"
    async with HttpSource(down, timeout_s=2) as source:
        with pytest.raises(HttpSourceError) as refused:
            await source.current_session_observation()
        assert refused.value.status is None
        assert refused.value.url == down.replace("/events", "/observation")
        with pytest.raises(HttpSourceError):
            await source.subscribe_session_observation(SessionCursor.new("chat-1", 0, 0))
    with pytest.raises(HttpSourceError, match="closed"):
        await source.resume_session_observation(SessionCursor.new("chat-1", 0, 0))
    s.close()


def test_http_source_refuses_urls_it_cannot_follow():
    for url in ("not a url", "ftp://h/sessions/a/events", "http:///sessions/a/events"):
        with pytest.raises(ValueError):
            HttpSource(url)
    with pytest.raises(ValueError, match="session_id="):
        HttpSource("http://127.0.0.1:1/stream")
    assert HttpSource("http://127.0.0.1:1/stream", session_id="x").session_id == "x"
    assert HttpSource("http://127.0.0.1:1/sessions/a%2Fb%20c/events").session_id == "a/b c"
    with pytest.raises(ValueError, match="timeout_s"):
        HttpSource("http://127.0.0.1:1/sessions/a/events", timeout_s=0)


async def test_closing_a_subscription_or_dropping_the_connection_releases_the_server_subscription():
    s = await memory_scenario()
    start = s.handle.current_session_observation().cursor

    def subscribers() -> int:
        return s.store.statistics(s.session_id).subscribers

    async with await serve(s.handle) as server:
        async with HttpSource(server.events_url(s.session_id)) as source:
            first = await source.subscribe_session_observation(start)
            second = await source.subscribe_session_observation(start)
            assert isinstance(first, Subscribed) and isinstance(second, Subscribed)
            await wait_until(lambda: subscribers() == 2, "two server subscriptions")
            assert server.open_streams == 2 and source.open_streams == 2
            first.subscription.close()
            await wait_until(
                lambda: subscribers() == 1 and server.open_streams == 1, "one was released"
            )
            # the second is never closed: closing the source closes its response
        await wait_until(lambda: subscribers() == 0 and server.open_streams == 0, "all released")
        assert source.open_streams == 0

        async with httpx.AsyncClient() as client:  # a raw client that goes away mid-stream
            async with client.stream(
                "GET", server.events_url(s.session_id), params={"cursor": str(start)}
            ) as response:
                await response.aiter_bytes().__anext__()
                assert subscribers() == 1
        await wait_until(lambda: subscribers() == 0 and server.open_streams == 0, "released")
    s.close()


async def test_stop_ends_open_streams_at_once_and_the_subscription_reads_replay_closed(caplog):
    s = await memory_scenario()
    start = s.handle.current_session_observation().cursor
    server = await serve(s.handle)
    async with HttpSource(server.events_url(s.session_id)) as source:
        subscribed = await source.subscribe_session_observation(start)
        assert isinstance(subscribed, Subscribed)
        waiting = asyncio.ensure_future(subscribed.subscription.next_batch())
        await asyncio.sleep(0)
        with caplog.at_level(logging.INFO, logger="uvicorn.error"):
            await server.stop()
        with pytest.raises(ReplayClosed):
            await asyncio.wait_for(waiting, WAIT_S)
        # no stream had to be cancelled by uvicorn's graceful-shutdown timeout
        assert not [r for r in caplog.records if "timeout graceful shutdown" in r.getMessage()]
        assert s.store.statistics(s.session_id).subscribers == 0
    s.close()


# --- follow across a server restart -----------------------------------------------------------


async def test_a_follower_rides_out_a_server_restart_and_catches_up_by_replay():
    s = await memory_scenario()
    server = await serve(s.handle)
    port = server.port
    source = HttpSource(server.events_url(s.session_id), timeout_s=2)
    start = (await source.current_session_observation()).cursor
    follower = SessionFollower(
        source, start, retry=RetryPolicy(initial_delay_s=0.02, max_delay_s=0.1)
    )
    append(s, 3, "before")
    items = await follow_events(follower, 3)
    await server.stop()
    append(s, 3, "while-down")
    reader = asyncio.ensure_future(follow_events(follower, 3))
    await asyncio.sleep(0.3)  # the follower retries against the closed port meanwhile
    assert not reader.done() and not follower.connected
    server = await serve(s.handle, port=port)
    items += await asyncio.wait_for(reader, WAIT_S)
    reconnects = [i for i in items if isinstance(i, Reconnected)]
    assert len(reconnects) == 1 and reconnects[0].attempts >= 2
    assert docs(events_of(items)) == docs(store_events_after(s, start))  # no gap, no duplicate
    assert follower.gap_count == 0 and follower.cursor == s.handle.current_session_observation().cursor
    append(s, 1, "after")
    assert docs(events_of(await follow_events(follower, 1))) == docs(
        store_events_after(s, items[-1].cursor)
    )
    follower.close()
    await source.aclose()
    await server.stop()
    s.close()


async def test_a_follower_gets_a_gap_after_a_restart_when_retention_dropped_what_it_missed():
    s = await memory_scenario(max_events=4)
    server = await serve(s.handle)
    port = server.port
    source = HttpSource(server.events_url(s.session_id), timeout_s=2)
    follower = SessionFollower(
        source,
        (await source.current_session_observation()).cursor,
        retry=RetryPolicy(initial_delay_s=0.02, max_delay_s=0.1),
    )
    append(s, 2, "before")
    await follow_events(follower, 2)
    seen = follower.cursor
    await server.stop()
    await s.handle.run_turn("while the server is down")  # far more than 4 events
    fresh = s.handle.current_session_observation()
    server = await serve(s.handle, port=port)
    items: list[Any] = []
    while not any(isinstance(i, GapResume) for i in items):
        items += await asyncio.wait_for(follower.next_items(), WAIT_S)
    gap = next(i for i in items if isinstance(i, GapResume))
    assert gap.gap.reason is LiveReplayGapReason.TRIMMED and gap.gap.requested_cursor == seen
    assert gap.observation.to_dict() == fresh.to_dict()
    assert follower.gap_count == 1 and follower.cursor == fresh.cursor
    assert follower.read_view is not None and follower.read_view.turn_index == 1
    assert events_of(items) == []
    append(s, 1, "after")
    assert docs(events_of(await follow_events(follower, 1))) == docs(
        store_events_after(s, fresh.cursor)
    )
    follower.close()
    await source.aclose()
    await server.stop()
    s.close()


async def test_without_a_retry_policy_the_follower_reports_the_outage_and_resumes_when_asked():
    s = await memory_scenario()
    server = await serve(s.handle)
    port = server.port
    source = HttpSource(server.events_url(s.session_id), timeout_s=2)
    start = (await source.current_session_observation()).cursor
    follower = SessionFollower(source, start)
    append(s, 1)
    await follow_events(follower, 1)
    await server.stop()
    append(s, 2)
    with pytest.raises(ReplayClosed) as ended:  # the stream ended; resubscribing failed
        await asyncio.wait_for(follower.next_items(), WAIT_S)
    assert isinstance(ended.value.__cause__, HttpSourceError)
    with pytest.raises(HttpSourceError):  # still down
        await asyncio.wait_for(follower.next_items(), WAIT_S)
    server = await serve(s.handle, port=port)
    assert docs(await follow_events(follower, 2)) == docs(store_events_after(s, start)[1:])
    follower.close()
    await source.aclose()
    await server.stop()
    s.close()


# --- a foreign lash service: canned rows, no header, no observation endpoint -------------------

SID = "chat-1"


def cursor_at(position: int) -> SessionCursor:
    return SessionCursor.new(SID, 1, position)


def event_at(position: int) -> SessionObservationEvent:
    return SessionObservationEvent(
        SID, SessionRevision(1), cursor_at(position), QueueChanged(ENQUEUED, (f"b{position}",))
    )


def row(r: Any) -> bytes:
    return encode_stream_row(r)


FRESH = SessionObservation(ObservationSummary(SID, 3), cursor_at(5))


def late_gap_from(position: int) -> ReplayGapRow:
    gap = LiveReplayGap(SID, cursor_at(position), FRESH.cursor, SessionRevision(3), LiveReplayGapReason.TRIMMED)
    return ReplayGapRow(gap, FRESH)


def foreign_service(stop: asyncio.Event) -> Starlette:
    """A lash service of someone else's: no ``Lash-Stream-Start`` header, ``follow`` ignored
    (streams stay open), no observation endpoint, application rows and a malformed line."""

    async def events(request: Request) -> Response:
        raw = request.query_params.get("cursor")
        position = SessionCursor(raw).parse().live_position if raw else None

        async def body() -> AsyncIterator[bytes]:
            if position == 0:  # replay one event, then, later, a gap
                yield row(ReplayCursorRow(cursor_at(0))) + b'{"type":"message","text":"hi"}\n'
                yield b"this is not json\n" + row(ObservationRow(event_at(1)))
                await asyncio.sleep(0.05)
                yield row(late_gap_from(1)) + row(ObservationRow(event_at(6)))
            elif position == 100:  # a gap at once, in the same chunk as replay_cursor
                yield row(ReplayCursorRow(cursor_at(100))) + row(late_gap_from(100))
            else:  # the tail; from the fresh cursor: one event, an application row
                yield row(ReplayCursorRow(cursor_at(5 if position is None else position)))
                if position == 5:
                    yield row(ObservationRow(event_at(6))) + b'{"type":"done"}\n'
            await stop.wait()  # a live stream that never ends by itself

        return StreamingResponse(body(), media_type="application/x-ndjson")

    return Starlette(routes=[Route("/sessions/{session_id}/events", events)])


async def test_a_foreign_stream_passes_over_app_rows_reports_bad_lines_and_keeps_a_late_gap():
    stop = asyncio.Event()
    server = await ObservationServer.start(foreign_service(stop))
    try:
        async with HttpSource(server.events_url(SID), timeout_s=2, resume_window_s=0.2) as source:
            # no observation endpoint: the tail comes from the stream's replay_cursor row
            fresh = await source.current_session_observation()
            assert fresh == SessionObservation(ObservationSummary(SID, 0), cursor_at(5))
            assert source.observation_url is None

            follower = SessionFollower(source, cursor_at(0))
            items = await asyncio.wait_for(follower.next_items(), WAIT_S)
            assert docs(items) == docs([event_at(1)])
            # the late replay_gap ends the subscription; the follower resubscribes, gets the
            # kept gap at once, then follows from the fresh cursor
            items = await asyncio.wait_for(follower.next_items(), WAIT_S)
            assert [type(i) for i in items] == [GapResume]
            assert items[0].gap == late_gap_from(1).gap and follower.gap_count == 1
            assert docs(await follow_events(follower, 1)) == docs([event_at(6)])
            assert follower.cursor == cursor_at(6)
            assert source.skipped_rows == collections.Counter({"message": 1, "done": 1})
            assert source.stream_errors == 1
            bad = source.recent_stream_errors[0]
            assert bad.line == 3 and bad.raw == b"this is not json"
            follower.close()

            # a gap sent with the replay_cursor row is known at once, without a header
            result = await source.subscribe_session_observation(cursor_at(100))
            assert isinstance(result, GapResume) and result.gap.requested_cursor == cursor_at(100)

            # follow=0 is ignored there: resume takes what came within the quiet window
            resumed = await source.resume_session_observation(cursor_at(5))
            assert isinstance(resumed, Replayed) and docs(resumed.events) == docs([event_at(6)])
            await wait_until(lambda: source.open_streams == 0, "every response closed")
    finally:
        stop.set()
        await server.stop()


async def test_a_stream_that_breaks_mid_way_is_replay_closed_with_the_transport_error():
    stop = asyncio.Event()

    async def events(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield row(ReplayCursorRow(cursor_at(0)))
            await stop.wait()
            raise RuntimeError("the service crashed mid-stream")  # uvicorn drops the connection

        return StreamingResponse(body(), media_type="application/x-ndjson")

    server = await ObservationServer.start(
        Starlette(routes=[Route("/sessions/{session_id}/events", events)]), log_level="critical"
    )
    try:
        async with HttpSource(server.events_url(SID), timeout_s=2) as source:
            subscribed = await source.subscribe_session_observation(cursor_at(0))
            assert isinstance(subscribed, Subscribed)
            stop.set()
            with pytest.raises(ReplayClosed) as closed:
                await asyncio.wait_for(subscribed.subscription.next_batch(), WAIT_S)
            assert isinstance(closed.value.__cause__, HttpSourceError)
            assert [e async for e in subscribed.subscription] == []  # iteration just stops
    finally:
        await server.stop()


async def test_a_stream_silent_past_its_announced_keepalives_is_taken_as_broken():
    stop = asyncio.Event()

    async def events(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield row(ReplayCursorRow(cursor_at(0)))
            await stop.wait()  # then silence: no keepalive although one was announced

        headers = {STREAM_START_HEADER: "replay", KEEPALIVE_HEADER: "0.05"}
        return StreamingResponse(body(), media_type="application/x-ndjson", headers=headers)

    server = await ObservationServer.start(
        Starlette(routes=[Route("/sessions/{session_id}/events", events)])
    )
    try:
        async with HttpSource(server.events_url(SID), timeout_s=2) as source:
            subscribed = await source.subscribe_session_observation(cursor_at(0))
            assert isinstance(subscribed, Subscribed)
            with pytest.raises(ReplayClosed) as closed:
                await asyncio.wait_for(subscribed.subscription.next_batch(), WAIT_S)
            assert isinstance(closed.value.__cause__, HttpSourceError)
            assert "sent nothing for 0.15 s" in str(closed.value.__cause__)
    finally:
        stop.set()
        await server.stop()


async def test_statuses_of_a_foreign_service_map_to_typed_errors():
    answers = {
        "bad": (400, {"type": "error", "code": "malformed_cursor", "message": "malformed session cursor: no"}),
        "down": (503, {"type": "error", "code": "overloaded", "message": "try later"}),
        "html": (500, "<html>oops</html>"),
        "teapot": (418, "short and stout"),
    }

    async def events(request: Request) -> Response:
        status, body = answers[request.path_params["session_id"]]
        text = json.dumps(body) if isinstance(body, dict) else body
        return Response(text, status_code=status)

    server = await ObservationServer.start(
        Starlette(routes=[Route("/sessions/{session_id}/events", events)])
    )
    try:
        for sid, expected in (
            ("bad", MalformedCursorError),
            ("down", HttpSourceError),
            ("html", HttpSourceError),
            ("teapot", HttpSourceError),
        ):
            async with HttpSource(server.events_url(sid), observation_url=None) as source:
                with pytest.raises(expected) as raised:
                    await source.subscribe_session_observation(SessionCursor.new(sid, 0, 0))
                if isinstance(raised.value, HttpSourceError):
                    assert raised.value.status == answers[sid][0]
                    assert "<html>" not in str(raised.value) or sid == "html"
        async with HttpSource(server.events_url("down")) as source:
            with pytest.raises(HttpSourceError, match="try later"):
                await source.current_session_observation()
    finally:
        await server.stop()


# --- the rows a server sends decode back to the same events (hypothesis) -----------------------

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_ids = st.lists(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8), max_size=3)
_payloads = st.one_of(
    st.builds(QueueChanged, st.sampled_from(list(SessionQueueEventKind)), _ids),
    st.builds(ProcessChanged, st.sampled_from(list(SessionProcessEventKind)), _ids),
    st.builds(AgentFrameSwitched, _text.filter(bool)),
    st.builds(lambda text: TurnActivityPayload(TurnActivity.independent(AssistantProseDelta(text))), _text),
    st.just(Committed(None)),
)


@pytest.fixture(scope="module")
def threaded_server():
    """A server on its own loop in a thread, serving sessions of one in-memory store."""
    store = InMemoryLiveReplayStore(InMemoryLiveReplayStoreConfig(10_000, 3600.0, 10_000))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(
        serve(lambda session_id: StoreSource(store, session_id)), loop
    ).result(WAIT_S)
    yield server, store
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(WAIT_S)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(WAIT_S)
    loop.close()
    store.close()


_sessions = itertools.count()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(_payloads, max_size=12), revision=st.integers(0, 2**64 - 1))
def test_the_rows_a_server_sends_decode_back_to_the_same_events(threaded_server, payloads, revision):
    server, store = threaded_server
    session_id = f"s-{next(_sessions)}-é"
    appended = [store.append(session_id, revision, payload) for payload in payloads]
    start = SessionCursor.new(session_id, revision, 0)
    with httpx.Client() as client:
        response = client.get(
            server.events_url(session_id), params={"cursor": str(start), "follow": "0"}
        )
    assert response.status_code == 200
    decoder = StreamRowDecoder()
    rows = decoder.feed(response.content) + decoder.close()
    assert decoder.errors == 0 and response.content.count(b"\n") == len(payloads) + 1
    assert rows[0] == ReplayCursorRow(start)
    decoded = [r.event for r in rows[1:]]
    assert [e.to_dict() for e in decoded] == [e.to_dict() for e in appended]
    assert [e.cursor for e in decoded] == [e.cursor for e in appended]


# --- the extra ------------------------------------------------------------------------------------


def test_lash_core_http_names_the_extra_when_a_package_is_missing_and_lash_core_stays_light():
    code = (
        "import sys; sys.modules['uvicorn'] = None\n"
        "try:\n    import lash_core.http\nexcept ImportError as err:\n    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'lash-notebook[http]'" in out.stdout and "uvicorn" in out.stdout
    code = "import sys, lash_core; print(sorted({'starlette', 'uvicorn', 'httpx'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- inside a real Jupyter kernel -----------------------------------------------------------------


@pytest.mark.slow
def test_serve_runs_in_a_kernel_with_top_level_await_and_sigint_still_interrupts_cells():
    from lash_nb import PeerKernel

    with PeerKernel.start() as peer:
        port = int(
            peer.run(
                "import os, signal, time\n"
                "from lash_core.testing import Scenario\n"
                "from lash_core.http import serve\n"
                "scenario = await Scenario.create(backend='memory', session_id='k')\n"
                "handler = signal.getsignal(signal.SIGINT)\n"
                "server = await serve(scenario.handle)\n"
                "assert signal.getsignal(signal.SIGINT) is handler\n"
                "print(server.port)\n"
            )
        )
        url = f"http://127.0.0.1:{port}/sessions/k/observation"
        with httpx.Client() as client:  # the kernel is idle: its loop serves between cells
            assert client.get(url, timeout=WAIT_S).json()["session_id"] == "k"
            out = peer.run(
                "try:\n"
                "    os.kill(os.getpid(), signal.SIGINT)\n"
                "    time.sleep(5)\n"
                "    print('not interrupted')\n"
                "except KeyboardInterrupt:\n"
                "    print('interrupted', server.running)\n"
            )
            assert out.strip() == "interrupted True"
            assert client.get(url, timeout=WAIT_S).status_code == 200
        assert peer.run("await server.stop(); scenario.close(); print(server.running)") == "False\n"
