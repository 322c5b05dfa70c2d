"""Development data: `dbctl seed` (seeds/*.sql, idempotent, under the migration lock) and `dbctl reset`.

Imports: the engine and the foundation.
"""
