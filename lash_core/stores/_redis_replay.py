"""The Redis live replay store: ``LiveReplayStore`` on Redis Streams, shared by processes.

Rules (read these before the code; the protocol docstring in ``lash_core._replay`` is the contract):

* Keys. Under ``namespace`` (``lash`` by default): ``{ns}:replay:{sid}`` is a session's stream,
  ``{ns}:replay-tail:{sid}`` its tail (decimal text: the last position ever assigned) and
  ``{ns}:replay-instance:`` the namespace's instance marker. ``{sid}`` is the session id with
  ``%`` and ``:`` percent-escaped, so it holds no ``:`` and a key names exactly one namespace,
  kind and session (the marker's last segment is empty, which no escaped session id is).
* Stream ids. Position ``p`` is stored at stream id ``p-0``: ids order as positions do,
  ``XRANGE key (p-0 +`` reads exactly the positions after a cursor at ``p``, and the id's first
  part holds any u64. Lua numbers are doubles (exact below 2**53 only, and instance bases are near
  2**62), so the scripts keep positions as decimal text and only increment and compare them.
* Append is one ``EVALSHA`` (one round trip). The script reads the tail, ``XADD``s the event at
  ``tail+1-0`` with fields ``e`` (the event's wire JSON; Python sends it in two halves around the
  position, which only the script knows) and ``t`` (the append time), writes the tail, trims, and
  returns the position. Scripts run atomically: processes appending to one session get distinct,
  contiguous positions. ``XADD`` runs before the tail is written, so an append that fails uses no
  position; the tail never decreases (a missing tail key is read back from the stream's last id,
  and ``XADD`` refuses an id at or below the stream's last one).
* Tails are checked wherever they are read: a stored tail is decimal digits without leading
  zeros (but ``0``) up to ``2**64 - 1``; anything else is data this store did not write, and
  every script refuses it (error ``LASHBADTAIL``, which Python turns into a
  ``LiveReplayStoreFailure`` naming the key) before writing anything. Python checks every
  position a script returns by the same rule.
* Eviction. The store's keys have no TTL, so only an ``allkeys-*`` ``maxmemory-policy``
  (``allkeys-lru``, ``allkeys-lfu``, ``allkeys-random``) can evict them, and it would evict an
  idle session's stream and tail but keep the busy instance marker: the session would number
  from the same base again and an old cursor would replay new events. The store refuses such a
  server (``LiveReplayStoreFailure``; ``noeviction`` or any ``volatile-*`` policy is fine) with
  one ``INFO memory`` read when it is made, and again where data loss is looked for: at the
  first call after a synchronous call lost its connection, when a cursor is above its session's
  tail, when a subscription finds its data lost (its resubscribe checks) and when a
  subscription's read reconnects (it ends, as below). A server that refuses ``INFO`` (ACL, a
  renamed command) is taken as it is; one that is down when the store is made is checked at
  the first call that reaches it.
* Text. Everything sent is UTF-8: session ids, the namespace and the URL are checked as
  arguments (no lone surrogates); a payload whose wire JSON holds a lone surrogate is an
  ``InvalidObservationError`` from ``append`` before anything is sent (no position is used). A
  URL whose database part is not a non-negative integer (``redis://h:6379/abc``, which redis-py
  would read as db 0) is an ``InvalidObservationError`` too.
* Retention is logical, and physical within bounds. Physically each append keeps at least the
  last ``max(max_events_per_session, subscriber_backlog)`` entries (``XADD ... MAXLEN ~``), and
  entries older than ``max_age`` are deleted only outside the last ``subscriber_backlog`` (a live
  subscriber within its backlog still reads them, even with ``max_events_per_session == 0``), at
  every tenth append and on ``trim_session``.
  Replay and subscribe apply the contract's retention when they read: a cursor at ``p < tail``
  replays only when ``tail - p <= max_events_per_session`` and the entry at ``p + 1`` is there and
  not older than ``max_age`` (append times grow with positions, so the rest are younger).
* Hidden trims. After a trimmed id Redis silently answers with whatever comes next. Every read
  here checks that the first entry it got is the position it asked for: a replay that finds
  another one answers ``trimmed``; a subscriber is told ``SubscriberLagged(missed)`` and goes on
  from the first entry held. An ``XTRIM`` behind the store's back is caught the same way; a hole
  inside a range (``XDEL``) or an entry this store did not write is a ``LiveReplayStoreFailure``.
* Instance marker. ``{ns}:replay-instance:`` holds ``{base}.{microseconds}``, written from the
  server's ``TIME`` by the first read (or, with instance numbering, append) that finds it
  missing, with ``base = instance_position_base(server time)`` (milliseconds << 22). A subscription keeps the
  marker it subscribed under and compares it at every read from the server: a missing or
  different marker means that Redis lost the data (restarted without persistence, flushed,
  evicted). The subscription then
  ends: reads give what was buffered, then ``ReplayClosed`` caused by a ``LiveReplayStoreFailure``,
  so a ``SessionFollower`` resubscribes and gets its gap from the rules. With
  ``instance_numbering=True`` every tail is at least ``base`` (rule 0 of the contract): cursors of
  an earlier instance are below it and answer ``unavailable``.
* Time. ``clock=None`` (the default) is the server's ``TIME``, read inside the scripts, so every
  process agrees on ages; an injected clock (seconds) is read in Python and passed along.
* Subscriptions. The replay part comes from the subscribe's read; the live part is read from the
  stream after the last position taken, ``subscriber_backlog`` semantics as the contract says
  (``SubscriberLagged(oldest - n)`` once, then on from ``oldest``). Awaiting reads pipeline ``GET``
  of the marker with ``XREAD BLOCK`` (``BLOCK_MS`` at a time, so that closing and cancelling are
  noticed) on a ``redis.asyncio`` client made per event loop; a read cancelled while it waits
  leaves its fetch running and the next read takes its result; a batch read that waited makes
  one more read that does not wait, to take what was appended meanwhile along. A fetch nobody
  can take any more (its subscription closed or dropped, the store closed) is cancelled.
  ``*_nowait`` reads with nothing buffered do one non-blocking read (the replay script). Appends
  from any process wake waiting readers (Redis wakes ``XREAD BLOCK``); ``close()`` wakes them at
  once.
* Connections. Synchronous methods share one ``redis.Redis`` pool with socket timeouts and no
  automatic retries (an append retried after a lost reply would be stored twice): a server that
  is down is a prompt ``LiveReplayStoreFailure``. A subscription's read that loses its connection
  retries for ``RECONNECT_WINDOW_S``, then checks the marker (above); past that window it raises
  ``LiveReplayStoreFailure`` and the next read tries again. Never a silent hang.
* Sockets and tasks. Each event loop that reads gets its own ``redis.asyncio`` client, closed
  with its loop (the loop's ``shutdown_asyncgens()``, which ``asyncio.run`` calls) and then
  forgotten, so a store used from many short loops holds the clients of live loops only (one of
  a loop closed without that shutdown is dropped, its sockets closed, when the next is made).
  ``close()`` leaves no socket and no task behind: it disconnects the pool, cancels the fetches,
  and closes each client on its loop (at once, then awaited there, when the loop runs or can be
  run; directly when the loop is closed). A synchronous call racing with or after ``close()``
  disconnects again.
* Errors. redis-py errors become ``LiveReplayStoreFailure`` at the seams only: ``_run`` (the
  synchronous calls; ``server_time`` and ``_check_eviction`` too) and ``_fetch`` / ``_apply``
  (awaiting reads); argument errors come first, before the server is asked.
* Events read back are what the wire carries (``Committed(None)``, as the SQLite store gives).
  Events this object appended are kept (the last ``EVENT_CACHE_SIZE``, matched by their stored
  bytes, so a reused position of a Redis that lost its data is never mistaken for them) and
  replayed as the original objects.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import threading
import time
import urllib.parse
import weakref
from typing import Any, AsyncGenerator, Awaitable, Callable, Coroutine

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.retry import Retry

from .._cursor import CURSOR_PREFIX, U64_MAX, SessionCursor, SessionRevision, format_cursor
from .._errors import (
    InvalidObservationError,
    LiveReplayStoreError,
    LiveReplayStoreFailure,
    ReplayClosed,
    SubscriberLagged,
)
from .._events import EventPayload, SessionObservationEvent
from .._gap import LiveReplayGapReason
from .._json import error_message, short_repr
from .._replay import (
    Gap,
    InMemoryLiveReplayStoreConfig,
    Replayed,
    StoreSettings,
    Subscribed,
    SubscriptionIteration,
    _parse,
    _read_size,
    _revision,
    _session_id,
    _wake,
    read_clock,
    store_config,
)
from .._validate import is_utf8_str
from ._sqlite_replay import _decode, _encode

__all__ = [
    "RedisLiveReplayStore",
    "RedisLiveReplaySubscription",
    "DEFAULT_NAMESPACE",
    "EVENT_CACHE_SIZE",
    "RECONNECT_WINDOW_S",
]

#: Key prefix of every key the store writes.
DEFAULT_NAMESPACE = "lash"
#: Events appended by this object kept as objects for replay (as ``SqliteLiveReplayStore``).
EVENT_CACHE_SIZE = 4096
#: Seconds a synchronous call waits on a socket: a stuck server is reported, never waited on.
SOCKET_TIMEOUT_S = 5.0
#: Seconds to open a connection: a host that does not answer fails fast.
CONNECT_TIMEOUT_S = 2.0
#: Milliseconds one ``XREAD BLOCK`` waits: a closed or cancelled subscription is noticed this soon.
BLOCK_MS = 1000
#: Seconds a subscription's read keeps reconnecting after a lost connection before it raises:
#: long enough for a Redis restart or a failover, short enough not to look like a hang.
RECONNECT_WINDOW_S = 10.0
#: Live events a subscription reads per round trip (never more than its backlog).
READ_AHEAD = 1024
#: Events per round trip when a store closes and its subscriptions take what is left.
DRAIN_CAP = 65_536
#: Session keys kept encoded; cleared when full (computing one again is cheap).
KEY_CACHE_SIZE = 65_536
#: Physical bounds fit Redis's signed 64-bit counts; larger settings mean "unbounded" anyway.
_COUNT_LIMIT = 1 << 62

_TRIMMED = LiveReplayGapReason.TRIMMED
_UNAVAILABLE = LiveReplayGapReason.UNAVAILABLE


# --- the scripts ----------------------------------------------------------------------------------
# KEYS[1] stream, KEYS[2] tail, KEYS[3] instance marker (every script names all three).

_PRELUDE = r"""
local function incr(s)
  local i = #s
  while i > 0 do
    local d = string.byte(s, i)
    if d < 57 then
      return string.sub(s, 1, i - 1) .. string.char(d + 1) .. string.rep('0', #s - i)
    end
    i = i - 1
  end
  return '1' .. string.rep('0', #s)
end
local function less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function times(s, m)
  local digits, carry = {}, 0
  for i = #s, 1, -1 do
    local v = (string.byte(s, i) - 48) * m + carry
    digits[#digits + 1] = v % 10
    carry = math.floor(v / 10)
  end
  while carry > 0 do
    digits[#digits + 1] = carry % 10
    carry = math.floor(carry / 10)
  end
  local out = {}
  for i = #digits, 1, -1 do out[#out + 1] = digits[i] end
  local text = string.gsub(table.concat(out), '^0+', '')
  if text == '' then return '0' end
  return text
end
local function clock()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end
local function instance()
  local value = redis.call('GET', KEYS[3])
  if not value then
    local t = redis.call('TIME')
    local ms = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
    value = times(ms, 4194304) .. '.' .. string.format('%06d', tonumber(t[2]))
    redis.call('SET', KEYS[3], value)
  end
  return value
end
local function tail_of(value, numbering)
  local base = '0'
  if numbering then base = string.match(value, '^(%d+)') or '0' end
  local tail = redis.call('GET', KEYS[2])
  if tail then
    if not (tail == '0' or (string.match(tail, '^[1-9][0-9]*$') and
        (#tail < 20 or (#tail == 20 and tail <= '18446744073709551615')))) then
      error({err = 'LASHBADTAIL the tail key holds data the store did not write'})
    end
  else
    tail = '0'
    if redis.call('EXISTS', KEYS[1]) == 1 then
      local info = redis.call('XINFO', 'STREAM', KEYS[1])
      for i = 1, #info - 1, 2 do
        if info[i] == 'last-generated-id' then
          tail = string.match(info[i + 1], '^(%d+)') or '0'
        end
      end
    end
  end
  if less(tail, base) then tail = base end
  return tail, base
end
local function age_trim(now, max_age, backlog, rounds)
  local limit, current = tonumber(max_age), tonumber(now)
  if not limit or not current then return end
  local excess = redis.call('XLEN', KEYS[1]) - backlog
  local count = 1
  while excess > 0 and rounds > 0 do
    local batch = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', math.min(excess, count))
    local cut = 0
    for i = 1, #batch do
      local fields = batch[i][2]
      local stamp = fields[3] == 't' and tonumber(fields[4])
      if not stamp or not (current - stamp > limit) then break end
      cut = i
    end
    if cut == 0 then return end
    local last = string.match(batch[cut][1], '^(%d+)')
    redis.call('XTRIM', KEYS[1], 'MINID', incr(last) .. '-0')
    if cut < #batch then return end
    excess = excess - cut
    rounds = rounds - 1
    count = 64
  end
end
"""

# ARGV: head, rest, now ('' = server time), keep, max_age, backlog, numbering ('1' / '0').
# Returns the position. The marker is only needed (and made) with instance numbering: a
# subscriber made it when it subscribed, and finds it missing after a loss either way. Entries
# too old are looked for at every tenth position only (each look reads the oldest entry).
_APPEND_BODY = r"""
local numbering = ARGV[7] == '1'
local value = false
if numbering then value = instance() end
local tail = tail_of(value, numbering)
local now = ARGV[3]
if now == '' then now = clock() end
local position = incr(tail)
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], position .. '-0',
  'e', ARGV[1] .. position .. ARGV[2], 't', now)
redis.call('SET', KEYS[2], position)
if string.byte(position, -1) == 48 then age_trim(now, ARGV[5], tonumber(ARGV[6]), 1) end
return position
"""

# ARGV: after, count, '1' to read the server clock, numbering ('1' / '0').
# Returns {tail, marker, now | nil[, first id, first stamp, event JSON ...]}: the entries after
# ``after`` up to the tail (none when ``after`` is not below the tail, or below the base).
_READ_BODY = r"""
local value = instance()
local tail, base = tail_of(value, ARGV[4] == '1')
local now = false
if ARGV[3] == '1' then now = clock() end
local reply = {tail, value, now}
local after = ARGV[1]
if not less(after, tail) or less(after, base) then return reply end
local entries = redis.call('XRANGE', KEYS[1], '(' .. after .. '-0', tail .. '-0', 'COUNT', ARGV[2])
if #entries == 0 then return reply end
local fields = entries[1][2]
reply[4] = entries[1][1]
reply[5] = fields[3] == 't' and fields[4]
for i = 1, #entries do
  local f = entries[i][2]
  reply[5 + i] = f[1] == 'e' and f[2]
end
return reply
"""

# ARGV: numbering ('1' / '0'). Returns {tail, marker}.
_TAIL_BODY = r"""
local value = instance()
local tail = tail_of(value, ARGV[1] == '1')
return {tail, value}
"""

# ARGV: now ('' = server time), keep, max_age, backlog. Returns 1 when the stream exists.
_TRIM_BODY = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local now = ARGV[1]
if now == '' then now = clock() end
redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[2])
age_trim(now, ARGV[3], tonumber(ARGV[4]), 64)
return 1
"""


class _Script:
    """A Lua script run by ``EVALSHA``, sent in full (``EVAL``) when the server lacks it."""

    __slots__ = ("source", "sha")

    def __init__(self, body: str) -> None:
        self.source = (_PRELUDE + body).encode()
        self.sha = hashlib.sha1(self.source).hexdigest()


_APPEND = _Script(_APPEND_BODY)
_READ = _Script(_READ_BODY)
_TAIL = _Script(_TAIL_BODY)
_TRIM = _Script(_TRIM_BODY)


# --- the store ------------------------------------------------------------------------------------


class RedisLiveReplayStore(StoreSettings):
    """``LiveReplayStore`` on Redis Streams (see the module rules): several processes append to
    and follow the same sessions; replay survives the store object (and a Redis with persistence).

    ``RedisLiveReplayStore.from_url(url, config=None, *, clock=None, namespace="lash",
    instance_numbering=True)`` (the constructor takes the same arguments). ``config`` is an
    ``InMemoryLiveReplayStoreConfig`` (same bounds, same meaning); ``clock`` reads seconds and
    defaults to the Redis server's clock; ``namespace`` prefixes every key. ``instance_numbering``
    (on by default) numbers positions per Redis *data instance* (the contract's "Instance
    numbering"): a Redis that lost its data (restarted without persistence, flushed)
    starts a new, larger base, so a cursor handed out before answers ``unavailable`` instead of
    replaying other events. ``instance_numbering=False`` gives Rust's numbering (positions from
    1), for a Redis whose persistence you trust.
    Differences from the in-memory store, all allowed by the protocol:

    * events read from Redis carry what the wire carries: ``Committed(None)`` (events appended
      through this object are replayed as the original objects while they are among the last
      ``EVENT_CACHE_SIZE``);
    * subscribers see every process's appends as they happen;
    * sessions are never forgotten (a tail key is ~60 bytes); trimmed entries are deleted;
    * ``current_cursor`` raises ``LiveReplayStoreFailure`` after ``close()``.

    A server whose ``maxmemory-policy`` may evict the store's keys (``allkeys-*``: use
    ``noeviction`` or a ``volatile-*`` policy) is refused, when the store is made and where data
    loss is looked for (see the rules). A server that is down or answers with an error, and data
    in the namespace that this store did not write (a tail that is not a position, say), raise
    ``LiveReplayStoreFailure``; a bad argument raises ``InvalidObservationError``
    before the server is asked. The URL is redis-py's (``redis://``, ``rediss://``, ``unix://``);
    it may set timeouts, but the store speaks RESP2 with bytes replies whatever it says.
    """

    def __init__(
        self,
        url: str,
        config: InMemoryLiveReplayStoreConfig | None = None,
        *,
        clock: Callable[[], float] | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        instance_numbering: bool = True,
    ) -> None:
        config = store_config(config)
        if clock is not None and not callable(clock):
            raise InvalidObservationError(
                f"clock must be a callable returning seconds, not {type(clock).__name__}"
            )
        if not isinstance(url, str) or not url or not is_utf8_str(url):
            raise InvalidObservationError(
                f"url must be a non-empty UTF-8 str, not {short_repr(url)}"
            )
        if not isinstance(namespace, str) or not namespace or not is_utf8_str(namespace):
            raise InvalidObservationError(
                f"namespace must be a non-empty UTF-8 str, not {short_repr(namespace)}"
            )
        if not isinstance(instance_numbering, bool):
            raise InvalidObservationError(
                f"instance_numbering must be a bool, not {type(instance_numbering).__name__}"
            )
        pool = _pool(redis.ConnectionPool, url, SOCKET_TIMEOUT_S, Retry(NoBackoff(), 0))
        self._url = url
        self._namespace = str.__str__(namespace)
        self._numbering = instance_numbering
        self._config = config
        self._server_clock = clock is None
        self._clock = self.server_time if clock is None else clock
        self._client = redis.Redis(connection_pool=pool)
        #: bound once: every call goes through it (redis-py leaves it untyped)
        self._execute: Callable[..., Any] = self._client.execute_command
        self._where = _where(pool.connection_kwargs)
        self._closed = False
        self._shut = False  # the pool was disconnected by ``close()``: calls after it disconnect
        #: guards subscription state and the per-loop clients (never held across a server call)
        self._lock = threading.Lock()
        self._subscriptions: weakref.WeakSet[RedisLiveReplaySubscription] = weakref.WeakSet()
        self._async_clients: dict[asyncio.AbstractEventLoop, _LoopClient] = {}
        self._cache: collections.OrderedDict[tuple[str, int], tuple[bytes, SessionObservationEvent]]
        self._cache = collections.OrderedDict()
        self._cache_lock = threading.Lock()
        self._keys_cache: dict[str, tuple[bytes, bytes]] = {}
        self._instance_key = f"{self._namespace}:replay-instance:".encode()
        self._base_cache: tuple[bytes, int] | None = None
        # script arguments that never change: encoded once
        backlog = config.subscriber_backlog
        self._backlog = min(backlog, _COUNT_LIMIT)
        self._keep_arg = b"%d" % min(max(config.max_events_per_session, backlog), _COUNT_LIMIT)
        self._max_age_arg = repr(config.max_age).encode()
        self._backlog_arg = b"%d" % self._backlog
        self._numbering_arg = b"1" if instance_numbering else b"0"
        self._clock_arg = b"1" if self._server_clock else b"0"
        self._replay_count = min(config.max_events_per_session, _COUNT_LIMIT) + 1
        #: the eviction policy was read and is fine (or cannot be read): see the rules
        self._policy_ok = False
        try:
            self._check_eviction(True)
        except LiveReplayStoreFailure:
            self._disconnect()
            raise

    @classmethod
    def from_url(
        cls,
        url: str,
        config: InMemoryLiveReplayStoreConfig | None = None,
        *,
        clock: Callable[[], float] | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        instance_numbering: bool = True,
    ) -> RedisLiveReplayStore:
        """A store on the Redis at ``url``. One ``INFO memory`` read refuses a server whose
        ``maxmemory-policy`` may evict the store's keys (``LiveReplayStoreFailure``; see the
        module rules); a server that is down is not an error yet (the first call checks)."""
        return cls(
            url, config, clock=clock, namespace=namespace, instance_numbering=instance_numbering
        )

    def __repr__(self) -> str:
        return (
            f"RedisLiveReplayStore({self._where}, namespace={self._namespace!r},"
            f" max_events_per_session={self._config.max_events_per_session},"
            f" max_age={self._config.max_age}, closed={self._closed})"
        )

    @property
    def url(self) -> str:
        return self._url

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def instance_numbering(self) -> bool:
        return self._numbering

    def server_time(self) -> float:
        """The Redis server's clock in seconds (``TIME``): the store's clock when none is given."""
        try:
            seconds, micros = self._execute("TIME")
            return int(seconds) + int(micros) / 1_000_000
        except (RedisError, OSError, ValueError, TypeError) as err:  # UnicodeError too
            raise _failure("read the server clock", err) from err
        finally:
            if self._shut:
                self._disconnect()

    # -- LiveReplayStore ---------------------------------------------------------------------------

    def append(
        self, session_id: str, revision: int, payload: EventPayload
    ) -> SessionObservationEvent:
        session_id = _session_id(session_id)
        revision = _revision(revision)
        if not isinstance(payload, EventPayload):
            raise InvalidObservationError(
                f"payload must be an EventPayload, not {type(payload).__name__}"
            )
        head, rest = _entry_halves(session_id, revision, payload)
        if self._closed:
            raise LiveReplayStoreFailure("the live replay store is closed")
        now = b"" if self._server_clock else repr(read_clock(self._clock))
        digits = self._run(
            _APPEND,
            self._keys(session_id),
            (head, rest, now, self._keep_arg, self._max_age_arg, self._backlog_arg,
             self._numbering_arg),
            "append to the live replay store",
        )  # fmt: skip
        position = _position(digits, "the position it assigned")
        event = SessionObservationEvent(
            session_id, revision, format_cursor(revision, position, session_id), payload
        )
        with self._cache_lock:
            cache = self._cache
            cache[(session_id, position)] = (head + digits + rest, event)
            if len(cache) > EVENT_CACHE_SIZE:
                cache.popitem(last=False)
        return event

    def replay_after_cursor(self, cursor: SessionCursor) -> Replayed | Gap:
        parsed = _parse(cursor)
        _, _, result = self._snapshot(
            parsed.session_id, parsed.live_position, "replay from the live replay store"
        )
        return result if isinstance(result, Gap) else Replayed(tuple(result))

    def subscribe_after_cursor(self, cursor: SessionCursor) -> Subscribed | Gap:
        parsed = _parse(cursor)
        session_id = parsed.session_id
        tail, marker, result = self._snapshot(
            session_id, parsed.live_position, "subscribe to the live replay store"
        )
        if isinstance(result, Gap):
            return result
        subscription = RedisLiveReplaySubscription(
            self, session_id, self._keys(session_id), result, tail + 1, marker
        )
        with self._lock:
            if self._closed:
                raise LiveReplayStoreFailure("the live replay store is closed")
            self._subscriptions.add(subscription)
        return Subscribed(subscription)

    def current_cursor(self, session_id: str, revision: int) -> SessionCursor:
        session_id = _session_id(session_id)
        revision = _revision(revision)
        self._check_open()
        reply = self._run(
            _TAIL, self._keys(session_id), (self._numbering_arg,), "read a session tail"
        )
        return format_cursor(revision, _position(reply[0], "a session tail"), session_id)

    def trim_session(self, session_id: str) -> None:
        session_id = _session_id(session_id)
        self._check_open()
        now = b"" if self._server_clock else repr(read_clock(self._clock))
        self._run(
            _TRIM,
            self._keys(session_id),
            (now, self._keep_arg, self._max_age_arg, self._backlog_arg),
            "trim the live replay store",
        )

    def close(self) -> None:
        """Close the connections; subscriptions first take the events appended before the close
        (one read each), yield them, then end with ``ReplayClosed``. Idempotent. The data stays
        in Redis: a store opened again on the same URL and namespace continues its tails."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subscriptions = [s for s in self._subscriptions if not s._closed]
        waiters = []
        try:
            for subscription in subscriptions:
                subscription._drain()
        finally:
            with self._lock:
                for subscription in subscriptions:
                    subscription._final = True
                    if subscription._waiter is not None:
                        waiters.append(subscription._waiter)
                        subscription._waiter = None
                    subscription._fetch = None  # nobody takes it: its client's close cancels it
                clients, self._async_clients = self._async_clients, {}
            _wake(waiters)
            self._shut = True
            self._disconnect()
            for loop_client in clients.values():
                loop_client.close()

    # -- internals ---------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LiveReplayStoreFailure("the live replay store is closed")

    def _disconnect(self) -> None:
        """Close every connection of the synchronous pool (``Redis.close()`` alone leaves a pool
        it was given open)."""
        with contextlib.suppress(RedisError, OSError):
            self._client.close()
        with contextlib.suppress(RedisError, OSError):
            self._client.connection_pool.disconnect()

    def _keys(self, session_id: str) -> tuple[bytes, bytes]:
        """The session's stream and tail keys (see the rules)."""
        keys = self._keys_cache.get(session_id)
        if keys is None:
            escaped = session_id.replace("%", "%25").replace(":", "%3A")
            namespace = self._namespace
            keys = (
                f"{namespace}:replay:{escaped}".encode(),
                f"{namespace}:replay-tail:{escaped}".encode(),
            )
            if len(self._keys_cache) >= KEY_CACHE_SIZE:
                self._keys_cache.clear()
            self._keys_cache[session_id] = keys
        return keys

    def _run(
        self, script: _Script, keys: tuple[bytes, bytes], args: tuple[Any, ...], action: str
    ) -> Any:
        """Run ``script`` (one round trip; two the first time a server lacks it). The one place
        the synchronous client's errors become ``LiveReplayStoreFailure``. The eviction policy
        is read first when it is not known to be fine (see the rules)."""
        if not self._policy_ok:
            self._check_eviction(False)
        execute = self._execute
        try:
            try:
                return execute(
                    "EVALSHA", script.sha, 3, keys[0], keys[1], self._instance_key, *args
                )
            except NoScriptError:
                return execute(
                    "EVAL", script.source, 3, keys[0], keys[1], self._instance_key, *args
                )
        except (RedisError, OSError, UnicodeError) as err:
            if not isinstance(err, ResponseError):  # maybe another server now: check it again
                self._policy_ok = False
            raise _script_failure(action, err, keys[1]) from err
        finally:
            if self._shut:  # ran across or after ``close()``: its connection must not stay
                self._disconnect()

    def _check_eviction(self, tolerate_down: bool) -> None:
        """One ``INFO memory``: a ``LiveReplayStoreFailure`` when the server's
        ``maxmemory-policy`` may evict the store's keys (see the rules). A server that refuses
        ``INFO`` is taken as it is; one that cannot be reached is a failure too, unless
        ``tolerate_down`` (the store is being made): then the next call checks."""
        try:
            info = self._execute("INFO", "memory")
        except ResponseError:  # INFO refused (an ACL, a renamed command): nothing to go by
            self._policy_ok = True
            return
        except (RedisError, OSError, UnicodeError) as err:
            self._policy_ok = False
            if tolerate_down:
                return
            raise _failure("read the eviction policy", err) from err
        finally:
            if self._shut:
                self._disconnect()
        failure = _evicting(_policy_of(info), self._where)
        self._policy_ok = failure is None
        if failure is not None:
            raise failure

    def _snapshot(
        self, session_id: str, position: int, action: str
    ) -> tuple[int, bytes, Gap | list[SessionObservationEvent]]:
        """One read of the session after ``position``, then the gap rules with retention applied:
        the tail, the instance marker, and a gap or the events after ``position``."""
        self._check_open()
        now = None if self._server_clock else read_clock(self._clock)
        reply = self._run(
            _READ,
            self._keys(session_id),
            (position, self._replay_count, self._clock_arg, self._numbering_arg),
            action,
        )
        tail = _position(reply[0], "a session tail")
        marker = reply[1]
        if position > tail:  # a cursor above the tail: maybe the session's data was lost
            self._check_eviction(False)
            return tail, marker, Gap(_UNAVAILABLE)
        if position < self._base(marker):
            return tail, marker, Gap(_UNAVAILABLE)
        if position == tail:
            return tail, marker, []
        if tail - position > self._config.max_events_per_session or len(reply) < 6:
            return tail, marker, Gap(_TRIMMED)
        if reply[3] != _stream_id(position + 1):  # dropped, maybe behind our back: Redis went on
            return tail, marker, Gap(_TRIMMED)
        if now is None:
            now = _seconds(reply[2], "the server clock")
        stamp = _seconds(reply[4], f"the append time of event {position + 1}")
        if now - stamp > self._config.max_age:
            return tail, marker, Gap(_TRIMMED)
        raws = reply[5:]
        if len(raws) != tail - position:
            raise _foreign(session_id, f"positions {position + 1}..{tail} are not all there")
        return tail, marker, self._events(session_id, position + 1, raws)

    def _events(
        self, session_id: str, first: int, raws: list[Any]
    ) -> list[SessionObservationEvent]:
        """The stored events at positions ``first, first + 1, ...``: cached objects when the
        stored bytes are the ones this object wrote, else decoded (and checked)."""
        cache = self._cache
        events = []
        position = first
        for raw in raws:
            hit = cache.get((session_id, position))
            if hit is not None and hit[0] == raw:
                events.append(hit[1])
            else:
                events.append(_read_event(raw, session_id, position))
            position += 1
        return events

    def _base(self, marker: Any) -> int:
        """The instance base of ``marker`` with instance numbering, else 0."""
        if not self._numbering:
            return 0
        cached = self._base_cache
        if cached is not None and cached[0] == marker:
            return cached[1]
        digits = marker.partition(b".")[0] if isinstance(marker, bytes) else b""
        if not digits.isdigit():
            raise LiveReplayStoreFailure(
                f"the instance marker {self._instance_key!r} holds {short_repr(marker)},"
                " not a lash instance marker"
            )
        base = int(digits)
        self._base_cache = (marker, base)
        return base

    def _loop_client(self, loop: asyncio.AbstractEventLoop) -> _LoopClient:
        """The asyncio client of ``loop``, the running loop, made on first use (``_lock`` held).
        A client leaves when its loop shuts down (``_forget``); clients of loops closed without
        shutting down are dropped here, their sockets closed without the loop."""
        loop_client = self._async_clients.get(loop)
        if loop_client is None:
            for old in [old for old in self._async_clients if old.is_closed()]:
                self._async_clients.pop(old).close_sockets()
            pool = _pool(
                redis.asyncio.ConnectionPool,
                self._url,
                BLOCK_MS / 1000 + SOCKET_TIMEOUT_S,
                AsyncRetry(NoBackoff(), 0),
            )
            forget = functools.partial(_forget, weakref.ref(self), loop)
            loop_client = _LoopClient(loop, redis.asyncio.Redis(connection_pool=pool), forget)
            self._async_clients[loop] = loop_client
        return loop_client


# --- subscriptions --------------------------------------------------------------------------------


class _Lag:
    """A lag found by a read, queued in order with the events it read."""

    __slots__ = ("count",)

    def __init__(self, count: int) -> None:
        self.count = count


class _Fetch:
    """A subscription's read from the server in flight on ``loop``: the positions after ``after``.

    A fetch nobody can take any more is cancelled (``cancel``); redis-py then disconnects the
    connection it was using (its reply would be pending), and a connection it was opening is
    closed by asyncio or left in the pool, which the client's close disconnects."""

    __slots__ = ("loop", "after", "task")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, after: int, task: asyncio.Task[Any]
    ) -> None:
        self.loop = loop
        self.after = after
        self.task = task

    def cancel(self) -> None:
        """Cancel the fetch, from any thread (a running loop of another thread cancels it)."""
        task, loop = self.task, self.loop
        if task.done() or loop.is_closed():
            return
        if loop.is_running() and _running_loop() is not loop:
            with contextlib.suppress(RuntimeError):  # closed meanwhile: nothing runs it now
                loop.call_soon_threadsafe(task.cancel)
        else:
            task.cancel()


_STOP = object()  # a soft read ran into a lag or an end: end the batch, the next read raises it
_IDLE, _ENTRIES, _POLL, _ERROR, _EVICTS = "idle", "entries", "poll", "error", "evicts"
_Item = SessionObservationEvent | _Lag


class RedisLiveReplaySubscription(SubscriptionIteration):
    """``LiveReplaySubscription`` of ``RedisLiveReplayStore``: the replay part read at subscribe
    time, then the session's stream after the last position taken (see the module rules).
    Errors: ``SubscriberLagged``, ``ReplayClosed`` (caused by a ``LiveReplayStoreFailure`` when
    Redis lost the session's data), ``InvalidObservationError`` for a bad ``max_events``, and
    ``LiveReplayStoreFailure`` when the server cannot be reached (for ``RECONNECT_WINDOW_S`` on an
    awaiting read) or holds data this store did not write; after such a failure the next read
    tries again."""

    __slots__ = (
        "_store", "_session_id", "_keys", "_marker", "_replay", "_buffer", "_next", "_closed",
        "_ended", "_final", "_fetch", "_waiter", "__weakref__",
    )  # fmt: skip

    def __init__(
        self,
        store: RedisLiveReplayStore,
        session_id: str,
        keys: tuple[bytes, bytes],
        replay: list[SessionObservationEvent],
        next_position: int,
        marker: bytes,
    ) -> None:
        self._store = store
        self._session_id = session_id
        self._keys = keys
        self._marker = marker  # the instance marker it subscribed under
        self._replay: collections.deque[SessionObservationEvent] = collections.deque(replay)
        self._buffer: collections.deque[_Item] = collections.deque()  # read, not yet taken
        self._next = next_position  # position after the last one read from the server
        self._closed = False
        self._ended: LiveReplayStoreError | None = None  # why the stream ended (data lost)
        self._final = False  # the store closed and this took what was left
        self._fetch: _Fetch | None = None
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    def __repr__(self) -> str:
        return (
            f"<RedisLiveReplaySubscription session={self._session_id!r}"
            f" pending_replay={len(self._replay)} next_position={self._next}"
            f" closed={self._closed}>"
        )

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def closed(self) -> bool:
        return self._closed

    # -- reads -------------------------------------------------------------------------------------

    def next_nowait(self) -> SessionObservationEvent | None:
        with self._store._lock:
            item = self._take(False)
        if item is None and self._poll(READ_AHEAD):
            with self._store._lock:
                item = self._take(False)
        return item  # type: ignore[no-any-return]

    def next_batch_nowait(self, max_events: int = 256) -> list[SessionObservationEvent]:
        if type(max_events) is not int or max_events < 1:
            max_events = _read_size(max_events)
        with self._store._lock:
            batch = self._take_batch(max_events)
        if not batch and self._poll(min(max_events, DRAIN_CAP)):
            with self._store._lock:
                batch = self._take_batch(max_events)
        return batch

    async def next_event(self) -> SessionObservationEvent:
        lock = self._store._lock
        while True:
            with lock:
                item = self._take(False)
            if item is not None:
                return item  # type: ignore[no-any-return]
            await self._fill()

    async def next_batch(self, max_events: int = 256) -> list[SessionObservationEvent]:
        if type(max_events) is not int or max_events < 1:
            max_events = _read_size(max_events)
        lock = self._store._lock
        waited = False
        while True:
            if waited:  # what was appended while this read waited is ready too: take it along
                await self._top_up(max_events)
            with lock:
                batch = self._take_batch(max_events)
            if batch:
                return batch
            await self._fill()
            waited = True

    def close(self) -> None:
        store = self._store
        with store._lock:
            if self._closed:
                return
            self._closed = True
            self._replay.clear()
            self._buffer.clear()
            fetch, self._fetch = self._fetch, None
            waiter, self._waiter = self._waiter, None
            store._subscriptions.discard(self)
        if fetch is not None:
            fetch.cancel()  # nobody takes it
        if waiter is not None:
            _wake([waiter])

    def __del__(self) -> None:
        """Dropped without ``close()``: its fetch is cancelled all the same."""
        fetch = getattr(self, "_fetch", None)
        if fetch is not None:
            with contextlib.suppress(Exception):  # interpreter shutdown, a closed loop
                fetch.cancel()

    # -- internals ---------------------------------------------------------------------------------

    def _take(self, soft: bool) -> Any:
        """(``_lock`` held.) The next event; ``None`` when nothing is read yet; a lag or an end
        raises, or (``soft``) gives ``_STOP`` and consumes nothing."""
        if self._closed:
            if soft:
                return _STOP
            raise ReplayClosed()
        if self._replay:
            return self._replay.popleft()
        buffer = self._buffer
        if buffer:
            item = buffer[0]
            if type(item) is _Lag:
                if soft:
                    return _STOP
                buffer.popleft()
                raise SubscriberLagged(item.count)
            return buffer.popleft()
        if self._ended is not None:
            if soft:
                return _STOP
            raise ReplayClosed() from self._ended
        if self._final:
            if soft:
                return _STOP
            raise ReplayClosed()
        return None

    def _take_batch(self, limit: int) -> list[SessionObservationEvent]:
        """(``_lock`` held.) Up to ``limit`` events; a batch never spans the replay part and the
        live part, and one that holds an event leaves a lag or an end to the next read."""
        if self._closed:
            raise ReplayClosed()
        replay = self._replay
        if replay:
            return [replay.popleft() for _ in range(min(limit, len(replay)))]
        batch: list[SessionObservationEvent] = []
        while len(batch) < limit:
            item = self._take(bool(batch))
            if item is None or item is _STOP:
                break
            batch.append(item)
        return batch

    def _can_read(self) -> bool:
        """(``_lock`` held.) Whether a read from the server may still add to the buffer."""
        return not (self._closed or self._store._closed or self._ended is not None)

    def _poll(self, count: int) -> bool:
        """One non-blocking read of up to ``count`` positions (sync client); whether it ran."""
        store = self._store
        with store._lock:
            if not self._can_read():
                return False
            after = self._next - 1
        reply = store._run(
            _READ, self._keys, (after, count, "0", store._numbering_arg), "read a subscription"
        )
        self._commit(after, *self._interpret(after, reply))
        return True

    def _drain(self) -> None:
        """(The store is closing.) Read what was appended before the close into the buffer;
        a failure ends the stream with it."""
        store = self._store
        count = min(store._backlog, DRAIN_CAP)
        for _ in range(8):
            with store._lock:
                if self._closed or self._ended is not None:
                    return
                after = self._next - 1
            try:
                reply = store._run(
                    _READ, self._keys, (after, count, "0", store._numbering_arg),
                    "read a subscription",
                )  # fmt: skip
                items, next_position, lost = self._interpret(after, reply)
            except LiveReplayStoreError as err:
                with store._lock:
                    if self._ended is None:
                        self._ended = err
                return
            self._commit(after, items, next_position, lost)
            if not items or lost is not None:
                return

    def _interpret(
        self, after: int, reply: Any
    ) -> tuple[list[_Item], int, LiveReplayStoreError | None]:
        """A read script's answer for the positions after ``after``, by the subscription rules:
        ``(items, next position, why the stream ended or None)``. Pure (no lock needed)."""
        store = self._store
        tail = _position(reply[0], "a session tail")
        n = after + 1
        if reply[1] != self._marker or tail < after:
            return [], n, self._lost()
        if n > tail:
            return [], n, None
        oldest = max(tail - store._backlog + 1, 1)
        if n < oldest:  # more than the backlog behind: the next read starts at the oldest held
            return [_Lag(oldest - n)], oldest, None
        if len(reply) < 6:  # nothing after ``after`` is left: trimmed behind the store's back
            return [_Lag(tail + 1 - n)], tail + 1, None
        first = _entry_position(reply[3], self._session_id)
        if not n <= first <= tail:
            raise _foreign(self._session_id, f"its stream holds entry {reply[3]!r}")
        raws = reply[5:]
        items: list[_Item] = [_Lag(first - n)] if first > n else []
        items += store._events(self._session_id, first, raws)
        return items, first + len(raws), None

    def _entries(self, after: int, marker: Any, entries: list[Any]) -> tuple[
        list[_Item], int, LiveReplayStoreError | None
    ]:
        """``XREAD``'s entries after ``after`` (the first is ``after + 1``): the same triple."""
        if marker != self._marker:
            return [], after + 1, self._lost()
        raws = [fields.get(b"e") for _, fields in entries]
        items: list[_Item] = list(self._store._events(self._session_id, after + 1, raws))
        return items, after + 1 + len(raws), None

    def _commit(
        self, after: int, items: list[_Item], next_position: int, lost: LiveReplayStoreError | None
    ) -> None:
        """Buffer what a read of the positions after ``after`` gave, unless the subscription
        moved on meanwhile (another read got there first), ended or was closed."""
        with self._store._lock:
            if self._closed or self._final or self._ended is not None or after != self._next - 1:
                return
            if lost is not None:
                self._ended = lost
                return
            self._buffer.extend(items)
            self._next = next_position

    def _lost(self) -> LiveReplayStoreFailure:
        self._store._policy_ok = False  # evicted, maybe: the next call (a resubscribe) checks
        return LiveReplayStoreFailure(
            f"Redis lost the live replay data of session {self._session_id!r} (restarted"
            " without persistence, flushed or evicted): the subscription ended"
        )

    async def _fill(self) -> None:
        """Wait until the buffer may have something: a fetch from the server (started here, or
        the one still running from a cancelled read) ends, or a close wakes this read."""
        store = self._store
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        with store._lock:
            if self._buffer or self._replay or self._closed or self._final:
                return  # something to take, or to raise, now
            if self._ended is not None:
                return
            self._waiter = (loop, waiter)
            fetch = stale = None
            if not store._closed:  # else the close gives what is left, then wakes this read
                fetch = self._fetch
                after = self._next - 1
                if fetch is None or fetch.loop is not loop or fetch.after != after:
                    stale = fetch  # another loop's, or a read of positions taken meanwhile
                    count = min(store._backlog, READ_AHEAD)
                    loop_client = store._loop_client(loop)
                    task = loop_client.spawn(
                        _fetch(loop_client.client, self._keys, store._instance_key,
                               after, count, store._numbering_arg)
                    )  # fmt: skip
                    fetch = self._fetch = _Fetch(loop, after, task)
        if stale is not None:
            stale.cancel()
        try:
            if fetch is None:
                await waiter  # the store is closing: woken once this took what was left
            else:
                await asyncio.wait((fetch.task, waiter), return_when=asyncio.FIRST_COMPLETED)
        finally:
            with store._lock:
                if self._waiter is not None and self._waiter[1] is waiter:
                    self._waiter = None
        if fetch is None or not fetch.task.done():
            return
        with store._lock:
            if self._fetch is fetch:
                self._fetch = None
        if not fetch.task.cancelled():
            self._apply(fetch.after, fetch.task.result())

    async def _top_up(self, limit: int) -> None:
        """One read that does not wait, after what is buffered, while fewer than ``limit`` events
        are: a batch read that waited also takes the events appended meanwhile. Its failures are
        left to the next read."""
        store = self._store
        loop = asyncio.get_running_loop()
        count = min(store._backlog, READ_AHEAD)
        with store._lock:
            if len(self._buffer) >= limit or not self._can_read() or self._fetch is not None:
                return
            after = self._next - 1
            loop_client = store._loop_client(loop)
            # a task of the client, so that a close cancels and awaits it before closing the
            # client (a read still connecting would open a socket nobody closes)
            task = loop_client.spawn(
                _fetch(loop_client.client, self._keys, store._instance_key,
                       after, count, store._numbering_arg, None)
            )  # fmt: skip
        try:
            await asyncio.wait((task,))
        except BaseException:  # this read was cancelled: so is its top-up
            task.cancel()
            raise
        if task.cancelled():  # the store closed
            return
        with contextlib.suppress(LiveReplayStoreError):
            self._apply(after, task.result())

    def _apply(self, after: int, result: tuple[Any, ...]) -> None:
        """Buffer what ``_fetch`` read after ``after``; raise what it could not read."""
        kind = result[0]
        if kind is _ERROR:
            err = result[1]
            action = f"follow session {self._session_id!r}"
            raise _script_failure(action, err, self._keys[1]) from err
        if kind is _EVICTS:  # found on reconnecting: the data may go any time, so the stream ends
            self._store._policy_ok = False
            self._commit(after, [], after + 1, _evicting(result[1], self._store._where))
        elif kind is _IDLE:
            lost = self._lost() if result[1] != self._marker else None
            self._commit(after, [], after + 1, lost)
        elif kind is _ENTRIES:
            self._commit(after, *self._entries(after, result[1], result[2]))
        else:
            self._commit(after, *self._interpret(after, result[1]))


async def _fetch(
    client: redis.asyncio.Redis,
    keys: tuple[bytes, bytes],
    instance_key: bytes,
    after: int,
    count: int,
    numbering: bytes,
    block: int | None = BLOCK_MS,
) -> tuple[Any, ...]:
    """Read the positions after ``after``, waiting up to ``block`` ms for one (``None``: not at
    all): ``(_IDLE, marker)``, ``(_ENTRIES, marker, entries)`` when ``XREAD`` gave fewer than
    ``count`` entries starting at ``after + 1`` (so no lag and no trim in between), else
    ``(_POLL, reply)`` of the read script, which settles lags and trims exactly. A lost
    connection is retried for ``RECONNECT_WINDOW_S`` when ``block`` is set (then ``INFO memory``,
    ``(_EVICTS, policy)`` when the server may evict the store's keys, and the read script, whose
    marker tells whether the data survived); what cannot be read is ``(_ERROR, error)``.
    Never raises (but for cancellation)."""
    first_failure = None
    delay = 0.05
    while True:
        try:
            if first_failure is None:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.get(instance_key)
                    pipe.xread({keys[0]: _stream_id(after)}, count=count, block=block)
                    marker, streams = await pipe.execute()
                if not streams:
                    return (_IDLE, marker)
                entries = streams[0][1]
                if len(entries) < count and entries[0][0] == _stream_id(after + 1):
                    return (_ENTRIES, marker, entries)
            execute: Callable[..., Awaitable[Any]] = client.execute_command
            if first_failure is not None:  # reconnected: maybe to another server, or config
                try:
                    policy = _policy_of(await execute("INFO", "memory"))
                except ResponseError:  # INFO refused: nothing to go by
                    policy = None
                if _evicting(policy, "") is not None:
                    return (_EVICTS, policy)
            args = (keys[0], keys[1], instance_key, after, count, "0", numbering)
            try:
                reply = await execute("EVALSHA", _READ.sha, 3, *args)
            except NoScriptError:
                reply = await execute("EVAL", _READ.source, 3, *args)
            return (_POLL, reply)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as err:
            now = time.monotonic()
            if first_failure is None and block is not None:
                first_failure = now
            elif first_failure is None or now - first_failure > RECONNECT_WINDOW_S:
                return (_ERROR, err)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        except Exception as err:  # a server error, or a reply redis-py could not parse
            return (_ERROR, err)


# --- helpers --------------------------------------------------------------------------------------


def _pool(kind: Any, url: str, socket_timeout: float, retry: Any) -> Any:
    """A connection pool for ``url`` (``kind``: redis-py's sync or asyncio pool class) with
    the store's settings: RESP2, bytes replies, no automatic retries, bounded socket waits."""
    try:
        _check_db(url)
        pool = kind.from_url(
            url,
            protocol=2,
            socket_timeout=socket_timeout,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            retry=retry,
            health_check_interval=0,
        )
    except (ValueError, TypeError, RedisError) as err:
        raise InvalidObservationError(f"not a usable Redis URL: {error_message(err)}") from None
    kwargs = pool.connection_kwargs
    db = kwargs.get("db", 0)
    if type(db) is not int or db < 0:
        raise InvalidObservationError(
            f"not a usable Redis URL: the database must be an integer >= 0, not {short_repr(db)}"
        )
    if kwargs.get("protocol") not in (2, "2"):
        raise InvalidObservationError(
            "the Redis replay store speaks RESP2: drop protocol= from the URL"
        )
    kwargs.update(decode_responses=False, retry=retry)
    return pool


def _check_db(url: str) -> None:
    """Refuse a ``redis://`` / ``rediss://`` URL whose path is not ``/`` and a database number
    (redis-py reads ``/abc`` as database 0, silently). Raises ``ValueError``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.path:
        return
    path = urllib.parse.unquote(parts.path)
    digits = path[1:]
    if not path.startswith("/") or digits and not (digits.isascii() and digits.isdigit()):
        raise ValueError(
            f"the database part {short_repr(path)} is not a database number (an integer >= 0)"
        )


def _where(kwargs: dict[str, Any]) -> str:
    """Where a pool connects, without credentials (for ``repr``)."""
    if "path" in kwargs:
        return f"unix:{kwargs['path']}/{kwargs.get('db', 0)}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def _entry_halves(
    session_id: str, revision: SessionRevision, payload: EventPayload
) -> tuple[bytes, bytes]:
    """The event's wire JSON in two halves around its position: the script completes it.

    The event is encoded with a cursor whose position is a NUL (``\\u0000`` in JSON, a cursor
    that does not parse, so no turn activity ``sequence`` is written for it either). The top-level
    ``"cursor"`` key follows ``protocol_version``, ``session_id`` and ``revision``, all scalars, so
    its first structural occurrence is that one."""
    prefix = f"{CURSOR_PREFIX}{int(revision)}:"
    cursor = SessionCursor(f"{prefix}\x00:{session_id}")
    cursor._position = -1  # known not to parse (what ``live_position`` would find, the slow way)
    placeholder = SessionObservationEvent(session_id, revision, cursor, payload)
    text = _encode(placeholder)
    marker = f',"cursor":"{prefix}\\u0000:'
    at = text.find(marker)
    if at < 0:
        raise LiveReplayStoreFailure("the wire encoder no longer writes the cursor where expected")
    split = at + len(marker) - 7  # where ``\u0000`` starts
    try:
        return text[:split].encode(), text[split + 6 :].encode()
    except UnicodeEncodeError:  # a lone surrogate (``surrogateescape``, say): JSON carries no such
        raise InvalidObservationError(
            "payload cannot be stored as wire JSON: its text holds a lone surrogate, which"
            " UTF-8 cannot encode"
        ) from None


def _read_event(raw: Any, session_id: str, position: int) -> SessionObservationEvent:
    if type(raw) is not bytes:
        raise _foreign(session_id, f"entry {position} has no lash event field")
    try:
        text = raw.decode()
    except UnicodeDecodeError as err:
        raise _foreign(session_id, f"entry {position} is not UTF-8 text") from err
    return _decode(text, session_id, position)


def _stream_id(position: int) -> bytes:
    return b"%d-0" % position


def _entry_position(entry_id: Any, session_id: str) -> int:
    """The position of a stream id the store wrote (``p-0``)."""
    if type(entry_id) is bytes:
        digits, dash, seq = entry_id.partition(b"-")
        if dash and seq == b"0" and digits.isdigit():
            return int(digits)
    raise _foreign(session_id, f"its stream holds entry {short_repr(entry_id)}")


def _position(value: Any, what: str) -> int:
    """A position as the scripts give it (see "Tails" in the rules)."""
    if (
        type(value) is bytes
        and value.isdigit()
        and (value[:1] != b"0" or value == b"0")
        and len(value) <= 20
        and int(value) <= U64_MAX
    ):
        return int(value)
    raise LiveReplayStoreFailure(f"Redis gave {short_repr(value)} for {what}, not a position")


def _policy_of(info: Any) -> str | None:
    """``maxmemory_policy`` of an ``INFO memory`` reply (parsed or not); ``None`` when absent."""
    if isinstance(info, dict):
        policy = info.get("maxmemory_policy", info.get(b"maxmemory_policy"))
    elif isinstance(info, (bytes, str)):
        text = info.decode("utf-8", "replace") if isinstance(info, bytes) else info
        policy = None
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name == "maxmemory_policy":
                policy = value.strip()
    else:
        return None
    if isinstance(policy, bytes):
        policy = policy.decode("utf-8", "replace")
    return policy if isinstance(policy, str) else None


def _evicting(policy: str | None, where: str) -> LiveReplayStoreFailure | None:
    """The failure to raise when ``policy`` may evict the store's keys (see the rules)."""
    if policy is None or not policy.lower().startswith("allkeys-"):
        return None
    return LiveReplayStoreFailure(
        f"the Redis at {where or 'the URL'} may evict the live replay store's keys"
        f" (maxmemory-policy {policy}): the live replay store needs maxmemory-policy noeviction"
        " or a volatile-* policy (its keys have no TTL, so volatile-* policies never evict"
        " them); an evicted session would number its events again and replay other events"
        " after a cursor handed out before"
    )


def _script_failure(action: str, err: BaseException, tail_key: bytes) -> LiveReplayStoreFailure:
    """``_failure``, but a script's ``LASHBADTAIL`` names the tail key it refused."""
    if isinstance(err, ResponseError) and str(err).startswith("LASHBADTAIL"):
        return LiveReplayStoreFailure(
            f"Redis failed to {action}: the tail key {tail_key!r} holds data the Redis replay"
            " store did not write (not a position: decimal digits, no leading zeros, at most"
            " 2**64 - 1); nothing was written"
        )
    return _failure(action, err)


def _seconds(value: Any, what: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if seconds - seconds != 0.0:  # NaN or infinite
        raise LiveReplayStoreFailure(f"Redis gave {short_repr(value)} for {what}, not seconds")
    return seconds


def _failure(action: str, err: BaseException) -> LiveReplayStoreFailure:
    return LiveReplayStoreFailure(f"Redis failed to {action}: {type(err).__name__}: {err}")


def _foreign(session_id: str, detail: str) -> LiveReplayStoreFailure:
    return LiveReplayStoreFailure(
        f"session {session_id!r} holds data the Redis replay store did not write: {detail}"
    )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


#: Seconds ``close()`` waits for a loop of another thread to close its client there.
CLOSE_WAIT_S = 2.0

#: Tasks closing clients on their own running loops (a loop holds its tasks weakly).
_CLOSING: set[asyncio.Task[Any]] = set()


def _forget(
    store_ref: weakref.ReferenceType[RedisLiveReplayStore],
    loop: asyncio.AbstractEventLoop,
    loop_client: _LoopClient,
) -> None:
    """A client closed with its loop leaves its store (which makes another if the loop reads
    again): a store used from many short-lived loops keeps none of theirs."""
    store = store_ref()
    if store is not None:
        with store._lock:
            if store._async_clients.get(loop) is loop_client:
                del store._async_clients[loop]


class _LoopClient:
    """The asyncio client of one event loop, the fetch tasks running on it, and its keeper: an
    async generator parked at its ``yield`` in the loop, so that the loop's
    ``shutdown_asyncgens()`` (``asyncio.run`` and ``asyncio.Runner`` call it before closing)
    closes the client with the loop, even when the store is closed later or never.

    ``close()`` (the store closes) cancels the fetches and closes the client on its loop,
    awaited there when the loop runs or can be run; a closed loop can run nothing, so
    ``close_sockets()`` closes them without it. Nothing is left to the garbage collector."""

    __slots__ = ("loop", "client", "keeper", "tasks")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        client: redis.asyncio.Redis,
        forget: Callable[[_LoopClient], None],
    ) -> None:
        self.loop = loop
        self.client = client
        self.tasks: set[asyncio.Task[Any]] = set()  # fetches running on it
        self.keeper = _closed_with_loop(client, functools.partial(forget, self))
        step = self.keeper.__anext__()  # registers it with the running loop (asyncio's hook)
        try:
            step.send(None)  # runs it to its ``yield``, which awaits nothing
        except StopIteration:
            pass

    def spawn(self, fetch: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``fetch`` as a task of the running loop, kept until it ends."""
        task = asyncio.get_running_loop().create_task(fetch)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def close(self) -> None:
        """Cancel the fetches and close the client, from any thread: on its loop (a task when
        this thread runs it; handed over, and waited for up to ``CLOSE_WAIT_S``, when another
        thread does; run to completion when it is idle), or without it when it is closed."""
        loop = self.loop
        running = _running_loop()
        if running is loop:
            # now: ``asyncio.run`` may end (and cancel the task below midway) at the next step
            for task in list(self.tasks):
                task.cancel()
            self.close_sockets()
            closing = loop.create_task(self._closing())
            _CLOSING.add(closing)
            closing.add_done_callback(_CLOSING.discard)
            return
        for _ in range(3):  # the loop may start or stop meanwhile: then try the other way
            if loop.is_closed():
                self.close_sockets()
                return
            if loop.is_running():
                coroutine = self._closing()
                try:
                    future = asyncio.run_coroutine_threadsafe(coroutine, loop)
                except RuntimeError:  # closed meanwhile
                    coroutine.close()
                    continue
                with contextlib.suppress(Exception):  # slow or stopped: it goes on there
                    future.result(CLOSE_WAIT_S)
                return
            if self._run_idle(loop, running is not None):
                return
        self.close_sockets()

    def _run_idle(self, loop: asyncio.AbstractEventLoop, elsewhere: bool) -> bool:
        """Run the closing on ``loop``, which is idle: here when this thread runs no loop, else
        in a thread of its own (a thread runs one loop at a time). Whether it ran."""
        ran = False

        def run() -> None:
            nonlocal ran
            coroutine = self._closing()
            try:
                loop.run_until_complete(coroutine)
                ran = True
            except RuntimeError:  # started by its thread, or closed, meanwhile
                coroutine.close()

        if not elsewhere:
            run()
        else:
            thread = threading.Thread(target=run, name="lash-redis-close", daemon=True)
            thread.start()
            thread.join(CLOSE_WAIT_S)
            ran = ran or thread.is_alive()
        return ran

    async def _closing(self) -> None:
        try:
            tasks = [task for task in self.tasks if not task.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)  # cancelled: they end at once
        finally:  # even when cancelled itself (``asyncio.run`` cancels what is left at its end)
            try:
                await self.keeper.aclose()  # its ``finally`` closes the client
            except RuntimeError:  # the loop's shutdown is closing it: make sure, here too
                await _close_client(self.client)

    def close_sockets(self) -> None:
        """Close the client's sockets now, without awaiting: from the loop's thread, or any
        thread once the loop is closed."""
        pool = self.client.connection_pool
        connections = [
            *getattr(pool, "_available_connections", ()),
            *getattr(pool, "_in_use_connections", ()),
        ]
        for connection in connections:
            _close_socket(connection)


async def _closed_with_loop(
    client: redis.asyncio.Redis, forget: Callable[[], None]
) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        try:
            await _close_client(client)
        finally:
            forget()


async def _close_client(client: redis.asyncio.Redis) -> None:
    with contextlib.suppress(Exception):
        await client.aclose(close_connection_pool=True)


def _close_socket(connection: Any) -> None:
    """Close a ``redis.asyncio`` connection without awaiting: its transport is closed (its loop
    closes the socket at its next step). A closed loop runs no step, and fails what the
    transport schedules there: then the socket is closed here. Best effort on asyncio's own
    transports; one it does not know is closed as far as ``close()`` goes."""
    writer = getattr(connection, "_writer", None)
    if writer is None:
        return
    connection._reader = connection._writer = None
    transport = getattr(writer, "transport", None)
    while transport is not None:
        loop = getattr(transport, "_loop", None)
        with contextlib.suppress(Exception):
            transport.close()
        if loop is None or not loop.is_closed():
            return
        lost = getattr(transport, "_call_connection_lost", None)
        if lost is not None and getattr(transport, "_sock", None) is not None:
            with contextlib.suppress(Exception):
                lost(None)  # closes the socket, whatever the protocol does with the news
        transport = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
