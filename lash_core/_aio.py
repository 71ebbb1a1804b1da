"""The one asyncio helper shared by the handle and the runtime driver."""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["maybe_await"]


async def maybe_await(value: Any) -> Any:
    """Store methods may be coroutines or plain functions (spec section 5): accept both."""
    return await value if inspect.isawaitable(value) else value
