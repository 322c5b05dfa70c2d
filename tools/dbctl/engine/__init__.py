"""The migration engine, one way: files -> plan -> apply -> verify -> status.

source (read migrations/), plan (compare with the history), migrator (lock,
apply, retry), rollback (down files), verify and status. postgres is the one
module that talks to PostgreSQL, over `connection` (psycopg2, the only driver).

Imports: the foundation (dbctl.errors, dbctl.config, dbctl.urls) and itself only.
"""
