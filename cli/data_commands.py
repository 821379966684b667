"""``latency-lab seed`` and ``latency-lab outbox``: the lead database, filled and inspected.

Both import SQLAlchemy, the models and the seeding code only when they run, so ``latency-lab
--help`` stays quick.
"""

from __future__ import annotations

import click

from latency_lab.cli.errors import load_settings
from latency_lab.cli.tables import format_table
from latency_lab.lab.runtime import redact_url


@click.command()
@click.option(
    "--leads", type=click.IntRange(min=0), default=5000, show_default=True, help="Number of leads."
)
@click.option(
    "--seed",
    "seed_value",
    type=int,
    default=42,
    show_default=True,
    help="Random seed: the same seed gives the same data set.",
)
@click.option(
    "--users",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Number of users (lead owners).",
)
@click.option(
    "--tags", type=click.IntRange(min=1), default=30, show_default=True, help="Number of tags."
)
@click.option(
    "--database-url",
    default=None,
    metavar="URL",
    help="SQLAlchemy URL  [default: LAB_DATABASE_URL, else LAB_VAR_DIR/lab.db]",
)
@click.option("--reset", is_flag=True, help="Replace a different data set already there.")
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show a progress bar."
)
def seed(
    leads: int,
    seed_value: int,
    users: int,
    tags: int,
    database_url: str | None,
    reset: bool,
    progress: bool,
) -> None:
    """Fill the lead database with a deterministic data set.

    Idempotent: seeding again with the same numbers does nothing. A database seeded with other
    numbers is left alone unless --reset is given.

    \b
    Examples:
      latency-lab seed
      latency-lab seed --leads 20000 --seed 7 --reset
      latency-lab seed --database-url postgresql+psycopg://lab:lab@localhost/lab
    """
    from sqlalchemy.exc import ArgumentError  # heavy imports: only when seeding

    from latency_lab.seed.seeding import SeedConflict, seed_database

    url = database_url or _default_database_url()
    try:
        report = seed_database(
            url,
            leads=leads,
            users=users,
            tags=tags,
            seed=seed_value,
            progress=progress,
            reset=reset,
        )
    except ArgumentError as exc:  # not a URL SQLAlchemy can use
        raise click.BadParameter(str(exc), param_hint="'--database-url'") from None
    except SeedConflict as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # a bad URL or an unreachable database: its own words help most
        raise click.ClickException(f"could not seed {redact_url(url)}: {exc}") from None
    verb = "seeded" if report.created else "already seeded, nothing to do"
    click.echo(
        f"{verb}: {report.leads} leads, {report.users} users, {report.tags} tags "
        f"in {redact_url(url)}"
    )


def _default_database_url() -> str:
    settings = load_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    return settings.resolved_database_url


@click.command(short_help="Show where the writes' side effects stand (the transactional outbox).")
@click.option(
    "--database-url",
    default=None,
    metavar="URL",
    help="SQLAlchemy URL  [default: LAB_DATABASE_URL, else LAB_VAR_DIR/lab.db]",
)
@click.option(
    "--failed",
    "show_failed",
    is_flag=True,
    help="Also list the side effects given up on, with their last error.",
)
def outbox(database_url: str | None, show_failed: bool) -> None:
    """Count the side effects of writes (email, analytics, enrichment) by state.

    \b
    pending     stored with the lead, not yet on the queue: Redis was down, or an inline
                email or enrichment failed and waits for a worker; the outbox relay
                enqueues them when due
    dispatched  on the RQ queue (retried with backoff by RQ)
    delivered   the provider accepted it
    failed      RQ gave up after its retries (see RQ's failed-job registry)
    dropped     an analytics event whose inline call failed (best-effort)

    \b
    Examples:
      latency-lab outbox
      latency-lab outbox --failed
    """
    from sqlalchemy import select

    from latency_lab.service import outbox as side_effects
    from latency_lab.service.db import build_engine, session_factory
    from latency_lab.service.models import OutboxEvent, OutboxState

    url = database_url or _default_database_url()
    engine = build_engine(url)
    try:
        with session_factory(engine)() as session:
            counts = side_effects.counts(session=session)
            failed = session.execute(
                select(OutboxEvent.created_at, OutboxEvent.task, OutboxEvent.last_error)
                .where(OutboxEvent.state == OutboxState.FAILED.value)
                .order_by(OutboxEvent.id.desc()).limit(50)
            ).all() if show_failed else []  # fmt: skip
    except Exception as exc:  # an unreachable or unseeded database: its own words help most
        raise click.ClickException(
            f"could not read the outbox in {redact_url(url)}: {exc}"
        ) from None
    finally:
        engine.dispose()
    click.echo(format_table(("state", "side effects"), [(k, str(n)) for k, n in counts.items()]))
    for created_at, task, error in failed:
        click.echo(f"{created_at:%Y-%m-%d %H:%M:%S}  {task}: {error}")
