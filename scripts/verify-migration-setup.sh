#!/bin/bash
# Checks the migration setup and the whole dev environment (the dev-setup trigger):
# tools, kube context and namespace (with --cluster), PostgreSQL, migrations, Redis, the backend.
# Each line says ok/warn/FAIL and how to fix it; exit 1 when anything failed.
#   ./scripts/verify-migration-setup.sh                 # the local environment (make up / --no-cluster)
#   ./scripts/verify-migration-setup.sh --cluster       # the Kubernetes environment (tilt up)
set -euo pipefail
cd "$(dirname "$0")/.."
DBCTL=dbctl
[ -x .venv/bin/dbctl ] && DBCTL=.venv/bin/dbctl
exec "$DBCTL" doctor --backend-url http://localhost:8080/health --redis-url redis://localhost:6379 "$@"
