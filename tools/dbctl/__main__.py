import signal

# Until main() installs its handlers, Ctrl-C ends the process as SIGTERM does (no traceback from an import).
signal.signal(signal.SIGINT, signal.SIG_DFL)

from dbctl.cli.main import run  # noqa: E402

run()
