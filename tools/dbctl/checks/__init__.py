"""Checks that compare or judge migrations: drift, lint and `dbctl test`.

drift builds a scratch database from the files and compares catalogs; lint
reads SQL with pglast; migration_test is the CI run of both plus round trips.

Imports: the engine and the foundation.
"""
