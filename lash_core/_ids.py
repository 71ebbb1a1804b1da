"""Identifier generation, in one place: every id the core makes is a uuid4, so ids never repeat
across processes, restarts or stores (activities, correlations, batches, claims, leases, sessions).
Callers that need reproducible ids inject their own factory (``with_id_factory``, ``new_id=``)."""

from __future__ import annotations

import uuid

__all__ = ["new_id", "new_prefixed_id", "new_short_id"]


def new_id() -> str:
    """A uuid4 in its canonical string form (activity and correlation ids)."""
    return str(uuid.uuid4())


def new_prefixed_id(prefix: str) -> str:
    """``{prefix}-{32 hex digits}`` (queued batches ``qwb``, claims ``qwc``, leases ``qwl``)."""
    return f"{prefix}-{uuid.uuid4().hex}"


def new_short_id(prefix: str) -> str:
    """``{prefix}-{12 hex digits}``: readable default names (sessions, runtime owners)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
