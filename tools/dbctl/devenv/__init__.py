"""The local development environment: the embedded PostgreSQL (local_postgres),
`dbctl doctor` and `health-check` (doctor), the backend's /health server
(health_server), and waiting for PostgreSQL and Redis (waiting).

Imports: the engine, checks, devdata, k8s and the foundation.
"""
