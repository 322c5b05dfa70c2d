"""`dbctl render` (the Kubernetes manifests) and `dbctl k8s run-job`. Thin over dbctl.k8s."""

from __future__ import annotations

import click

from dbctl.cli.common import SECONDS, debug_option, say
from dbctl.cli.dev import target_options as dev_target_options

TARGETS = ("migration-job", "dev-manifests", "all")


@click.command("render")
@click.argument("target", required=False, default="all", type=click.Choice(TARGETS))
@click.option("--write", "write_dir", metavar="DIR", type=click.Path(file_okay=False),
              help="Write migration-job.yaml and dev-manifests.yaml into DIR instead of printing.")
@click.option("--options", "options_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="A YAML file of option: value (same names as the flags); flags override it.")
@click.option("--image", help="The app image (dbctl, migrations/, seeds/).  [default: kiro-backend:dev]")
@click.option("--namespace", help="Namespace for everything.  [default: kiro-dev]")
@click.option("--secret-name", help="Secret with the dev credentials.  [default: kiro-db-credentials]")
@click.option("--migration-job-name", help="[default: database-migration]")
@click.option("--seed-job-name", help="[default: database-seed]")
@click.option("--ttl", type=int, help="ttlSecondsAfterFinished of the Jobs.  [default: 86400]")
@click.option("--backoff-limit", type=int, help="Retries of a failed Job pod.  [default: 3]")
@click.option("--active-deadline", type=int, help="activeDeadlineSeconds of the Jobs.  [default: 900]")
@click.option("--memory", help="Memory request and limit of the Jobs.  [default: 128Mi]")
@click.option("--cpu", help="CPU request of the dbctl containers.  [default: 100m]")
@click.option("--cpu-limit", help="CPU limit of the dbctl containers (start-up bursts to it).  [default: 1]")
@click.option("--seed-suspend/--no-seed-suspend", default=None,
              help="Apply the seed Job suspended (kubectl) or runnable (Tilt).  [default: suspended]")
@click.option("--image-pull-policy", type=click.Choice(["Always", "IfNotPresent", "Never"]),
              help="[default: IfNotPresent]")
@click.option("--postgres-image", help="[default: postgres:16-bookworm]")
@click.option("--redis-image", help="[default: redis:7-bookworm]")
@debug_option
def render_cmd(target, write_dir, options_file, **flags):
    """Render the dev manifests: the migration and seed Jobs, and the environment.

    Options are checked before anything is printed or written.
    Example: dbctl render migration-job --image registry.local/kiro-backend:abc123
    """
    from dbctl.k8s import render

    values = render.load_options_file(options_file) if options_file else {}
    values.update({name: value for name, value in flags.items() if value is not None})
    opts = render.make_options(**values)
    if write_dir:
        for path in render.write(write_dir, opts):
            say(f"wrote {path}")
        return
    text = render.render_all(opts) if target == "all" else render.render(target, opts)
    click.echo(text, nl=False)


@click.group("k8s")
def k8s_group():
    """Kubernetes helpers for the Tilt triggers (the current kube context, found as kubectl finds it)."""


@k8s_group.command("run-job")
@click.argument("name")
@dev_target_options
@click.option("--timeout", default=600.0, show_default=True, type=SECONDS, help="Seconds to wait for the Job.")
def run_job_cmd(name, timeout, **target):
    """Delete and re-create a rendered Job (migration or seed), stream its log, wait; exit 1 if it fails."""
    target["cluster"] = True
    from dbctl.cli.dev import make_target, run_job

    run_job(make_target(**target), name, timeout)
