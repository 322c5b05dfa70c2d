"""Generated migration directories through real sqlx and through dbctl, compared as the corpus is.

Hypothesis draws small directories (names with odd versions and suffixes,
simple SQL that sometimes fails, `-- no-transaction`, a file's own
BEGIN/COMMIT, savepoints, CRLF) to find the cases nobody listed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlx_differential import Pair, dbctl_list, describe, observe, same, sqlx_list, write_directory

prefixes = st.sampled_from(["0", "1", "01", "2", "+3", "-1", "007", "10", "x1", "9223372036854775807"])
descriptions = st.text(alphabet="ab_. é", max_size=4)
suffixes = st.sampled_from([".sql", ".sql", ".sql", ".up.sql", ".down.sql", ".txt", ".sql.sql"])
statements = st.sampled_from([
    "CREATE TABLE IF NOT EXISTS t1 (id int PRIMARY KEY)", "CREATE TABLE t2 (id int)",
    "INSERT INTO t1 VALUES (1)", "INSERT INTO t1 VALUES (2) ON CONFLICT DO NOTHING", "SELECT 1/0",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS t1_i ON t1 (id)", "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT s",
    "ROLLBACK TO SAVEPOINT s", "/* note; */ SELECT 'a;b'", "DO $$ BEGIN PERFORM 1; END $$", "SELEC 1",
    "CREATE FUNCTION f1() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END",
])


@st.composite
def directories(draw):
    files = {}
    for _ in range(draw(st.integers(1, 4))):
        name = draw(prefixes) + "_" + draw(descriptions) + draw(suffixes)
        body = ";\n".join(draw(st.lists(statements, max_size=3)))
        text = ("-- no-transaction\n" if draw(st.booleans()) else "") + body + (";\n" if body else "")
        if draw(st.booleans()):
            text = text.replace("\n", "\r\n")
        files[name] = text
    return files


def duplicate_versions(files: dict) -> bool:
    seen = set()
    for name in files:
        prefix, _, rest = name.partition("_")
        if not rest.endswith(".sql") or rest.endswith(".down.sql"):
            continue
        try:
            version = int(prefix)
        except ValueError:
            return False  # both refuse the directory anyway
        if version in seen:
            return True
        seen.add(version)
    return False


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(files=directories())
def test_generated_directories_agree(pg_server, sqlx_oracle, files):
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "migrations"
        write_directory(directory, files)
        pair = Pair(pg_server, sqlx_oracle)
        try:
            fresh = observe(pair.dbctl, True, "fresh")
            sqlx, dbctl = pair.run_sqlx(directory), pair.run_dbctl(directory)
            if duplicate_versions(files):
                # README, Differences from sqlx: duplicate-versions. Both refuse; dbctl before running anything.
                assert not sqlx.ok and not dbctl.ok, describe(sqlx, dbctl)
                assert dbctl.state() == fresh.state(), describe(sqlx, dbctl)
                return
            assert dbctl_list(directory) == sqlx_list(sqlx_oracle, directory)
            if "so dbctl did not record it as applied" in dbctl.message:
                # README, Differences from sqlx: own-rollback. A file whose own ROLLBACK undid the migration's
                # transaction: sqlx records it as applied, dbctl refuses to (what ran before it is the same).
                assert not dbctl.ok, describe(sqlx, dbctl)
                return
            assert same(sqlx, dbctl), describe(sqlx, dbctl)
        finally:
            pair.close()
