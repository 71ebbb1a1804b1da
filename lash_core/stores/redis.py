"""The shared backend: Redis Streams (extra ``[redis]``, redis-py), one stream per session.

* ``RedisLiveReplayStore.from_url(url, config=None, *, clock=None, namespace="lash",
  instance_numbering=False)``: a live replay store that several processes append to and follow at
  once. Positions are assigned atomically in Redis (one round trip per append) and map to stream
  ids, so a replay after a cursor is one range read; retention by count and age; trims that Redis
  would hide (a read after a trimmed id resumes silently at the oldest entry) are reported as
  ``trimmed`` gaps or ``SubscriberLagged``, never skipped; a Redis that restarts during a
  subscription is reconnected to, or ends it explicitly when its data was lost.

It runs the conformance suite (``tests/conformance``); driver errors reach callers as
``LiveReplayStoreFailure``. The rules are in ``lash_core.stores._redis_replay``.
"""

from ._redis_replay import RedisLiveReplayStore, RedisLiveReplaySubscription

__all__ = ["RedisLiveReplayStore", "RedisLiveReplaySubscription"]
