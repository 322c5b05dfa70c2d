#!/usr/bin/env bash
# Test the migration Job in isolation.
#   With a cluster (kubectl reaches one): apply k8s/dev/, re-create the Job, wait for it, show its logs.
#   Without one: run the Job's container command and env, read from the rendered YAML, against the
#   local PostgreSQL of `make up` (dbctl local).
set -euo pipefail
cd "$(dirname "$0")/.."
DBCTL="${DBCTL:-.venv/bin/dbctl}"
NS="${NAMESPACE:-kiro-dev}"
JOB=database-migration

if command -v kubectl >/dev/null && kubectl get namespaces --request-timeout=5s >/dev/null 2>&1; then
  kubectl apply -f k8s/dev/dev-manifests.yaml
  kubectl delete job "$JOB" -n "$NS" --ignore-not-found --wait=true
  kubectl apply -f k8s/dev/migration-job.yaml
  if ! kubectl wait --for=condition=complete "job/$JOB" -n "$NS" --timeout=300s; then
    kubectl describe job "$JOB" -n "$NS"
    kubectl logs "job/$JOB" -n "$NS" --all-containers || true
    exit 1
  fi
  kubectl logs "job/$JOB" -n "$NS"
else
  echo "no cluster reachable: running the $JOB container's command locally" >&2
  "$DBCTL" local start
  DATABASE_URL="$("$DBCTL" local url --show-password)" "$(dirname "$DBCTL")/python" -m dbctl.k8s.render run "$JOB" migrate
fi
