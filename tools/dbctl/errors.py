"""One exception hierarchy; the CLI turns each into one line and an exit code."""

EXIT_OK = 0
EXIT_FAILED = 1  # a migration failed, a check did not pass, a refusal
EXIT_USAGE = 2  # bad usage or configuration: fix the command or the files


class DbctlError(Exception):
    """Something went wrong; the message says what and what to do."""

    exit_code = EXIT_FAILED


class ConfigError(DbctlError):
    """Bad options, environment or migration files: nothing was touched."""

    exit_code = EXIT_USAGE


class SourceError(ConfigError):
    """The migrations directory holds something that is not a valid migration."""


class ConnectError(DbctlError):
    """PostgreSQL could not be reached, or refused us; `transient` when waiting could help."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class LockTimeout(DbctlError):
    """Another runner held the migration lock for longer than we may wait."""


class Refused(DbctlError):
    """The history and the files disagree; nothing was applied."""


class MigrationFailed(DbctlError):
    """A migration's SQL failed; its transaction was rolled back."""


class CheckFailed(DbctlError):
    """A verification did not pass."""


class KubeconfigError(ConfigError):
    """No kubeconfig, or one that cannot be used (no current context, a missing cluster or user): exit 2."""


class ClusterError(DbctlError):
    """The Kubernetes API refused the request (401, 403, 404, 409...) or did not answer: exit 1."""
