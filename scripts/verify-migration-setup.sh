#!/bin/bash
# Checks the migration setup and the whole dev environment (the dev-setup trigger):
# tools, kube context and namespace (in the cluster), PostgreSQL, migrations, Redis, the backend.
# Each line says ok/warn/FAIL and how to fix it; exit 1 when anything failed.
#   ./scripts/verify-migration-setup.sh                 # the cluster when kubectl reaches one with the
#                                                       # kiro-dev namespace (tilt up), else the local environment
#   ./scripts/verify-migration-setup.sh --cluster       # the Kubernetes environment (tilt up's port-forwards)
#   ./scripts/verify-migration-setup.sh --local         # the local environment (make up / --no-cluster)
set -euo pipefail
cd "$(dirname "$0")/.."
DBCTL=dbctl
[ -x .venv/bin/dbctl ] && DBCTL=.venv/bin/dbctl

args=() mode=auto
for arg in "$@"; do
  case "$arg" in
    --local) mode=local ;;
    --cluster) mode=cluster; args+=("$arg") ;;
    *) args+=("$arg") ;;
  esac
done
# The seed's instructions run it bare, meaning the cluster: choose it when kiro-dev is there.
if [ "$mode" = auto ] && command -v kubectl >/dev/null &&
   kubectl get namespace "${NAMESPACE:-kiro-dev}" --request-timeout=5s >/dev/null 2>&1; then
  args=(--cluster "${args[@]}")
fi
exec "$DBCTL" doctor --backend-url http://localhost:8080/health --redis-url redis://localhost:6379 "${args[@]}"
