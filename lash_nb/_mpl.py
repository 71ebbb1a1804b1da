"""matplotlib, through its object API only, for the static pictures (imported on first use)."""

from __future__ import annotations

import io
from typing import Any

__all__ = ["inline_figure_class"]

_FIGURE_CLASS: Any = None


def inline_figure_class() -> Any:
    """``matplotlib.figure.Figure`` with ``_repr_png_``, so Jupyter shows it inline without pyplot
    or ``%matplotlib inline``; made on the first call (matplotlib is imported then)."""
    global _FIGURE_CLASS
    if _FIGURE_CLASS is None:
        from matplotlib.figure import Figure

        class InlineFigure(Figure):
            """A ``Figure`` that Jupyter shows inline without pyplot (``_repr_png_``)."""

            def _repr_png_(self) -> bytes:
                buffer = io.BytesIO()
                self.savefig(buffer, format="png", bbox_inches="tight")
                return buffer.getvalue()

        _FIGURE_CLASS = InlineFigure
    return _FIGURE_CLASS
