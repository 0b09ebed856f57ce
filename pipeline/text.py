"""Text that came from outside (file names, exception messages), made safe for where it goes.

* :func:`printable`: storable. File names are bytes; Python hands undecodable bytes over as lone
  surrogates, which UTF-8 (and so the warehouse) cannot store.
* :func:`terminal_safe`: showable. A file name may hold escape sequences that retitle a terminal
  or clear it, or look like rich markup; shown text goes through this first.
"""

from __future__ import annotations

import os
import re

_UNPRINTABLE = re.compile(r"[\\\udc80-\udcff]")


def printable(path: str) -> str:
    """``path`` as text that any database accepts, losslessly.

    File names are bytes; Python hands undecodable bytes over as lone surrogates, which UTF-8
    cannot store. Such a byte becomes the four characters ``\\xNN`` and, so that the escaping
    can be undone, a backslash becomes two. Names without either are returned unchanged.
    """
    if not _UNPRINTABLE.search(path):
        return path
    raw = os.fsencode(path).replace(b"\\", b"\\\\")
    return raw.decode("utf-8", errors="backslashreplace")


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """``text`` with control characters (ESC, BEL, newline, C1 codes, ...; not tab) shown as
    ``\\xNN``, so printing it can neither drive the terminal nor forge a log line."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
