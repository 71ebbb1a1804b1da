"""Writing a text file the user named (a CSV export): checked, whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from lash_core import short_repr

__all__ = ["check_path", "write_text_atomic", "utf8_text"]


def check_path(path: Any) -> Path:
    """``path`` (a ``str`` or ``os.PathLike``) as a ``Path``; ``TypeError`` for anything else. An
    ``int`` is refused: ``open`` would take it for a file descriptor and write into (and close)
    whatever that is."""
    if isinstance(path, (bool, int)) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, not {short_repr(path)}")
    return Path(path)


def utf8_text(text: str) -> str:
    """``text`` with lone surrogates (valid in a Python ``str``, not in UTF-8) replaced by
    U+FFFD, so it can be written as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def write_text_atomic(path: Any, text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` through a temporary file in the same folder, renamed
    over it when complete: a failed write leaves any earlier file at ``path`` as it was. Raises
    ``TypeError`` for a bad ``path`` (``check_path``), ``OSError`` when it cannot be written."""
    target = check_path(path)
    data = utf8_text(text).encode("utf-8")
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with open(fd, "wb", closefd=True) as out:
            out.write(data)
        os.replace(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    return target
