"""The `dbctl` command line: parse, call the library, print. Nothing else.

Commands live in small modules and are imported only when run, so `dbctl
migrate` with nothing to do stays fast. One error boundary (`main`) turns a
DbctlError into `Error: <one line>` and its exit code.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
from contextlib import contextmanager

import click

from dbctl import __version__
from dbctl.cli.common import Setting
from dbctl.errors import EXIT_FAILED, DbctlError

# name -> "module:function"; the module is imported only when the command runs.
COMMANDS = {
    "wait": "dbctl.cli.engine:wait_cmd",
    "migrate": "dbctl.cli.engine:migrate_cmd",
    "verify": "dbctl.cli.engine:verify_cmd",
    "status": "dbctl.cli.engine:status_cmd",
    "new": "dbctl.cli.engine:new_cmd",
    "local": "dbctl.cli.local:local_group",
    "seed": "dbctl.cli.devdata:seed_cmd",
    "reset": "dbctl.cli.devdata:reset_cmd",
    "render": "dbctl.cli.k8s:render_cmd",
    "serve": "dbctl.cli.serve:serve_cmd",
    "drift": "dbctl.cli.checks:drift_cmd",
    "rollback": "dbctl.cli.engine:rollback_cmd",
    "lint": "dbctl.cli.checks:lint_cmd",
    "test": "dbctl.cli.checks:test_cmd",
    "dev": "dbctl.cli.dev:dev_group",
    "doctor": "dbctl.cli.dev:doctor_cmd",
    "health-check": "dbctl.cli.dev:health_cmd",
    "k8s": "dbctl.cli.k8s:k8s_group",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(name for name in COMMANDS if self._load(name) is not None)

    def get_command(self, ctx, name):
        return self._load(name)

    @staticmethod
    def _load(name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            # The import statement's own path, not importlib.import_module: `python -X importtime` (and
            # bench/) then sees the command's module too.
            module = __import__(module_name, fromlist=[attr])
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # a command whose module is not written yet
                return None
            raise
        return getattr(module, attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__)  # not package_name=, which imports importlib.metadata (18 ms)
@click.option("--debug", is_flag=True, envvar="DBCTL_DEBUG", help="Show tracebacks for errors.", cls=Setting)
@click.pass_context
def cli(ctx, debug):
    """Database migrations for the Kiro dev environment (sqlx-compatible).

    Exit codes: 0 success; 1 failed, refused or check not passed;
    2 bad usage or configuration; 130 interrupted by SIGINT (Ctrl-C);
    143 interrupted by SIGTERM.
    """
    ctx.obj = {"debug": debug}


class Interrupted(SystemExit):
    """SIGTERM (Kubernetes deleting a Job's pod) or SIGINT arrived: the running statement is cancelled
    on the server, the engine rolls back, records and releases the lock, main prints one line.

    A SystemExit, not a KeyboardInterrupt: click turns the latter into Abort after printing a blank
    line; connection._wait cancels the running query for both."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


def _raise_interrupted(signum, _frame):
    # Once: a second signal must not break off the cleanup (cancel, rollback, unlock) half-way.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Interrupted(signum)


@contextmanager
def _signals_interrupt():
    """SIGTERM and SIGINT raise Interrupted for the command's duration (restored after: tests call main)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in saved:
        signal.signal(sig, _raise_interrupted)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def main(argv=None) -> None:
    with _signals_interrupt():
        _main(argv)


def run() -> None:
    """The `dbctl` command (the console script, `python -m dbctl`): main(), then whatever is still alive
    is left for the process's end, not collected (gc.freeze): the interpreter's last collection frees
    nothing that exit does not, and costs about 24 M instructions, a sixth of a no-op run."""
    try:
        main()
    finally:
        gc.freeze()


def _main(argv=None) -> None:
    debug = "--debug" in (argv or sys.argv[1:]) or os.environ.get("DBCTL_DEBUG", "") not in ("", "0")
    try:
        cli.main(args=argv, prog_name="dbctl", standalone_mode=False)
    except Interrupted as exc:
        _report_interrupt(exc)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.message = _one_line(exc.message)  # a bad option value may be a URL, or hold control characters
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except KeyboardInterrupt as exc:
        _report_interrupt(exc)
    except DbctlError as exc:
        if debug:
            raise
        from dbctl.urls import mask_url

        click.echo(f"Error: {_one_line(mask_url(str(exc)))}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug or an unforeseen failure: still one line unless --debug
        if debug:
            raise
        from dbctl.urls import mask_url

        if type(exc).__module__.startswith("psycopg"):  # PostgreSQL's answer where no command expected one
            from dbctl.engine.postgres import describe_sql_error

            click.echo(f"Error: {_one_line(mask_url(describe_sql_error(exc)))}", err=True)
            sys.exit(EXIT_FAILED)

        click.echo(
            f"Error: unexpected {type(exc).__name__}: {_one_line(mask_url(str(exc)))} (run with --debug for the traceback)",
            err=True,
        )
        sys.exit(EXIT_FAILED)
    sys.exit(0)


def _report_interrupt(exc: BaseException) -> None:
    """One line: which signal, what the command was doing and what it undid; exit 128 + the signal."""
    signum = getattr(exc, "signum", signal.SIGINT)
    notes = "; ".join(getattr(exc, "__notes__", ()))
    click.echo(f"Error: interrupted by {signal.Signals(signum).name}{' ' + _one_line(notes) if notes else ''}; "
               "run the command again to finish", err=True)
    sys.exit(128 + signum)


def _one_line(exc: BaseException) -> str:
    """One line, passwords masked and control characters escaped (dbctl.urls.printable)."""
    from dbctl.urls import printable

    return printable(" ".join(str(exc).split()), one_line=True)
