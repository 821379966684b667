"""The ``latency-lab`` click group, with every command gathered from its module.

``lab_commands`` (up, status), ``data_commands`` (seed, outbox), ``load_commands`` (load,
bench), ``state_commands`` (toggles, world) and ``profile_commands`` (profile).
:func:`latency_lab.cli.main.main` imports this module only when it runs, so a missing lab stack
is one line, not a traceback.
"""

from __future__ import annotations

import click

from latency_lab.cli.data_commands import outbox, seed
from latency_lab.cli.lab_commands import status, up
from latency_lab.cli.load_commands import bench, load
from latency_lab.cli.profile_commands import profile
from latency_lab.cli.state_commands import toggles, world

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(
    context_settings=CONTEXT_SETTINGS,
    commands=[up, status, seed, toggles, world, load, bench, outbox, profile],
)
def cli() -> None:
    """Latency Lab: an API taken from 500 ms to 50 ms, one switchable optimization at a time.

    \b
    Start here:
      latency-lab up                       start everything, open http://127.0.0.1:8000
      latency-lab toggles eager_loading=on fix the N+1 query, then watch the traces

    Settings come from the environment: LAB_VAR_DIR, LAB_HOST, LAB_EDGE_PORT, LAB_SERVICE_PORT,
    LAB_THIRDPARTY_PORT, LAB_DASHBOARD_PORT, LAB_DATABASE_URL, LAB_TRACE_STORE_URL, REDIS_URL,
    LAB_ADMIN_TOKEN, and the OTEL_* variables.
    """
