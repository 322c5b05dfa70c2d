"""`dbctl seed` and `dbctl reset`: development data, and a one-command rebuild. Thin over dbctl.devdata.seeding."""

from __future__ import annotations

import sys
import time

import click

from dbctl import config
from dbctl.cli.common import Setting, DIRECTORY, SECONDS, database_errors, database_options, printable, say, warn
from dbctl.errors import Refused
from dbctl.text import format_ns, quoted


def seed_options(func):
    # Checked by config.environment with DBCTL_ENV, so both sources follow one rule and the stricter wins.
    func = click.option("--env", "env", metavar="ENV",
                        help="development, test, staging or production [env DBCTL_ENV; default development]; "
                             "seed and reset refuse staging and production.")(func)
    func = click.option("--seeds", "seeds_dir", metavar="DIR", envvar="DBCTL_SEEDS",
                        type=DIRECTORY,
                        help=f"Seed files directory [env DBCTL_SEEDS; default {config.DEFAULT_SEEDS}].", cls=Setting)(func)
    return func


@click.command("seed")
@database_options
@seed_options
@click.option("--refresh", is_flag=True,
              help="Restore seeded rows a developer changed by hand to the seed values.")
@click.option("--lock-wait-timeout", default=60.0, show_default=True, type=SECONDS,
              help="Seconds to wait for a migration or another seed run to finish.")
def seed_cmd(database_url, migrations_dir, seeds_dir, env, refresh, lock_wait_timeout):
    """Load the development data from seeds/ in one transaction (development and test only).

    Seeding twice changes nothing; rows edited by hand stay as they are unless --refresh.
    Example: DBCTL_ENV=development dbctl seed
    """
    from dbctl.devdata import seeding
    from dbctl.cli.common import load
    from dbctl.urls import mask_url, require_url

    environment = seeding.check_environment(env, "seed")
    directory = seeding.seeds_directory(seeds_dir)
    files = seeding.load_seeds(directory)
    migrations = load(migrations_dir)
    url = require_url(database_url)
    say(f"seeding {mask_url(url)} ({environment}) from {directory}: {len(files)} file(s)"
        + (", restoring seeded rows (--refresh)" if refresh else ""))
    with database_errors("cannot seed"):
        result = seeding.seed(url, files, migrations, environment=environment, refresh=refresh,
                              lock_wait_timeout=lock_wait_timeout, say=say, warn=warn)
    report(result)


def report(result) -> None:
    from dbctl.engine.status import render_table

    rows = [[table, str(c.inserted), str(c.present), str(c.refreshed)] for table, c in result.tables.items()]
    if rows:
        for line in render_table(["TABLE", "INSERTED", "ALREADY PRESENT", "REFRESHED"], rows).splitlines():
            say(f"  {line}")
    say(f"seeded in {format_ns(result.duration_ns)}: {result.inserted} row(s) inserted, "
        f"{result.present} already present (seed run #{result.run_id})")


@click.command("reset")
@database_options
@seed_options
@click.option("--seed/--no-seed", "with_seed", default=False, help="Load the seed data after migrating.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask; needed when not run on a terminal.")
def reset_cmd(database_url, migrations_dir, seeds_dir, env, with_seed, yes):
    """Drop and re-create the database, then migrate (and with --seed, seed). Development and test only.

    Ends other sessions on the database first; works when it does not exist yet.
    Example: dbctl reset --seed --yes
    """
    from dbctl.devdata import seeding
    from dbctl.cli.common import load
    from dbctl.engine.migrator import MigrateOptions, migrate
    from dbctl.urls import database_name, mask_url, require_url

    environment = seeding.check_environment(env, "reset")
    # Everything that can be wrong with the files is found before anything is dropped.
    migrations = load(migrations_dir)
    files = seeding.load_seeds(seeding.seeds_directory(seeds_dir)) if with_seed else None
    url = require_url(database_url)
    if not yes and not sys.stdin.isatty():  # nobody can confirm: refuse before connecting at all
        confirm(database_name(url))
    with database_errors("cannot inspect the database to reset"):
        target = seeding.inspect_target(url)
    seeding.check_can_reset(target)  # a role that could drop but not re-create is refused before asking
    describe(target, environment, with_seed)
    if not yes:
        confirm(target.name)

    total = time.perf_counter_ns()
    # The reset lock is held until the end, so a second reset cannot drop the database under this migrate.
    with seeding.reset_session(target) as maintenance:
        ended, ns = seeding.drop_and_create(target, maintenance)
        dropped = "dropped and re-created" if target.exists else "created"
        sessions = f", ended {ended} other session(s)" if ended else ""
        say(f"{dropped} database {quoted(target.name)}{sessions} ({format_ns(ns)})")

        start = time.perf_counter_ns()
        result = migrate(url, migrations, MigrateOptions(), say=say, warn=warn)
        say(f"migrated: {len(result.applied)} migration(s) applied ({format_ns(time.perf_counter_ns() - start)})")

        if with_seed:
            with database_errors("reset: cannot seed"):
                result = seeding.seed(url, files, migrations, environment=environment, say=say, warn=warn)
            report(result)
    say(f"reset {mask_url(url)} in {format_ns(time.perf_counter_ns() - total)}")


def describe(target, environment: str, with_seed: bool) -> None:
    from dbctl.urls import mask_url

    then = "migrate and seed it" if with_seed else "migrate it"
    if target.exists:
        sessions = f"; {target.other_sessions} other session(s) on it will be ended" if target.other_sessions else ""
        say(f"about to DROP database {quoted(target.name)} (owner {target.owner}, {target.size_bytes / 1048576:.1f} MB{sessions}) "
            f"at {mask_url(target.url)} [{environment}], re-create it empty and {then}")
        if target.attributes is not None:
            say(f"it is re-created as it is now: {target.attributes.summary(target.owner)}")
        if target.not_kept:
            say(f"not kept, so that it can be migrated: {', '.join(target.not_kept)} (the new database is writable)")
    else:
        say(f"database {quoted(target.name)} does not exist yet at {mask_url(target.url)} [{environment}]; "
            f"about to create it and {then}")


def confirm(name: str) -> None:
    """A typed confirmation on a terminal; elsewhere (CI, Tilt, a pipe) --yes is required."""
    if not sys.stdin.isatty():
        raise Refused(f"dbctl reset drops database {quoted(name)}: pass --yes to confirm (stdin is not a terminal)")
    typed = click.prompt(printable(f"Type the database name ({name}) to confirm"), default="", show_default=False)
    if typed.strip() != name:
        raise Refused(f"confirmation {quoted(typed.strip())} does not match {quoted(name)}; nothing was dropped")
