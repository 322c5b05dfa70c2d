"""`dbctl serve`: the stand-in backend, an HTTP server: /livez for liveness, /health (the schema) for readiness."""

from __future__ import annotations

import click

from dbctl import config
from dbctl.cli.common import Setting, TABLE, database_options, say


@click.command("serve")
@database_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 in a pod).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              envvar=["DBCTL_SERVE_PORT", "PORT"], help="Port [env DBCTL_SERVE_PORT or PORT]; 0 picks a free one.", cls=Setting)
@click.option("--table", "tables", multiple=True, metavar="NAME", type=TABLE,
              help="A table /health requires (repeatable) [env DBCTL_CRITICAL_TABLES].")
def serve_cmd(database_url, migrations_dir, host, port, tables):
    """Serve GET /health (readiness): 200 when the schema is ready, 503 with what is wrong otherwise.

    GET /livez (liveness) answers 200 while the process serves, whatever the
    database says. Probes are logged only when they fail or /health becomes
    ready again. Example: dbctl serve --host 0.0.0.0 --port 8080
    """
    import signal
    import threading

    from dbctl.devenv.health_server import KeptConnection, check_health, make_server
    from dbctl.engine.source import load_migrations
    from dbctl.urls import mask_url, require_url

    url = require_url(database_url)
    load_migrations(migrations_dir)  # refuse a bad directory now rather than on every request
    required = list(config.critical_tables(tables))
    session = KeptConnection(url)
    server = make_server(host, port, lambda: check_health(url, migrations_dir, required, session=session))
    bound_host, bound_port = server.server_address[:2]

    def stop(signum, frame):  # SIGTERM from the kubelet: finish requests in flight, then exit 0
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    say(f"serving http://{bound_host}:{bound_port}/health for {mask_url(url)} (migrations: {migrations_dir}; "
        "liveness: /livez)")
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        session.close()
    say("stopped")
