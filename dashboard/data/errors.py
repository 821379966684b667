"""What the dashboard cannot show, in words: each error says what is wrong and what to do.

Pages catch :class:`DashboardError` (see :func:`latency_lab.dashboard.panels.show_problem`) and
show its ``title``, ``message`` and ``hint``; never a traceback.
"""

from __future__ import annotations


class DashboardError(Exception):
    """Something the dashboard cannot show: ``message`` says what, ``hint`` what to do."""

    title = "Something is not available"

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class SettingsError(DashboardError):
    title = "The lab's settings are invalid"


class ServiceUnavailable(DashboardError):
    title = "The lead service does not answer"


class AdminRefused(DashboardError):
    title = "The admin API refused the dashboard"


class InvalidChange(DashboardError):
    title = "The lab refused that change"


class StoreUnavailable(DashboardError):
    title = "The trace store cannot be read"


class RedisUnavailable(DashboardError):
    title = "Redis is not reachable"


class LoadProblem(DashboardError):
    title = "The load run could not start"


START_LAB_HINT = "Start the lab with `latency-lab up` (it starts everything and prints the URLs)."
