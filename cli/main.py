"""The ``latency-lab`` command line: start the lab, seed it, flip its toggles, reshape its world.

::

    latency-lab up                                   # everything; the front door is :8000
    latency-lab up --no-dashboard --workers 2
    latency-lab status                               # the running lab's processes, restarts
    latency-lab seed --leads 20000 --reset
    latency-lab toggles                              # show the five switches
    latency-lab toggles eager_loading=on redis_cache=on
    latency-lab world db_round_trip_ms=2 analytics.latency_ms=50
    latency-lab load --requests 1000 --concurrency 8
    latency-lab bench --quick

``toggles`` and ``world`` talk to the running lab's admin API (``/admin/toggles``,
``/admin/world``): the service URL comes from ``--url``, else ``LAB_SERVICE_URL``, else the
running lab's ``var/lab.json``, else the default port. With ``LAB_ADMIN_TOKEN`` set, the token is
sent as ``X-Lab-Admin-Token``.

Mistakes in arguments or in ``LAB_*`` settings end with one line saying what is wrong and exit
code 2; an unreachable lab or a refused request exits with 1.

This module imports nothing of the lab's stack: :func:`main` imports the commands
(:mod:`latency_lab.cli.commands`) when it runs, so the plugin-only install (``pip install
latency-lab``, without the ``lab`` extra) gets one line saying what to install. ``cli``, the click
group, is importable from here as before (``from latency_lab.cli.main import cli``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import click

LAB_EXTRA_INSTALL = "pip install 'latency-lab[lab]'"


def main(args: Sequence[str] | None = None) -> None:
    """The ``latency-lab`` console script."""
    try:
        from latency_lab.cli.commands import cli
    except ModuleNotFoundError as exc:
        if not exc.name or exc.name.partition(".")[0] == "latency_lab":
            raise  # our own code is missing: a broken install, worth its traceback
        raise SystemExit(
            f"latency-lab: the lab is not installed here (no module {exc.name!r}); "
            f"install it with: {LAB_EXTRA_INSTALL}"
        ) from None
    cli(args=args, prog_name="latency-lab")


def __getattr__(name: str) -> click.Group:
    """``cli``, the click group, imported on first use (PEP 562) so importing stays cheap."""
    if name == "cli":
        from latency_lab.cli.commands import cli

        return cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
