"""Durable and shared store backends behind the ``lash_core`` store protocols.

``lash_core.stores.sqlite`` is the embedded default (stdlib ``sqlite3``, one file per project).
Each backend runs the one conformance suite in ``tests/conformance``.
"""

__all__: list[str] = []
