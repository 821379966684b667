"""What the lab tells a person when something goes wrong, and the pieces of those messages.

:class:`LabError` carries a message that names the part of the lab and says why; the pieces here
build such messages: how a process ended (``was killed by SIGKILL``), the last lines of its log,
and URLs with their passwords hidden.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

LOG_TAIL_LINES = 25


class LabError(RuntimeError):
    """The lab could not start, or a part of it died; the message names the part and says why."""


def describe_code(code: int | None) -> str:
    """``was killed by SIGKILL`` or ``exited (3)``."""
    if code is not None and code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited ({code})"


def log_excerpt(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log, indented, under a heading naming the file."""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 16_384))
            tail = log.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    if not tail:
        return f"({path} is empty)"
    return f"Last lines of {path}:\n" + "\n".join(f"    {line}" for line in tail)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for printing."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
