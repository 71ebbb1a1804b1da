"""Durable and shared store backends behind the ``lash_core`` store protocols.

``lash_core.stores.sqlite`` is the embedded default (stdlib ``sqlite3``, one file per project).
``lash_core.stores.redis`` shares live replay between processes (extra ``[redis]``, Redis Streams).
Each backend runs the one conformance suite in ``tests/conformance``.
"""

__all__: list[str] = []
