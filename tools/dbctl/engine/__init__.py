"""The migration engine, one way: files -> plan -> apply -> verify -> status.

source (read migrations/), plan (compare with the history), migrator (lock,
apply, retry), rollback (down files), verify and status. postgres is the one
module that talks to PostgreSQL (psycopg 3); postgres_fastpath is the no-op
check of `dbctl migrate` on psycopg2 (see the README for why it is separate).

Imports: the foundation (dbctl.errors, dbctl.config, dbctl.urls) and itself only.
"""
