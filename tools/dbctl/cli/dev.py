"""`dbctl dev ...`, `dbctl doctor`, `dbctl health-check`: what `make up` and Tilt's
triggers and buttons run. Thin over dbctl.devenv.doctor and dbctl.k8s; the database work is the core commands'.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import click

from dbctl.cli.common import Setting, SECONDS, debug_option, say, warn
from dbctl.errors import CheckFailed, ConfigError, Refused
from dbctl.text import quoted


def target_options(func):
    """Where the environment runs: the local embedded server (default) or a cluster namespace."""
    options = [
        click.option("--cluster", is_flag=True, help="The environment runs in Kubernetes (tilt up); default: "
                                                     "the local PostgreSQL (tilt up -- --no-cluster, make up)."),
        click.option("--namespace", default="kiro-dev", show_default=True, help="[--cluster] The namespace."),
        click.option("--secret-name", default="kiro-db-credentials", show_default=True,
                     help="[--cluster] The Secret holding DATABASE_URL."),
        click.option("--postgres-port", type=click.IntRange(1, 65535), default=5432, show_default=True,
                     help="[--cluster] Local port of Tilt's port-forward to postgres."),
        click.option("--migration-job-name", default="database-migration", show_default=True),
        click.option("--seed-job-name", default="database-seed", show_default=True),
        click.option("--options", "options_file", metavar="FILE", help="[--cluster] `dbctl render --options` file."),
    ]
    for option in reversed(options):
        func = option(func)
    return debug_option(func)


def make_target(cluster, namespace, secret_name, postgres_port, migration_job_name, seed_job_name, options_file):
    from dbctl.devenv.doctor import Target

    return Target(cluster=cluster, namespace=namespace, secret_name=secret_name, postgres_port=postgres_port,
                  migration_job=migration_job_name, seed_job=seed_job_name, options_file=options_file)


def invoke_dbctl(args: list[str], database_url: str) -> None:
    """Run another dbctl command in this process, against `database_url` (never printed unmasked)."""
    from dbctl.cli.main import cli

    os.environ["DATABASE_URL"] = database_url
    try:
        cli.main(args=list(args), prog_name="dbctl", standalone_mode=False)
    except SystemExit as exc:  # a command that exits by itself (verify --json) keeps its code
        if exc.code:
            raise


# ---------------------------------------------------------------- dbctl dev

@click.group("dev")
def dev_group():
    """The dev environment: `make up`'s chooser and the commands behind Tilt's triggers and buttons."""


@dev_group.command("up")
@click.option("--dry-run", is_flag=True, help="Say which way it would run, and why; start nothing.")
@debug_option
def up_cmd(dry_run):
    """Start the environment: tilt up (Tilt + cluster), tilt up -- --no-cluster (Tilt only), or the local pipeline.

    Says which it chose and why. This is `make up`.
    """
    import shutil

    from dbctl.devenv import doctor as devenv

    tilt = shutil.which("tilt")
    cluster_ok, detail = devenv.probe_cluster() if tilt else (False, "not checked")
    choice = devenv.choose(tilt, cluster_ok, detail)
    say(f"make up: {' '.join(choice.command)}: {choice.reason}")
    if dry_run:
        return
    if choice.mode == "local":
        from dbctl.cli.main import cli

        cli.main(args=["local", "up"], prog_name="dbctl", standalone_mode=False)
        return
    sys.stdout.flush()
    os.execvp("tilt", choice.command)


@dev_group.command("down")
@debug_option
def down_cmd():
    """Stop what `make up` started: Tilt's resources (when Tilt is installed) and the local PostgreSQL."""
    import shutil
    import subprocess

    from dbctl.cli.local import stop_local

    from dbctl.devenv import doctor as devenv

    if shutil.which("tilt"):
        # The same choice as `up`: with no cluster, plain `tilt down` fails building a Kubernetes client.
        cluster_ok, _ = devenv.probe_cluster()
        proc = subprocess.run(["tilt", "down"] if cluster_ok else ["tilt", "down", "--", "--no-cluster"],
                              capture_output=True, text=True)
        say("tilt down: done" if proc.returncode == 0 else f"tilt down: {proc.stderr.strip().splitlines()[-1:]}")
    stop_local()


@dev_group.command("postgres")
@debug_option
def postgres_cmd():
    """Run the local PostgreSQL in the foreground (Tilt's `postgres` without a cluster); Ctrl-C stops it."""
    from dbctl.devenv import local_postgres as localpg
    from dbctl.cli.local import start_local

    server = localpg.from_environment()
    start_local(server)
    say(f"running in the foreground until stopped (log {server.logfile})")
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    try:
        while not stopping:
            time.sleep(1)
            if not localpg.is_running(server):
                raise CheckFailed(f"PostgreSQL stopped by itself; see {server.logfile}")
    except KeyboardInterrupt:
        pass
    localpg.stop(server)
    say(f"local PostgreSQL stopped (data kept in {server.datadir})")


@dev_group.command("postgres-ready")
@debug_option
def postgres_ready_cmd():
    """Exit 0 when the local PostgreSQL accepts connections to its database (Tilt's readiness probe)."""
    from dbctl.devenv import local_postgres as localpg
    from dbctl.engine import postgres
    from dbctl.urls import mask_url

    url = localpg.from_environment().url()
    postgres.connect(url, timeout=2).close()
    say(f"ready: {mask_url(url)}")


@dev_group.command("run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("args", nargs=-1, type=click.UNPROCESSED, required=True)
@debug_option
def run_cmd(args):
    """Run a dbctl command against the local PostgreSQL: dbctl dev run -- migrate | seed | serve ..."""
    from dbctl.devenv.doctor import Target

    invoke_dbctl(list(args), Target(cluster=False).database_url())


@dev_group.command("migrate")
@target_options
@click.option("--timeout", default=600.0, show_default=True, type=SECONDS, help="[--cluster] Seconds to wait for the Job.")
def migrate_cmd(timeout, **target):
    """db-migrate: re-run the migration Job (cluster) or dbctl migrate (local), and show the outcome."""
    t = make_target(**target)
    if t.cluster:
        run_job(t, t.migration_job, timeout)
    else:
        invoke_dbctl(["migrate"], t.database_url())


@dev_group.command("seed")
@target_options
@click.option("--timeout", default=600.0, show_default=True, type=SECONDS, help="[--cluster] Seconds to wait for the Job.")
def seed_cmd(timeout, **target):
    """db-seed: run the seed Job and show its log (cluster), or dbctl seed (local)."""
    t = make_target(**target)
    if t.cluster:
        run_job(t, t.seed_job, timeout)
    else:
        invoke_dbctl(["seed"], t.database_url())


@dev_group.command("reset")
@target_options
@click.option("--yes", "-y", is_flag=True, help="Confirmed already (the Reset button asks first).")
@click.option("--seed/--no-seed", default=False, envvar="DBCTL_RESET_SEED",
              help="Load the seed data afterwards [env DBCTL_RESET_SEED=1].", cls=Setting)
@click.option("--timeout", default=600.0, show_default=True, type=SECONDS, help="[--cluster] Seconds to wait for each Job.")
def reset_cmd(yes, seed, timeout, **target):
    """db-reset: drop and re-create the database, clear the Jobs, migrate again (and seed with --seed).

    Without --yes it asks on a terminal; elsewhere (tilt trigger db-reset) the first run only
    asks for confirmation and a second run within 60 s does the reset.
    """
    from dbctl.devenv import doctor as devenv

    t = make_target(**target)
    what = f"reset {t.describe()}"
    if not yes:
        if devenv.on_terminal():
            click.confirm(f"db-reset drops the database of {t.describe()} and everything in it. Continue?", abort=True)
        elif not devenv.two_step_confirm(what):
            raise Refused(f"db-reset drops the database of {t.describe()} and all its data; to confirm, trigger it "
                          f"again within {devenv.CONFIRM_WINDOW:g}s (tilt trigger db-reset), or use the Reset DB "
                          "button, which asks first")
    if not t.cluster:
        invoke_dbctl(["reset", "--yes"] + (["--seed"] if seed else []), t.database_url())
    else:
        from dbctl.k8s import cluster, jobs as k8s

        k8s.delete_jobs(cluster.connect(), [t.migration_job, t.seed_job], t.namespace, say)
        invoke_dbctl(["reset", "--yes"], t.database_url())
        say("running the migration Job so the cluster's record matches (it finds nothing left to apply)")
        run_job(t, t.migration_job, timeout)
        if seed:
            run_job(t, t.seed_job, timeout)
    if not seed:
        say("the database is empty of data; to load the development data: tilt trigger db-seed (or the Seed button)")


@dev_group.command("status")
@target_options
def status_cmd(**target):
    """db-status: the migration history and the tables, plus (cluster) the state of the Jobs."""
    t = make_target(**target)
    invoke_dbctl(["status"], t.database_url())
    if t.cluster:
        from dbctl.k8s import cluster, jobs as k8s

        click.echo("")
        say(f"Jobs in {t.namespace}:")
        for line in k8s.job_report(cluster.connect(), t.namespace, [t.migration_job, t.seed_job]):
            say(f"  {line}")


def run_job(t, name: str, timeout: float) -> None:
    from dbctl.k8s import cluster, jobs as k8s, render

    values = render.load_options_file(t.options_file) if t.options_file else {}
    values.update(namespace=t.namespace, secret_name=t.secret_name, migration_job_name=t.migration_job,
                  seed_job_name=t.seed_job, seed_suspend=False)
    opts = render.make_options(**values)
    docs = {d["metadata"]["name"]: d for d in render.migration_documents(opts)}
    if name not in docs:
        raise ConfigError(f"no Job named {quoted(name)} is rendered; use {' or '.join(docs)}")
    api = cluster.connect()
    # The image Tilt built and deployed (its own tag), so the Job runs what the backend runs.
    image = k8s.running_image(api, t.namespace, [("job", t.migration_job), ("deployment", opts.backend_name)])
    if image is None:
        warn(f"no running migration Job or backend in {t.namespace} to take the image from; using {opts.image}")
    k8s.run_job(api, docs[name], t.namespace, image, timeout, say, warn)


# ---------------------------------------------------------------- doctor, health-check

def service_options(func):
    func = click.option("--backend-url", metavar="URL", help="The backend's /health, e.g. http://localhost:8080/health.")(func)
    func = click.option("--redis-url", metavar="URL", help="Redis to PING, e.g. redis://localhost:6379.")(func)
    func = click.option("--migrations", "migrations_dir", envvar="DBCTL_MIGRATIONS", default="migrations",
                        show_default=True, help="Migrations directory [env DBCTL_MIGRATIONS].", cls=Setting)(func)
    return func


def _report(title: str, checks) -> None:
    from dbctl.devenv.doctor import FAIL

    say(title)
    for check in checks:
        say("  " + check.line())
    failed = [c.name for c in checks if c.state == FAIL]
    if failed:
        raise CheckFailed(f"{len(failed)} check(s) failed: {', '.join(failed)}; see the fixes above")
    say(f"all {len(checks)} checks passed" if checks else "nothing to check")


@click.command("doctor")
@target_options
@service_options
def doctor_cmd(migrations_dir, redis_url, backend_url, **target):
    """dev-setup: check the whole environment; each line says ok, warn or FAIL and how to fix it.

    Checks the tools, the kube context and namespace (--cluster), PostgreSQL, the migrations,
    Redis and the backend's /health. Exit 1 when anything failed.
    """
    from dbctl.devenv import doctor as devenv

    t = make_target(**target)
    _report(f"dev-setup: checking {t.describe()}", devenv.doctor(t, migrations_dir, redis_url, backend_url))


@click.command("health-check")
@target_options
@service_options
def health_cmd(migrations_dir, redis_url, backend_url, **target):
    """health-check: every service's health: PostgreSQL and the schema, Redis, the backend's /health."""
    from dbctl.devenv import doctor as devenv

    t = make_target(**target)
    _report(f"health-check: {t.describe()}", devenv.health(t, migrations_dir, redis_url, backend_url))
