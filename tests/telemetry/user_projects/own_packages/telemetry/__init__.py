"""This project's own ``telemetry`` package: a name the span budgets must not take."""

OWNER = "the user's project"


def record(event: str) -> str:
    return f"recorded {event}"
