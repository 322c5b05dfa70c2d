"""dbctl: sqlx-compatible PostgreSQL migrations for the Kiro dev environment.

The package, bottom to top (a module imports only from its own layer or below):

    errors, config, urls   foundation: exit codes, settings, password masking
    engine/                read, plan, apply, verify, status, rollback (sqlx's history)
    checks/                drift, lint, `dbctl test`: compare or judge migrations
    devdata/               development data: seed and reset
    k8s/                   manifests (render), Jobs (jobs) over the kubernetes client (cluster)
    devenv/                the local environment: embedded server, doctor, health-check, /health
    cli/                   the command line: one thin module per command group

tests/test_architecture.py holds these directions.
"""

__version__ = "0.1.0"
