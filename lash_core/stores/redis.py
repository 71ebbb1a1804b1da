"""The shared backend: Redis Streams (extra ``[redis]``, redis-py), one stream per session.

* ``RedisLiveReplayStore.from_url(url, config=None, *, clock=None, namespace="lash",
  instance_numbering=True)``: a live replay store that several processes append to and follow at
  once. Positions are assigned atomically in Redis (one round trip per append) and map to stream
  ids, so a replay after a cursor is one range read; retention by count and age; trims that Redis
  would hide (a read after a trimmed id resumes silently at the oldest entry) are reported as
  ``trimmed`` gaps or ``SubscriberLagged``, never skipped; a Redis that restarts during a
  subscription is reconnected to, or ends it explicitly when its data was lost. A server whose
  ``maxmemory-policy`` may evict the store's keys (``allkeys-*``) is refused: use ``noeviction``
  or a ``volatile-*`` policy.

It runs the conformance suite (``tests/conformance``); driver errors reach callers as
``LiveReplayStoreFailure``. The rules are in ``lash_core.stores._redis_replay``.
"""

import importlib.util

if importlib.util.find_spec("redis") is None:
    raise ImportError(
        "lash_core.stores.redis needs redis-py: install the extra `lash-notebook[redis]`"
    )

from ._redis_replay import RedisLiveReplayStore, RedisLiveReplaySubscription  # noqa: E402

__all__ = ["RedisLiveReplayStore", "RedisLiveReplaySubscription"]
