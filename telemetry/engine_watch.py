"""Every SQLAlchemy statement in the process, seen without instrumenting any engine.

The span budgets must count the statements of engines nobody told them about: an engine created
inside someone's app factory, Flask-SQLAlchemy's, an ``AsyncEngine`` (its ``sync_engine`` is an
ordinary ``Engine``). SQLAlchemy lets a listener be attached to the ``Engine`` *class*, which
covers every engine, whenever and however it is created, including the ones that exist already::

    from latency_lab.telemetry import engine_watch

    engine_watch.install()                       # idempotent; the pytest plugin does it
    unsubscribe = engine_watch.subscribe(records.append)
    ...                                          # every statement -> a StatementRecord
    unsubscribe()

Each :class:`~latency_lab.telemetry.nplusone.StatementRecord` carries the SQL, its duration, the ORM
relationship it was loading (:mod:`latency_lab.telemetry.orm`), whether that relationship is a
collection, and its *origin*: the first frame outside SQLAlchemy and this package (``app.py:41 in
books``), the user's line that triggered a lazy load. For an ``AsyncEngine`` the walk continues from
the greenlet SQLAlchemy runs the statement in to the coroutine that awaited it.

This is not tracing: no span is made, so sampling, ``OTEL_SDK_DISABLED`` or a missing tracer
provider cannot hide a statement from a budget, and an engine that the OpenTelemetry SQLAlchemy
instrumentation also traces is still seen once (the budgets ignore that instrumentation's
spans). Statements run while instrumentation is suppressed (the SDK does so while exporting
spans, e.g. to the lab's trace store) are skipped. With no subscriber, each listener returns at
once.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import threading
import time
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, get_value
from sqlalchemy import Engine, event

from latency_lab.telemetry.nplusone import StatementRecord
from latency_lab.telemetry.orm import current_relationship, track_relationship_loads

StatementSink = Callable[[StatementRecord], None]

_sinks: list[StatementSink] = []
_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
_lock = threading.Lock()
_installed = False
_STARTED = "_lab_watch_started"  # attribute set on the ExecutionContext between the two events
# Not the user's line: SQLAlchemy, this package, and the standard library (``contextlib`` when
# a ``with session.begin():`` block flushes), but the user's installed packages are.
_INTERNAL_DIRS = tuple(
    os.path.dirname(module.__file__) + os.sep
    for module in (sys.modules["sqlalchemy"], sys.modules[__package__ or "telemetry"])
    if module.__file__
)
_STDLIB_DIRS = tuple(
    {os.path.join(sysconfig.get_paths()[key], "") for key in ("stdlib", "platstdlib")}
)
_COMPREHENSIONS = ("<listcomp>", "<dictcomp>", "<setcomp>")
_SITE_DIRS = tuple({os.path.join(sysconfig.get_paths()[key], "") for key in ("purelib", "platlib")})


def install() -> None:
    """Listen on the ``Engine`` class and on ``Session`` (idempotent, cheap when unsubscribed)."""
    global _installed
    with _lock:
        if _installed:
            return
        track_relationship_loads()
        event.listen(Engine, "engine_connect", _on_connect)
        event.listen(Engine, "before_cursor_execute", _before_cursor_execute)
        event.listen(Engine, "after_cursor_execute", _after_cursor_execute)
        event.listen(Engine, "handle_error", _on_error)
        _installed = True


def installed() -> bool:
    return _installed


def subscribe(sink: StatementSink) -> Callable[[], None]:
    """Send every statement from now on to ``sink``; returns the function that stops it."""
    install()
    with _lock:
        _sinks.append(sink)

    def unsubscribe() -> None:
        with _lock:
            if sink in _sinks:
                _sinks.remove(sink)

    return unsubscribe


def connected_engines() -> list[Engine]:
    """Engines still alive that opened a connection since :func:`install`."""
    return list(_engines)


# --- listeners ------------------------------------------------------------------------------
def _on_connect(connection: Any) -> None:
    _engines.add(connection.engine)


def _before_cursor_execute(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> None:
    if not _sinks or get_value(_SUPPRESS_INSTRUMENTATION_KEY):
        return
    started = (time.time_ns(), time.perf_counter_ns(), caller_origin())
    if context is None:  # no execution context to carry it: record it now, without duration
        _deliver(statement, started, time.perf_counter_ns())
    else:
        setattr(context, _STARTED, started)


def _after_cursor_execute(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> None:
    started = _pop_started(context)
    if started is not None:
        _deliver(statement, started, time.perf_counter_ns())


def _on_error(exception_context: Any) -> None:
    """A statement that failed still ran on the database: count it."""
    started = _pop_started(exception_context.execution_context)
    if started is not None and exception_context.statement:
        _deliver(exception_context.statement, started, time.perf_counter_ns())


def _pop_started(context: Any) -> tuple[int, int, str | None] | None:
    started = getattr(context, _STARTED, None)
    if started is not None:
        delattr(context, _STARTED)
    return started


def _deliver(statement: str, started: tuple[int, int, str | None], ended_ns: int) -> None:
    wall_ns, perf_ns, origin = started
    relationship = current_relationship()
    record = StatementRecord(
        statement=statement,
        duration_ms=(ended_ns - perf_ns) / 1e6,
        relationship=relationship.name if relationship else None,
        collection=relationship.collection if relationship else None,
        origin=origin,
        started_ns=wall_ns,
    )
    for sink in list(_sinks):
        sink(record)


# --- where a statement came from ------------------------------------------------------------
def caller_origin() -> str | None:
    """``app.py:41 in books``: the first frame outside SQLAlchemy, this package and the stdlib."""
    frame = _first_outside(sys._getframe(1))
    if frame is None:
        frame = _first_outside(_awaiting_frame())
    if frame is None:
        return None
    return f"{_display_path(frame.f_code.co_filename)}:{frame.f_lineno} in {_function_name(frame)}"


def _function_name(frame: FrameType) -> str:
    """The function's name; a comprehension (its own frame on 3.11) takes its definer's."""
    name = frame.f_code.co_name
    if name in _COMPREHENSIONS and frame.f_back is not None:
        return frame.f_back.f_code.co_name
    return name


def _first_outside(frame: FrameType | None) -> FrameType | None:
    while frame is not None:
        if not _is_internal(frame.f_code.co_filename):
            return frame
        frame = frame.f_back
    return None


def _is_internal(filename: str) -> bool:
    if filename.startswith(("<", *_INTERNAL_DIRS)):
        return True
    return filename.startswith(_STDLIB_DIRS) and not filename.startswith(_SITE_DIRS)


def _awaiting_frame() -> FrameType | None:
    """For an ``AsyncEngine``: the frame of the coroutine waiting on SQLAlchemy's greenlet."""
    greenlet_module = sys.modules.get("greenlet")
    if greenlet_module is None:
        return None
    parent = getattr(greenlet_module.getcurrent(), "parent", None)
    return getattr(parent, "gr_frame", None)


def _display_path(filename: str) -> str:
    """Relative to the working directory when inside it (``app/views.py``), else as is."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive (Windows)
        return filename
    return filename if relative.startswith("..") else relative
