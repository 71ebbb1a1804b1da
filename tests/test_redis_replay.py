"""``RedisLiveReplayStore`` beyond the conformance suite: its key and id layout, trims that Redis
hides, several processes on one session, Redis restarts and outages under a follower, data it did
not write, and one round trip per append. Needs a real ``redis-server`` (``tests/servers.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import warnings
from typing import Any

import pytest
import redis

import servers
from conformance.replay_model import delta, positions, texts
from lash_core import (
    Committed,
    Gap,
    GapResume,
    InMemoryLiveReplayStoreConfig,
    InvalidObservationError,
    LiveReplayGapReason,
    LiveReplayStoreFailure,
    Replayed,
    ReplayClosed,
    SessionCursor,
    SessionFollower,
    SessionObservationEvent,
    StoreSource,
    Subscribed,
    SubscriberLagged,
    UnknownPayload,
    instance_position_base,
)
from lash_core.stores import _redis_replay
from lash_core.stores.redis import RedisLiveReplayStore
from lash_core.testing import FakeClock

pytestmark = pytest.mark.servers

TRIMMED = LiveReplayGapReason.TRIMMED
UNAVAILABLE = LiveReplayGapReason.UNAVAILABLE
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def url() -> str:
    return servers.redis().url


@pytest.fixture
def raw(url):
    client = redis.Redis.from_url(url)
    yield client
    client.close()


@pytest.fixture
def open_store(url, raw):
    """``open_store(n=16, age=120.0, backlog=2048, *, clock=None, server_clock=False, **kw)``:
    a store on a fresh namespace (its keys are deleted at the end), on ``clock`` (a new
    ``FakeClock`` when none is given) or on the server's clock."""
    opened: list[RedisLiveReplayStore] = []

    def open_store(n=16, age=120.0, backlog=2048, *, clock=None, server_clock=False, **kwargs):
        config = InMemoryLiveReplayStoreConfig(n, age, backlog)
        if clock is None and not server_clock:
            clock = FakeClock()
        kwargs.setdefault("namespace", f"lash-t-{uuid.uuid4().hex[:12]}")
        kwargs.setdefault("instance_numbering", False)  # Rust's numbering: positions from 1
        store = RedisLiveReplayStore.from_url(url, config, clock=clock, **kwargs)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()
        keys = list(raw.scan_iter(match=f"{store.namespace}:*"))
        if keys:
            raw.delete(*keys)


def subscribe(store, cursor):
    result = store.subscribe_after_cursor(cursor)
    assert isinstance(result, Subscribed), result
    return result.subscription


def stream_key(store, session_id):
    return store._keys(session_id)[0]


# --- layout ---------------------------------------------------------------------------------------


def test_keys_and_stream_ids_follow_the_documented_layout(open_store, raw):
    s = open_store()
    first = s.append("a:b%c", 0, delta("x"))
    s.append("a:b%c", 4, delta("y"))
    ns = s.namespace
    assert raw.get(f"{ns}:replay-instance:") is None  # appends need no marker (no numbering)
    s.replay_after_cursor(SessionCursor.new("a:b%c", 0, 2))  # reads make it
    assert sorted(raw.scan_iter(match=f"{ns}:*")) == sorted(
        [f"{ns}:replay:a%3Ab%25c".encode(), f"{ns}:replay-tail:a%3Ab%25c".encode(),
         f"{ns}:replay-instance:".encode()]
    )  # fmt: skip
    assert raw.get(f"{ns}:replay-tail:a%3Ab%25c") == b"2"
    entries = raw.xrange(f"{ns}:replay:a%3Ab%25c")
    assert [entry_id for entry_id, _ in entries] == [b"1-0", b"2-0"]
    # the entry holds the event's wire JSON, cursor completed by the script, and its append time
    fields = entries[0][1]
    assert SessionObservationEvent.from_dict(json.loads(fields[b"e"])) == first
    assert float(fields[b"t"]) == 1000.0  # the injected clock
    # XRANGE after a cursor's id is exactly the positions after it
    assert [i for i, _ in raw.xrange(f"{ns}:replay:a%3Ab%25c", "(1-0", "+")] == [b"2-0"]


def test_sessions_of_other_namespaces_and_ids_never_share_keys(open_store):
    prefix = f"lash-t-{uuid.uuid4().hex[:12]}"
    a = open_store(namespace=f"{prefix}:replay")
    b = open_store(namespace=prefix)
    a.append("s", 0, delta("in a"))
    b.append("replay-instance", 0, delta("in b"))  # would collide with a naive key scheme
    b.append("replay:s", 0, delta("in b too"))
    assert texts(a.replay_after_cursor(SessionCursor.new("s", 0, 0)).events) == ["in a"]
    assert a.current_cursor("s", 0) == SessionCursor.new("s", 0, 1)
    assert b.current_cursor("replay:s", 0) == SessionCursor.new("replay:s", 0, 1)


def test_events_read_back_carry_no_read_view_unless_this_object_appended_them(open_store, url):
    s = open_store()
    committed = s.append("s", 0, Committed({"turn_index": 3}))
    assert s.replay_after_cursor(SessionCursor.new("s", 0, 0)).events == (committed,)
    other = open_store(namespace=s.namespace)  # another process, same data
    (read,) = other.replay_after_cursor(SessionCursor.new("s", 0, 0)).events
    assert read.payload == Committed(None) and read.cursor == committed.cursor


def test_the_server_clock_is_the_default(open_store):
    s = open_store(age=0.3, server_clock=True)
    assert abs(s.server_time() - time.time()) < 5
    s.append("s", 0, delta("a"))
    assert texts(s.replay_after_cursor(SessionCursor.new("s", 0, 0)).events) == ["a"]
    time.sleep(0.4)
    assert s.replay_after_cursor(SessionCursor.new("s", 0, 0)) == Gap(TRIMMED)


def test_bad_arguments_are_refused_before_the_server_is_asked(url):
    for kwargs, match in (
        ({"namespace": ""}, "namespace"),
        ({"namespace": "a\udcff"}, "namespace"),
        ({"instance_numbering": 1}, "instance_numbering"),
        ({"clock": 5}, "clock"),
    ):
        with pytest.raises(InvalidObservationError, match=match):
            RedisLiveReplayStore.from_url(url, **kwargs)
    with pytest.raises(InvalidObservationError, match="config"):
        RedisLiveReplayStore.from_url(url, {"max_events_per_session": 3})
    for bad in ("", "http://example.com", 5):
        with pytest.raises(InvalidObservationError):
            RedisLiveReplayStore.from_url(bad)
    with pytest.raises(InvalidObservationError, match="RESP2"):
        RedisLiveReplayStore.from_url(url + "?protocol=3")


# --- trims Redis would hide -----------------------------------------------------------------------


def test_an_xtrim_behind_the_stores_back_is_a_trimmed_gap_never_a_silent_skip(open_store, raw):
    s = open_store(n=16)
    for t in "abcde":
        s.append("s", 0, delta(t))
    raw.xtrim(stream_key(s, "s"), maxlen=2, approximate=False)
    # a bare XRANGE after 0-0 would silently answer 4, 5 as if nothing were missing
    assert [i for i, _ in raw.xrange(stream_key(s, "s"), "(0-0", "+")] == [b"4-0", b"5-0"]
    for p in (0, 1, 2):
        assert s.replay_after_cursor(SessionCursor.new("s", 0, p)) == Gap(TRIMMED)
        assert s.subscribe_after_cursor(SessionCursor.new("s", 0, p)) == Gap(TRIMMED)
    assert texts(s.replay_after_cursor(SessionCursor.new("s", 0, 3)).events) == ["d", "e"]
    assert s.current_cursor("s", 0) == SessionCursor.new("s", 0, 5)


async def test_a_subscriber_whose_next_events_were_trimmed_behind_its_back_is_told_it_lagged(
    open_store, raw
):
    s = open_store(n=16)
    nowait = subscribe(s, s.current_cursor("s", 0))
    waiting = subscribe(s, s.current_cursor("s", 0))
    for t in "abcde":
        s.append("s", 0, delta(t))
    raw.xtrim(stream_key(s, "s"), maxlen=2, approximate=False)
    with pytest.raises(SubscriberLagged) as info:
        nowait.next_batch_nowait()
    assert info.value.count == 3
    assert texts(nowait.next_batch_nowait()) == ["d", "e"]
    with pytest.raises(SubscriberLagged) as info:  # the awaiting read (XREAD) sees it too
        await asyncio.wait_for(waiting.next_batch(), 2)
    assert info.value.count == 3
    assert texts(await asyncio.wait_for(waiting.next_batch(), 2)) == ["d", "e"]
    # the whole stream gone (DEL behind its back): everything up to the tail was missed
    s.append("s", 0, delta("f"))
    raw.delete(stream_key(s, "s"))
    with pytest.raises(SubscriberLagged) as info:
        nowait.next_nowait()
    assert info.value.count == 1
    assert nowait.next_nowait() is None
    s.append("s", 0, delta("g"))  # the tail key survived: positions go on
    assert positions([nowait.next_nowait()]) == [7]


def test_a_hole_or_foreign_data_is_a_typed_failure(open_store, raw):
    s = open_store()
    for t in "abc":
        s.append("s", 0, delta(t))
    raw.xdel(stream_key(s, "s"), "2-0")
    with pytest.raises(LiveReplayStoreFailure, match="did not write"):
        s.replay_after_cursor(SessionCursor.new("s", 0, 0))
    assert texts(s.replay_after_cursor(SessionCursor.new("s", 0, 2)).events) == ["c"]

    s.append("bad-json", 0, delta("x"))
    sub = subscribe(s, SessionCursor.new("bad-json", 0, 1))
    raw.xadd(stream_key(s, "bad-json"), {"e": b"{not json", "t": b"1000"}, id="2-0")
    raw.set(s._keys("bad-json")[1], b"2")
    with pytest.raises(LiveReplayStoreFailure, match="unreadable"):
        s.replay_after_cursor(SessionCursor.new("bad-json", 0, 1))
    with pytest.raises(LiveReplayStoreFailure, match="unreadable"):
        sub.next_nowait()
    with pytest.raises(LiveReplayStoreFailure, match="unreadable"):  # and again: never skipped
        sub.next_batch_nowait()

    raw.set(s._keys("tail")[1], b"garbage")
    with pytest.raises(LiveReplayStoreFailure):
        s.current_cursor("tail", 0)
    raw.set(stream_key(s, "wrongtype"), b"a string, not a stream")
    raw.set(s._keys("wrongtype")[1], b"1")
    with pytest.raises(LiveReplayStoreFailure, match="WRONGTYPE"):
        s.append("wrongtype", 0, delta("x"))
    with pytest.raises(LiveReplayStoreFailure, match="WRONGTYPE"):
        s.replay_after_cursor(SessionCursor.new("wrongtype", 0, 0))
    # an entry with an id this store never writes, beyond what it appended: appends refuse it
    raw.xadd(stream_key(s, "s"), {"e": b"x"}, id="99-5")
    with pytest.raises(LiveReplayStoreFailure, match="ResponseError"):
        s.append("s", 0, delta("d"))
    assert s.current_cursor("s", 0) == SessionCursor.new("s", 0, 3)  # no position used


def test_physical_retention_keeps_the_subscriber_backlog_and_drops_old_entries(open_store, raw):
    clock = FakeClock()
    s = open_store(n=100, age=5.0, backlog=3, clock=clock)
    for i in range(10):
        s.append("s", 0, delta(str(i)))
    clock.advance(6)
    s.trim_session("s")
    assert raw.xlen(stream_key(s, "s")) == 3  # expired, but within the backlog: kept for readers
    assert s.replay_after_cursor(SessionCursor.new("s", 0, 7)) == Gap(TRIMMED)
    assert s.replay_after_cursor(SessionCursor.new("s", 0, 10)) == Replayed(())
    # a tail key lost on its own (evicted) is read back from the stream: positions never reused
    raw.delete(s._keys("s")[1])
    assert s.current_cursor("s", 0) == SessionCursor.new("s", 0, 10)
    assert positions([s.append("s", 0, delta("10"))]) == [11]


# --- what the store refuses -----------------------------------------------------------------------


def test_a_url_whose_database_part_is_not_a_number_is_refused_before_connecting(url):
    host = url.rsplit("/", 1)[0]
    for bad in ("/abc", "/1/2", "/-1", "/1.0", "/%31x", "/0?db=-1"):
        with pytest.raises(InvalidObservationError, match="database"):
            RedisLiveReplayStore.from_url(host + bad)
        with pytest.raises(InvalidObservationError, match="database"):  # nothing is listening
            RedisLiveReplayStore.from_url("redis://127.0.0.1:1" + bad)
    for good in ("", "/", "/0", "/%31", "/0?db=2"):
        RedisLiveReplayStore.from_url(host + good).close()
    with pytest.raises(InvalidObservationError, match="UTF-8"):  # a lone surrogate
        RedisLiveReplayStore.from_url("redis://:p\udc80@127.0.0.1:1/0")


def test_a_payload_utf8_cannot_encode_is_refused_before_anything_is_written(open_store, raw):
    s = open_store()
    s.append("s", 0, delta("a"))
    for payload in (
        delta("\udc80"),
        UnknownPayload("x", {"v": "\udc80"}),
        UnknownPayload("x", {"\udc80": 1}),
    ):
        with pytest.raises(InvalidObservationError, match="wire JSON"):
            s.append("s", 0, payload)
    assert raw.xlen(stream_key(s, "s")) == 1
    assert s.current_cursor("s", 0) == SessionCursor.new("s", 0, 1)  # no position used
    assert positions([s.append("s", 0, delta("b"))]) == [2]


@pytest.mark.parametrize("numbering", [False, True], ids=["plain", "instance-numbering"])
def test_a_tampered_tail_is_a_typed_failure_on_every_path_and_appends_never_proceed(
    open_store, raw, numbering
):
    s = open_store(instance_numbering=numbering)
    for t in "abc":
        tail = s.append("s", 0, delta(t)).live_position
    sub = subscribe(s, SessionCursor.new("s", 0, tail))
    tail_key = s._keys("s")[1]
    bad_tails = [b"garbage", b"", b"007", b"00", b"-5", b"+5", b"1.5", b" 3", b"3\n", b"\xff"]
    bad_tails += [str(1 << 64).encode(), b"9" * 25]
    for bad in bad_tails:
        raw.set(tail_key, bad)
        calls = {
            "append": lambda: s.append("s", 0, delta("x")),
            "current_cursor": lambda: s.current_cursor("s", 0),
            "replay": lambda: s.replay_after_cursor(SessionCursor.new("s", 0, tail - 1)),
            "subscribe": lambda: s.subscribe_after_cursor(SessionCursor.new("s", 0, tail)),
            "subscription read": sub.next_nowait,
        }
        for name, call in calls.items():
            with pytest.raises(LiveReplayStoreFailure, match="tail key") as info:
                call()
            assert repr(tail_key) in str(info.value), (bad, name)
        assert raw.xlen(stream_key(s, "s")) == 3 and raw.get(tail_key) == bad  # nothing written
    raw.set(tail_key, str((1 << 64) - 1).encode())  # the largest tail is one
    assert s.current_cursor("s", 0) == SessionCursor.new("s", 0, (1 << 64) - 1)
    raw.set(tail_key, str(tail).encode())
    assert positions([s.append("s", 0, delta("d"))]) == [tail + 1]
    assert texts([sub.next_nowait()]) == ["d"]


def test_the_position_check_of_script_replies_is_strict():
    assert _redis_replay._position(b"0", "x") == 0
    assert _redis_replay._position(str((1 << 64) - 1).encode(), "x") == (1 << 64) - 1
    for bad in (b"", b"007", b"-1", b"1 ", str(1 << 64).encode(), "5", 5, None):
        with pytest.raises(LiveReplayStoreFailure, match="not a position"):
            _redis_replay._position(bad, "x")


@pytest.fixture
def plain_server():
    server = servers.own_redis(appendonly=False)
    yield server
    server.stop()


def test_a_server_that_may_evict_the_stores_keys_is_refused(plain_server):
    """Eviction under ``allkeys-*`` drops an idle session's stream and tail but keeps the busy
    instance marker: the session would number from the same base again, and an old cursor would
    replay the new events. Such a server is refused when the store is made, and later where data
    loss is looked for."""
    admin = redis.Redis.from_url(plain_server.url)
    try:
        for policy in ("allkeys-lru", "allkeys-lfu", "allkeys-random"):
            admin.config_set("maxmemory-policy", policy)
            with pytest.raises(LiveReplayStoreFailure, match="noeviction or a volatile") as info:
                RedisLiveReplayStore.from_url(plain_server.url, namespace="t")
            assert policy in str(info.value)
        for policy in ("volatile-lru", "volatile-ttl", "noeviction"):
            admin.config_set("maxmemory-policy", policy)
            RedisLiveReplayStore.from_url(plain_server.url, namespace="t").close()
        # a server that refuses INFO is taken as it is
        admin.execute_command(
            "ACL", "SETUSER", "noinfo", "on", "nopass", "~*", "&*", "+@all", "-info"
        )
        admin.config_set("maxmemory-policy", "allkeys-lru")
        limited = plain_server.url.replace("redis://", "redis://noinfo@")
        s = RedisLiveReplayStore.from_url(limited, namespace="t")
        assert positions([s.append("s", 0, delta("a"))])
        s.close()

        # a policy changed later: a cursor above its (evicted) session's tail is checked
        admin.config_set("maxmemory-policy", "noeviction")
        s = RedisLiveReplayStore.from_url(plain_server.url, namespace="ev")
        old = [s.append("s", 0, delta(t)) for t in "ab"]
        sub = subscribe(s, old[-1].cursor)
        admin.config_set("maxmemory-policy", "allkeys-lru")
        admin.delete(*s._keys("s"))  # evicted: the instance marker stays
        # a subscription that finds its data lost ends; its resubscribe is refused
        with pytest.raises(ReplayClosed) as closed:
            sub.next_nowait()
        assert isinstance(closed.value.__cause__, LiveReplayStoreFailure)
        with pytest.raises(LiveReplayStoreFailure, match="noeviction or a volatile"):
            s.subscribe_after_cursor(old[-1].cursor)
        admin.config_set("maxmemory-policy", "noeviction")
        assert s.current_cursor("s", 0) == SessionCursor.new("s", 0, old[0].live_position - 1)
        admin.config_set("maxmemory-policy", "allkeys-lru")
        with pytest.raises(LiveReplayStoreFailure, match="allkeys-lru"):  # a cursor above the tail
            s.replay_after_cursor(old[0].cursor)
        admin.config_set("maxmemory-policy", "volatile-lru")  # fixed: service resumes
        assert s.replay_after_cursor(old[-1].cursor) == Gap(UNAVAILABLE)
        s.close()
    finally:
        admin.close()


async def test_a_subscription_that_reconnects_to_a_server_that_may_evict_ends(plain_server):
    admin = redis.Redis.from_url(plain_server.url)
    try:
        s = RedisLiveReplayStore.from_url(plain_server.url, namespace="t")
        sub = subscribe(s, s.current_cursor("s", 0))
        s.append("s", 0, delta("a"))
        assert texts([await asyncio.wait_for(sub.next_event(), 2)]) == ["a"]
        waiting = asyncio.ensure_future(sub.next_event())
        await asyncio.sleep(0.1)  # its XREAD BLOCK is on the server
        admin.config_set("maxmemory-policy", "allkeys-lfu")
        admin.client_kill_filter(_type="normal")  # every connection but this one
        with pytest.raises(ReplayClosed) as info:
            await asyncio.wait_for(waiting, 5)
        assert "allkeys-lfu" in str(info.value.__cause__)
        with pytest.raises(LiveReplayStoreFailure, match="noeviction or a volatile"):
            s.append("s", 0, delta("b"))  # the synchronous calls check again too
        s.close()
    finally:
        admin.close()


# --- several processes ----------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys
    from lash_core import AssistantProseDelta, TurnActivity, TurnActivityPayload
    from lash_core.stores.redis import RedisLiveReplayStore

    url, namespace, name, count = sys.argv[1:5]
    store = RedisLiveReplayStore.from_url(url, namespace=namespace, instance_numbering=False)
    for i in range(int(count)):
        event = AssistantProseDelta(f"{name}:{i}")
        store.append("shared", 0, TurnActivityPayload(TurnActivity.independent(event)))
    store.close()
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "backlog,pause", [(2048, 0.0), (4, 0.02)], ids=["keeps-up", "falls-behind"]
)
async def test_two_processes_append_while_a_third_follows_one_ordered_sequence(
    open_store, url, backlog, pause
):
    """The follower sees every position once, in order; where it fell more than its backlog
    behind (``falls-behind``: 4 slots, a slow reader) a ``Lagged`` or ``GapResume`` item stands
    in the sequence where positions were skipped. Never a silent skip."""
    s = open_store(n=16, backlog=backlog, server_clock=True)
    follower = SessionFollower(StoreSource(s, "shared"), s.current_cursor("shared", 0))
    per_child = 300
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, url, s.namespace, name, str(per_child)],
                         env=env, cwd=REPO)
        for name in ("A", "B")
    ]  # fmt: skip
    items: list[Any] = []
    try:
        deadline = time.monotonic() + 60
        while follower.cursor.parse().live_position < 2 * per_child:
            assert time.monotonic() < deadline, "the follower stopped receiving"
            try:
                items += await asyncio.wait_for(follower.next_items(), 5)
            except asyncio.TimeoutError:
                if all(c.poll() is not None for c in children):
                    break  # both done and nothing more comes: the checks below say what is missing
            await asyncio.sleep(pause)
    finally:
        for child in children:
            assert child.wait(60) == 0
    explained = True  # a skip is allowed only right after a lag or a gap
    previous = 0
    for item in items:
        if isinstance(item, SessionObservationEvent):
            position = item.cursor.parse().live_position
            assert position > previous and (position == previous + 1 or explained), (
                previous, position
            )
            previous, explained = position, False
        else:
            explained = True
    assert follower.cursor.parse().live_position == 2 * per_child  # followed to the end
    if backlog == 2048:  # keeping up: one gap-free sequence of both processes' appends
        assert [type(i) for i in items] == [SessionObservationEvent] * len(items)
        assert positions(items) == list(range(1, 2 * per_child + 1))
        got = texts(items)
        for name in ("A", "B"):  # each process's appends in its own order, all of them
            mine = [t for t in got if t.startswith(name)]
            assert mine == [f"{name}:{i}" for i in range(per_child)]
    else:
        assert follower.lag_count + follower.gap_count > 0  # it did fall behind, and was told


# --- restarts and outages -------------------------------------------------------------------------


async def _next_items(follower, timeout=10.0):
    return await asyncio.wait_for(follower.next_items(), timeout)


@pytest.mark.slow
async def test_a_redis_restart_with_persistence_under_a_follower_continues_without_a_gap():
    server = servers.own_redis(appendonly=True)
    try:
        s = RedisLiveReplayStore.from_url(server.url, namespace="t", instance_numbering=False)
        follower = SessionFollower(StoreSource(s, "s"), s.current_cursor("s", 0))
        for t in "abc":
            s.append("s", 0, delta(t))
        assert texts(await _next_items(follower)) == ["a", "b", "c"]
        reader = asyncio.create_task(follower.next_items())  # waiting in XREAD BLOCK
        await asyncio.sleep(0.05)
        server.restart()  # the blocked read's connection drops
        s.append("s", 0, delta("after"))  # the sync pool reconnects (and reloads the script)
        items = await asyncio.wait_for(reader, 10)
        assert texts(items) == ["after"] and positions(items) == [4]
        assert follower.gap_count == follower.lag_count == 0
        s.close()
    finally:
        server.stop()


@pytest.mark.slow
async def test_a_redis_that_lost_its_data_gives_a_follower_an_explicit_unavailable_gap():
    server = servers.own_redis(appendonly=False)
    try:
        s = RedisLiveReplayStore.from_url(server.url, namespace="t")  # numbered by default
        start = s.current_cursor("s", 0)
        base = start.parse().live_position
        client = redis.Redis.from_url(server.url)
        marker = client.get("t:replay-instance:")  # b"{base}.{microseconds}", from server TIME
        client.close()
        assert base == int(marker.split(b".")[0]) == instance_position_base((base >> 22) / 1000)
        assert abs((base >> 22) / 1000 - time.time()) < 5
        assert positions([s.append("s", 0, delta("a"))]) == [base + 1]
        assert s.replay_after_cursor(SessionCursor.new("s", 0, 0)) == Gap(UNAVAILABLE)  # rule 0
        follower = SessionFollower(StoreSource(s, "s"), start)
        s.append("s", 0, delta("b"))
        assert texts(await _next_items(follower)) == ["a", "b"]
        old = follower.cursor
        reader = asyncio.create_task(follower.next_items())
        await asyncio.sleep(0.05)
        # no wait: a restart within the same second still gets a larger base (milliseconds)
        server.restart()  # without persistence: everything is gone
        (item,) = await asyncio.wait_for(reader, 10)
        assert isinstance(item, GapResume) and item.gap.reason == UNAVAILABLE
        new_base = follower.cursor.parse().live_position
        assert new_base > base + 2  # the new instance numbers above every old position
        assert s.replay_after_cursor(old) == Gap(UNAVAILABLE)
        assert s.subscribe_after_cursor(start) == Gap(UNAVAILABLE)
        assert positions([s.append("s", 0, delta("c"))]) == [new_base + 1]
        assert texts(await _next_items(follower)) == ["c"]
        s.close()
    finally:
        server.stop()


async def test_a_plain_subscription_ends_explicitly_when_redis_loses_its_data(monkeypatch):
    server = servers.own_redis(appendonly=False)
    try:
        s = RedisLiveReplayStore.from_url(server.url, namespace="t", instance_numbering=False)
        sub = subscribe(s, s.current_cursor("s", 0))
        s.append("s", 0, delta("a"))
        assert texts([await asyncio.wait_for(sub.next_event(), 2)]) == ["a"]
        server.restart()
        s.append("s", 0, delta("new instance"))  # position 1 again: a silent replay would lie
        with pytest.raises(ReplayClosed) as info:
            await asyncio.wait_for(sub.next_event(), 10)
        assert isinstance(info.value.__cause__, LiveReplayStoreFailure)
        assert "lost" in str(info.value.__cause__)
        with pytest.raises(ReplayClosed):
            sub.next_nowait()
        s.close()
    finally:
        server.stop()


async def test_a_server_that_is_down_is_a_prompt_typed_failure_then_service_resumes(monkeypatch):
    monkeypatch.setattr(_redis_replay, "RECONNECT_WINDOW_S", 0.3)
    server = servers.own_redis(appendonly=True)
    try:
        s = RedisLiveReplayStore.from_url(server.url, namespace="t", instance_numbering=False)
        s.append("s", 0, delta("a"))
        sub = subscribe(s, s.current_cursor("s", 0))
        server.kill()
        calls = {
            "append": lambda: s.append("s", 0, delta("x")),
            "replay": lambda: s.replay_after_cursor(SessionCursor.new("s", 0, 0)),
            "subscribe": lambda: s.subscribe_after_cursor(SessionCursor.new("s", 0, 0)),
            "current_cursor": lambda: s.current_cursor("s", 0),
            "trim_session": lambda: s.trim_session("s"),
            "next_nowait": sub.next_nowait,
            "next_batch_nowait": sub.next_batch_nowait,
            "server_time": s.server_time,
        }
        for name, call in calls.items():
            started = time.monotonic()
            with pytest.raises(LiveReplayStoreFailure) as info:
                call()
            assert time.monotonic() - started < 3, name
            assert not isinstance(info.value, redis.RedisError), name
            assert isinstance(info.value.__cause__, redis.ConnectionError), name
        started = time.monotonic()
        with pytest.raises(LiveReplayStoreFailure, match="follow session"):
            await asyncio.wait_for(sub.next_event(), 5)
        assert time.monotonic() - started < 3
        server.restart()  # AOF: the data is back, and so is the service
        assert s.current_cursor("s", 0) == SessionCursor.new("s", 0, 1)
        s.append("s", 0, delta("b"))
        assert texts([await asyncio.wait_for(sub.next_event(), 5)]) == ["b"]
        server.kill()
        s.close()  # closing with the server down neither raises nor hangs
        with pytest.raises(ReplayClosed):
            await asyncio.wait_for(sub.next_event(), 2)
    finally:
        server.stop()


# --- round trips ----------------------------------------------------------------------------------


def _top_level_commands(server_url, action) -> list[list[str]]:
    """The commands clients sent while ``action`` ran (not those scripts ran), via MONITOR."""
    client = redis.Redis.from_url(server_url)
    ender = redis.Redis.from_url(server_url)
    ender.ping()  # connected (and its handshake sent) before the monitor starts
    seen: list[list[str]] = []
    ready = threading.Event()

    def monitor():
        with client.monitor() as m:
            ready.set()
            for command in m.listen():
                words = command["command"].split()
                if words[:2] == ["ECHO", "lash-monitor-end"]:
                    return
                if command.get("client_type") != "lua":
                    seen.append(words)

    thread = threading.Thread(target=monitor)
    thread.start()
    ready.wait(5)
    time.sleep(0.05)
    action()
    ender.echo("lash-monitor-end")
    thread.join(10)
    client.close()
    ender.close()
    return seen


def test_append_replay_and_current_cursor_are_one_round_trip_each():
    server = servers.own_redis(appendonly=False)
    try:
        s = RedisLiveReplayStore.from_url(server.url, namespace="t", instance_numbering=False)
        s.append("s", 0, delta("warm"))  # the server learns the scripts
        s.replay_after_cursor(SessionCursor.new("s", 0, 0))
        s.current_cursor("s", 0)
        seen = _top_level_commands(
            server.url, lambda: [s.append("s", 0, delta(str(i))) for i in range(5)]
        )
        assert [w[0].upper() for w in seen] == ["EVALSHA"] * 5, seen
        seen = _top_level_commands(
            server.url, lambda: s.replay_after_cursor(SessionCursor.new("s", 0, 0))
        )
        assert [w[0].upper() for w in seen] == ["EVALSHA"], seen
        seen = _top_level_commands(server.url, lambda: s.current_cursor("s", 0))
        assert [w[0].upper() for w in seen] == ["EVALSHA"], seen
        s.close()
    finally:
        server.stop()


# --- resources: sockets, clients and tasks --------------------------------------------------------
# Every socket the store opens is closed by ``close()`` (the sync pool, each per-loop client: on its
# loop when that loop can run, without it when it is closed); fetch tasks are cancelled and
# collected (asyncio never logs "Task was destroyed but it is pending!"), also for a subscription
# that is closed or dropped mid-read; a store used from many short event loops stays bounded.


def _sockets_to(port: int) -> int:
    """Sockets this process holds connected to ``127.0.0.1:port`` (Linux ``/proc``)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] != "0":
                    inodes.add(f"socket:[{fields[9]}]")
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}") in inodes
    return count


@pytest.fixture
def leaks(caplog):
    """``leaks()``: after ``gc.collect()``, the ``ResourceWarning``s raised so far and asyncio's
    "Task was destroyed" reports (an empty list when nothing leaked)."""
    if not os.path.isdir("/proc/self/fd") or not os.path.exists("/proc/net/tcp"):
        pytest.skip("counts sockets through Linux /proc")
    caplog.set_level(logging.ERROR, logger="asyncio")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)

        def leaks() -> list[str]:
            gc.collect()
            found = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
            found += [r.getMessage() for r in caplog.records if "destroyed" in r.getMessage()]
            return found

        yield leaks


@pytest.fixture
def own_server():
    server = servers.own_redis(appendonly=True)
    yield server
    server.stop()


def _cancelled_read(sub) -> Any:
    """A read that gives up while its fetch waits in ``XREAD BLOCK`` (the fetch goes on)."""
    return asyncio.wait_for(sub.next_batch(), 0.05)


def test_closing_inside_the_loop_after_a_restart_leaves_no_socket_or_task(own_server, leaks):
    async def main():
        s = RedisLiveReplayStore.from_url(own_server.url, namespace="t", instance_numbering=False)
        sub = subscribe(s, s.current_cursor("a", 0))
        s.append("a", 0, delta("a"))
        assert texts(await sub.next_batch()) == ["a"]
        reader = asyncio.ensure_future(sub.next_batch())
        await asyncio.sleep(0.2)  # waiting in XREAD BLOCK
        own_server.restart()  # its connection drops; the sync pool's too
        s.append("a", 0, delta("b"))
        assert positions(await asyncio.wait_for(reader, 15)) == [2]
        sub.close()
        s.close()

    asyncio.run(main())
    assert leaks() == []
    assert _sockets_to(own_server.port) == 0


def test_closing_with_a_live_follower_on_a_running_loop_collects_every_task(own_server, leaks):
    async def main():  # a kernel's loop: it goes on running after the store closed
        s = RedisLiveReplayStore.from_url(own_server.url, namespace="t", instance_numbering=False)
        follower = SessionFollower(StoreSource(s, "a"), s.current_cursor("a", 0))
        s.append("a", 0, delta("a"))
        assert texts(await asyncio.wait_for(follower.next_items(), 5)) == ["a"]
        reader = asyncio.ensure_future(follower.next_items())
        await asyncio.sleep(0.2)
        own_server.restart()
        await asyncio.sleep(0.2)
        s.close()
        with pytest.raises(ReplayClosed):
            await asyncio.wait_for(reader, 5)
        await asyncio.sleep(0.1)
        assert asyncio.all_tasks() == {asyncio.current_task()}  # fetches cancelled and done
        assert _sockets_to(own_server.port) == 0  # closed on the loop, which still runs

    asyncio.run(main())
    assert leaks() == []


def test_closing_after_the_loop_ended_leaves_nothing_behind(own_server, leaks):
    s = RedisLiveReplayStore.from_url(own_server.url, namespace="t", instance_numbering=False)

    async def main():
        sub = subscribe(s, s.current_cursor("a", 0))
        s.append("a", 0, delta("a"))
        assert texts(await sub.next_batch()) == ["a"]
        with pytest.raises(asyncio.TimeoutError):
            await _cancelled_read(sub)

    asyncio.run(main())  # the subscription is never closed
    s.close()
    assert leaks() == []
    assert _sockets_to(own_server.port) == 0


def test_closing_after_a_loop_closed_without_shutting_down_closes_its_sockets(own_server, leaks):
    s = RedisLiveReplayStore.from_url(own_server.url, namespace="t", instance_numbering=False)

    async def main():
        sub = subscribe(s, s.current_cursor("a", 0))
        s.append("a", 0, delta("a"))
        assert texts(await sub.next_batch()) == ["a"]
        with pytest.raises(asyncio.TimeoutError):
            await _cancelled_read(sub)
        sub.close()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    loop.run_until_complete(asyncio.sleep(0.05))
    loop.close()  # no shutdown_asyncgens(): the client outlives its loop
    assert _sockets_to(own_server.port) > 0
    s.close()
    assert _sockets_to(own_server.port) == 0
    assert leaks() == []


def test_closing_from_another_loop_closes_the_client_of_an_idle_loop(own_server, leaks):
    s = RedisLiveReplayStore.from_url(own_server.url, namespace="t", instance_numbering=False)
    idle = asyncio.new_event_loop()

    async def use():
        sub = subscribe(s, s.current_cursor("a", 0))
        s.append("a", 0, delta("a"))
        assert texts(await sub.next_batch()) == ["a"]
        with pytest.raises(asyncio.TimeoutError):
            await _cancelled_read(sub)

    async def close():
        s.close()
        assert _sockets_to(own_server.port) == 0

    try:
        idle.run_until_complete(use())
        asyncio.run(close())
        assert idle.run_until_complete(asyncio.sleep(0, "runs")) == "runs"  # still usable
    finally:
        idle.run_until_complete(idle.shutdown_asyncgens())
        idle.close()
    assert leaks() == []


def test_closing_from_another_thread_closes_the_client_on_its_running_loop(own_server, leaks):
    s = RedisLiveReplayStore.from_url(own_server.url, namespace="t", instance_numbering=False)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()

    async def use():
        sub = subscribe(s, s.current_cursor("a", 0))
        s.append("a", 0, delta("a"))
        assert texts(await sub.next_batch()) == ["a"]
        return asyncio.ensure_future(sub.next_batch())  # waits in XREAD BLOCK

    try:
        reader = asyncio.run_coroutine_threadsafe(use(), loop).result(5)
        time.sleep(0.1)
        s.close()
        assert _sockets_to(own_server.port) == 0
        with pytest.raises(ReplayClosed):
            asyncio.run_coroutine_threadsafe(asyncio.wait_for(reader, 5), loop).result(5)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    assert leaks() == []


@pytest.mark.parametrize("how", ["closed", "dropped"])
def test_a_subscription_closed_or_dropped_mid_read_leaves_no_task_running(own_server, leaks, how):
    async def main():
        s = RedisLiveReplayStore.from_url(own_server.url, namespace="t", instance_numbering=False)
        sub = subscribe(s, s.current_cursor("a", 0))
        with pytest.raises(asyncio.TimeoutError):
            await _cancelled_read(sub)
        assert len(asyncio.all_tasks()) == 2  # its fetch waits in XREAD BLOCK (BLOCK_MS)
        if how == "closed":
            sub.close()
        else:
            del sub
            gc.collect()
        await asyncio.sleep(0.1)  # well within BLOCK_MS
        assert asyncio.all_tasks() == {asyncio.current_task()}
        again = subscribe(s, s.current_cursor("a", 0))  # the client goes on serving
        s.append("a", 0, delta("b"))
        assert texts(await asyncio.wait_for(again.next_batch(), 5)) == ["b"]
        s.close()

    asyncio.run(main())
    assert leaks() == []
    assert _sockets_to(own_server.port) == 0


def test_synchronous_calls_after_close_leave_no_socket(own_server, leaks):
    s = RedisLiveReplayStore.from_url(own_server.url, namespace="t", instance_numbering=False)
    s.append("a", 0, delta("a"))
    assert _sockets_to(own_server.port) == 1
    s.close()
    assert _sockets_to(own_server.port) == 0
    assert s.server_time() > 0  # allowed after close: its connection does not stay
    assert _sockets_to(own_server.port) == 0
    assert leaks() == []


@pytest.mark.parametrize("shutdown", [True, False], ids=["asyncio.run", "loop.close"])
def test_many_short_event_loops_keep_clients_and_sockets_bounded(own_server, leaks, shutdown):
    s = RedisLiveReplayStore.from_url(own_server.url, namespace="t", instance_numbering=False)

    async def one(i):
        sub = subscribe(s, s.current_cursor("m", 0))
        s.append("m", 0, delta(str(i)))
        assert texts(await asyncio.wait_for(sub.next_batch(), 5)) == [str(i)]
        sub.close()

    def run(i):
        if shutdown:
            asyncio.run(one(i))
        else:  # a runner that closes its loops without shutting them down
            loop = asyncio.new_event_loop()
            loop.run_until_complete(one(i))
            loop.close()

    run(0)
    gc.collect()
    baseline, fds = _sockets_to(own_server.port), len(os.listdir("/proc/self/fd"))
    for i in range(1, 51):
        run(i)
        assert len(s._async_clients) <= 1  # closed loops pruned
    gc.collect()
    assert _sockets_to(own_server.port) <= baseline + 1
    assert len(os.listdir("/proc/self/fd")) <= fds + 2
    s.close()
    assert _sockets_to(own_server.port) == 0
    assert leaks() == []
