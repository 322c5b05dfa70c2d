"""`dbctl local ...`: the embedded PostgreSQL that `make up` uses when there is no cluster."""

from __future__ import annotations

import click

from dbctl.devenv import local_postgres as localpg
from dbctl.cli.common import debug_option, migrations_option, say
from dbctl.urls import mask_url


@click.group("local")
def local_group():
    """An embedded PostgreSQL under .dev/ (KIRO_PG_DIR, port KIRO_PG_PORT=55432)."""


@local_group.command("start")
@debug_option
def start_cmd():
    """Initialise (first time) and start the local server; create the kiro database."""
    server = localpg.from_environment()
    start_local(server)


def start_local(server) -> bool:
    fresh = localpg.ensure_running(server)
    created = localpg.ensure_database(server)
    state = "initialised and started" if fresh else "running"
    say(f"local PostgreSQL {state}: {mask_url(server.url())} (data in {server.datadir})")
    return fresh or created


@local_group.command("up")
@migrations_option
@click.option("--seed/--no-seed", default=None, help="Seed after migrating (default: only on a fresh database).")
@debug_option
@click.pass_context
def up_cmd(ctx, migrations_dir, seed):
    """Start the local server, migrate, verify and show the status: `make up` without a cluster."""
    from dbctl.cli import engine as commands

    server = localpg.from_environment()
    fresh = start_local(server)
    url = server.url()
    ctx.invoke(commands.migrate_cmd, database_url=url, migrations_dir=migrations_dir, target=None,
               dry_run=False, strict=False, lock_timeout=None, statement_timeout=None,
               wait_timeout=30.0, lock_wait_timeout=300.0)
    ctx.invoke(commands.verify_cmd, database_url=url, migrations_dir=migrations_dir, tables=(),
               wait_timeout=0.0, as_json=False)
    if seed or (seed is None and fresh):
        seed_cmd = commands_seed()
        if seed_cmd is not None:
            ctx.invoke(seed_cmd, database_url=url, migrations_dir=migrations_dir)
    click.echo("")
    ctx.invoke(commands.status_cmd, database_url=url, migrations_dir=migrations_dir, as_json=False)
    click.echo("")
    say(f"DATABASE_URL={mask_url(url)}")
    say("export DATABASE_URL=$(dbctl local url --show-password)   # to use it from this shell; `make down` stops it")


def commands_seed():
    from dbctl.cli.main import LazyGroup

    return LazyGroup._load("seed")


@local_group.command("stop")
@debug_option
def stop_cmd():
    """Stop the local server (the data stays in the directory)."""
    stop_local()


def stop_local() -> None:
    server = localpg.from_environment()
    if localpg.stop(server):
        say(f"local PostgreSQL stopped (data kept in {server.datadir})")
    else:
        say("local PostgreSQL was not running")


@local_group.command("url")
@click.option("--show-password", is_flag=True, help="Print the real password (for scripts: export DATABASE_URL=...).")
@debug_option
def url_cmd(show_password):
    """Print the local server's DATABASE_URL, password masked unless --show-password."""
    url = localpg.from_environment().url()
    click.echo(url if show_password else mask_url(url))


@local_group.command("status")
@debug_option
def status_cmd():
    """Say whether the local server is running; exit 1 when it is not."""
    server = localpg.from_environment()
    if localpg.is_running(server):
        say(f"running: {mask_url(server.url())}")
    else:
        say(f"not running (data directory {server.datadir})")
        raise SystemExit(1)
