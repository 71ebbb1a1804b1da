"""IPython integration: ``%load_ext lash_nb`` registers rich HTML reprs; ``Rich`` works without it.

The extension only talks to the shell it is handed, so importing ``lash_nb`` never imports
IPython. Loading twice is harmless, and unloading puts back whatever ``text/html`` printer a type
had before (usually none).
"""

from __future__ import annotations

import weakref
from typing import Any

from . import _render

__all__ = ["load_ipython_extension", "unload_ipython_extension", "Rich"]

_MIME_HTML = "text/html"

#: formatter -> {type: the printer it had before we loaded}; weak, so a discarded shell goes away.
_previous: weakref.WeakKeyDictionary[Any, dict[type, Any]] = weakref.WeakKeyDictionary()


def _html(obj: Any) -> str:
    return _render.html_for(obj)


def load_ipython_extension(ipython: Any) -> None:
    """Register ``text/html`` printers for ``lash_nb._render.RICH_TYPES`` (idempotent)."""
    formatter = ipython.display_formatter.formatters[_MIME_HTML]
    saved = _previous.setdefault(formatter, {})
    for cls in _render.RICH_TYPES:
        previous = formatter.for_type(cls, _html)
        if previous is not _html and cls not in saved:
            saved[cls] = previous


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the printers ``load_ipython_extension`` registered; a no-op when not loaded."""
    formatter = ipython.display_formatter.formatters[_MIME_HTML]
    saved = _previous.pop(formatter, {})
    for cls in _render.RICH_TYPES:
        if formatter.type_printers.get(cls) is not _html:
            continue  # somebody else registered a printer since; leave it
        previous = saved.get(cls)
        if previous is None:
            formatter.pop(cls, None)
        else:
            formatter.for_type(cls, previous)


class Rich:
    """Wrap a lash value for ``display(Rich(x))``: HTML in a notebook, a summary as text.

    Raises ``TypeError`` at once for a value lash_nb cannot render.
    """

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        _render.plain_text(obj)  # validates the type early (TypeError), and is cheap
        self.obj = obj

    def __repr__(self) -> str:
        return _render.plain_text(self.obj)

    def _repr_html_(self) -> str:
        return _render.html_for(self.obj)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        bundle = _render.mimebundle(self.obj)
        if include:
            bundle = {k: v for k, v in bundle.items() if k in include}
        if exclude:
            bundle = {k: v for k, v in bundle.items() if k not in exclude}
        return bundle
