"""Other people's projects, run by tests/telemetry/test_budgets_in_user_projects.py through
pytester, each in a pytest process of its own: never collected as part of the lab's tests."""

collect_ignore_glob = ["*"]
