"""`dbctl seed` against a real PostgreSQL: idempotence, hand edits, one transaction, refusals, status."""

from __future__ import annotations

import json
import os
import shutil

import psycopg
import pytest

from conftest import SEEDS, assert_clean_error, run_dbctl

# Every table the seed files write, and the rows they hold after one seed run.
SEEDED = {
    "users": 2,
    "artists": 3,
    "artist_external_ids": 11,
    "dnp_lists": 2,
    "dnp_entries": 3,
    "community_lists": 2,
    "community_list_items": 3,
    "community_list_subscriptions": 2,
}


def migrate(db, *extra: str) -> None:
    result = run_dbctl("migrate", *extra, env={"DATABASE_URL": db.url})
    assert result.code == 0, result.output


def seed(db, *args: str, env: dict | None = None):
    return run_dbctl("seed", *args, env={"DATABASE_URL": db.url, **(env or {})})


def counts(db) -> dict[str, int]:
    return {table: db.scalar(f"SELECT count(*) FROM {table}") for table in SEEDED}


def snapshot(db) -> dict[str, list]:
    """Every seeded row, whole, in a stable order."""
    return {table: sorted(map(str, db.query(f"SELECT t.* FROM {table} t"))) for table in SEEDED}


def runs(db) -> list[tuple]:
    return db.query("SELECT outcome, inserted, present, refreshed, error, files FROM _dbctl_seed_runs ORDER BY id")


def test_seeding_twice_leaves_the_same_rows(db):
    migrate(db)
    first = seed(db)
    assert first.code == 0, first.output
    assert counts(db) == SEEDED
    assert f"{sum(SEEDED.values())} row(s) inserted, 0 already present" in first.out
    rows = snapshot(db)

    second = seed(db)
    assert second.code == 0, second.output
    assert counts(db) == SEEDED
    assert snapshot(db) == rows  # not even updated_at moved: existing rows are not touched
    assert f"0 row(s) inserted, {sum(SEEDED.values())} already present" in second.out

    recorded = runs(db)
    assert [r[0] for r in recorded] == ["success", "success"]
    assert recorded[0][1] == SEEDED and recorded[0][2] == {t: 0 for t in SEEDED}
    assert recorded[1][1] == {t: 0 for t in SEEDED} and recorded[1][2] == SEEDED
    names = [f["name"] for f in recorded[0][5]]
    assert names == sorted(p.name for p in SEEDS.glob("*.sql"))
    assert all(len(f["sha384"]) == 96 for f in recorded[0][5])


def test_hand_edits_survive_unless_refresh(db):
    migrate(db)
    assert seed(db).code == 0
    db.query("UPDATE users SET display_name = 'Renamed by hand' WHERE email = 'test@example.com'")
    db.query("UPDATE artists SET genres = '{jazz}' WHERE canonical_name = 'Drake'")
    db.query("DELETE FROM dnp_entries WHERE note LIKE '%felony%'")

    kept = seed(db)
    assert kept.code == 0, kept.output
    assert db.scalar("SELECT display_name FROM users WHERE email = 'test@example.com'") == "Renamed by hand"
    assert db.scalar("SELECT genres FROM artists WHERE canonical_name = 'Drake'") == ["jazz"]
    assert counts(db) == SEEDED  # the deleted entry came back: it was missing, not edited
    assert runs(db)[-1][1]["dnp_entries"] == 1

    refreshed = seed(db, "--refresh")
    assert refreshed.code == 0, refreshed.output
    assert db.scalar("SELECT display_name FROM users WHERE email = 'test@example.com'") == "Test User"
    assert db.scalar("SELECT genres FROM artists WHERE canonical_name = 'Drake'") == ["hip hop", "r&b"]
    assert counts(db) == SEEDED
    outcome, inserted, present, restored, _, _ = runs(db)[-1]
    assert inserted == {t: 0 for t in SEEDED} and restored == SEEDED and present == {t: 0 for t in SEEDED}


def test_a_user_registered_by_hand_is_counted_as_present_and_kept(db):
    migrate(db)
    mine = "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG"
    db.query("INSERT INTO users (email, password_hash) VALUES ('dev@example.com', %s)", (mine,))
    result = seed(db)
    assert result.code == 0, result.output
    assert runs(db)[-1][1]["users"] == 1 and runs(db)[-1][2]["users"] == 1
    assert db.scalar("SELECT password_hash FROM users WHERE email = 'dev@example.com'") == mine
    # The rest of the data hangs off the existing account, found by email.
    assert db.scalar("SELECT count(*) FROM dnp_lists l JOIN users u ON u.id = l.user_id "
                     "WHERE u.email = 'dev@example.com'") == 1


def test_an_error_in_the_second_file_leaves_no_seed_rows(db, tmp_path):
    migrate(db)
    seeds = tmp_path / "seeds"
    shutil.copytree(SEEDS, seeds)
    second = sorted(seeds.glob("*.sql"))[1]
    lines = second.read_text().splitlines()
    # Break the second statement of the file: its first one (artists) runs, then this fails.
    index = next(i for i, line in enumerate(lines) if line.startswith("INSERT INTO artist_external_ids"))
    lines[index] = "INSERT INTO artist_external_ids (artist_id, service, no_such_column)"
    second.write_text("\n".join(lines) + "\n")

    result = seed(db, "--seeds", str(seeds))
    assert_clean_error(result, 1, f"{second}:{index + 1}:", 'column "no_such_column"', "does not exist",
                       "rolled back")
    assert counts(db) == {t: 0 for t in SEEDED}
    (outcome, inserted, _, _, error, _), = runs(db)
    assert outcome == "failed" and inserted == {} and "no_such_column" in error


def test_a_constraint_violation_names_the_statement_line(db, tmp_path):
    migrate(db)
    seeds = tmp_path / "seeds"
    shutil.copytree(SEEDS, seeds)
    (seeds / "005_broken.sql").write_text(
        "-- a runtime error: PostgreSQL gives no position, dbctl names the statement\n\n"
        "INSERT INTO users (email, password_hash) VALUES ('x@example.com', 'plain text')\n"
        "ON CONFLICT (email) DO NOTHING;\n"
    )
    result = seed(db, "--seeds", str(seeds))
    assert_clean_error(result, 1, "005_broken.sql:3:", "users_password_hash_check", "23514")
    assert counts(db) == {t: 0 for t in SEEDED}


def test_transaction_control_in_a_seed_file_is_refused_before_connecting(tmp_path):
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "001_x.sql").write_text("SELECT 1;\nCOMMIT;\n")
    result = run_dbctl("seed", "--seeds", str(seeds), env={"DATABASE_URL": "postgresql://u@127.0.0.1:1/x"})
    assert_clean_error(result, 2, "001_x.sql:2:", "one transaction")


def test_missing_or_empty_seeds_directory_is_a_usage_error(tmp_path):
    env = {"DATABASE_URL": "postgresql://u@127.0.0.1:1/x"}
    assert_clean_error(run_dbctl("seed", "--seeds", str(tmp_path / "nope"), env=env), 2, "does not exist")
    assert_clean_error(run_dbctl("seed", env={**env, "DBCTL_SEEDS": str(tmp_path)}), 2, "no .sql files")


def test_seeding_an_unmigrated_database_is_refused(db):
    result = seed(db)
    assert_clean_error(result, 1, "not fully migrated", "001_initial_schema.sql", "008_", "dbctl migrate")
    assert "users" not in db.tables() and "_dbctl_seed_runs" not in db.tables()


def test_seeding_a_partly_migrated_database_names_the_pending_ones(db):
    migrate(db, "--target", "6")
    result = seed(db)
    assert_clean_error(result, 1, "2 pending migration(s)", "007_auth_sessions.sql",
                       "008_audit_logging_and_rate_limiting.sql")
    assert "006_" not in result.err
    assert db.scalar("SELECT count(*) FROM users") == 0


@pytest.mark.parametrize("env, args", [
    ({"DBCTL_ENV": "production"}, ()),
    ({"DBCTL_ENV": "staging"}, ("--refresh",)),
    ({}, ("--env", "production")),
    ({"DBCTL_ENV": "production"}, ("--env", "development")),  # a flag cannot talk production down
    ({"DBCTL_ENV": "PRODUCTION"}, ()),
])
def test_protected_environments_refuse_to_seed(db, env, args):
    migrate(db)
    result = seed(db, *args, env=env)
    assert_clean_error(result, 1, "refusing to seed")
    assert "production" in result.err or "staging" in result.err
    assert db.scalar("SELECT count(*) FROM users") == 0


def test_test_environment_may_seed_and_unknown_ones_are_usage_errors(db):
    migrate(db)
    assert_clean_error(seed(db, env={"DBCTL_ENV": "prod"}), 2, "not one of")
    result = seed(db, env={"DBCTL_ENV": "test"})
    assert result.code == 0, result.output
    assert db.scalar("SELECT environment FROM _dbctl_seed_runs") == "test"


def test_status_shows_the_last_seed_run(db, tmp_path):
    # A database without the runs table (nothing migrated, never seeded) must not break status.
    fresh = run_dbctl("status", "--json", env={"DATABASE_URL": db.url})
    assert fresh.code == 0, fresh.output
    assert json.loads(fresh.out)["last_seed"] is None
    migrate(db)
    text = run_dbctl("status", env={"DATABASE_URL": db.url})
    assert "Last seed:  never" in text.out

    assert seed(db).code == 0
    report = json.loads(run_dbctl("status", "--json", env={"DATABASE_URL": db.url}).out)["last_seed"]
    assert report["outcome"] == "success" and report["environment"] == "development"
    assert report["inserted"] == SEEDED and report["last_success_at"] == report["started_at"]
    text = run_dbctl("status", env={"DATABASE_URL": db.url}).out
    assert f"success: {len(report['files'])} file(s), {sum(SEEDED.values())} row(s) inserted" in text
    assert "_dbctl_seed_runs" not in text  # our own table is not listed among the user's tables

    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "001_bad.sql").write_text("INSERT INTO nowhere VALUES (1) ON CONFLICT DO NOTHING;\n")
    assert seed(db, "--seeds", str(seeds)).code == 1
    report = json.loads(run_dbctl("status", "--json", env={"DATABASE_URL": db.url}).out)["last_seed"]
    assert report["outcome"] == "failed" and 'relation "nowhere" does not exist' in report["error"]
    assert report["last_success_at"] is not None and report["last_success_at"] < report["started_at"]
    text = run_dbctl("status", env={"DATABASE_URL": db.url}).out
    assert "FAILED: " in text and "last successful seed: " in text


def test_seed_hashes_use_argon2id_with_the_documented_parameters(db):
    argon2 = pytest.importorskip("argon2")
    migrate(db)
    assert seed(db).code == 0
    hashes = dict(db.query("SELECT email::text, password_hash FROM users"))
    assert set(hashes) == {"test@example.com", "dev@example.com"}
    hasher = argon2.PasswordHasher()
    for email, stored in hashes.items():
        assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$"), stored
        assert hasher.verify(stored, "password123")
        with pytest.raises(argon2.exceptions.VerifyMismatchError):
            hasher.verify(stored, "password124")
    assert len(set(hashes.values())) == 2  # each user has its own salt


def test_artists_carry_their_external_ids(db):
    migrate(db)
    assert seed(db).code == 0
    ids = dict(db.query(
        "SELECT a.canonical_name || '/' || e.service, e.external_id FROM artists a "
        "JOIN artist_external_ids e ON e.artist_id = a.id"))
    assert ids["Drake/spotify"] == "3TVXtAsR1Inumwj472S9r4"
    assert ids["Kanye West/spotify"] == "5K4W6rqBFWDnAN6FQUkS6x"
    assert ids["Chris Brown/spotify"] == "7bXgB6jMjp9ATFy66eO08Z"
    assert ids["Drake/musicbrainz"] == "9fff2f8a-21e6-47de-a2b8-7f449929d43f"
    assert {name.split("/")[0] for name in ids} == {"Drake", "Kanye West", "Chris Brown"}


def test_local_up_seeds_only_a_fresh_database():
    """`make up` is `dbctl local up`: the first start seeds, later ones leave the data alone."""
    import tempfile

    from conftest import free_port

    root = tempfile.mkdtemp(prefix="dbctl-test-up-")
    os.chmod(root, 0o755)  # the server runs as `postgres` when the tests run as root
    env = {"KIRO_PG_DIR": os.path.join(root, "pg"), "KIRO_PG_PORT": str(free_port())}
    try:
        first = run_dbctl("local", "up", env=env)
        assert first.code == 0, first.output
        assert f"{sum(SEEDED.values())} row(s) inserted" in first.out
        url = run_dbctl("local", "url", "--show-password", env=env).out.strip()
        with psycopg.connect(url) as conn:
            conn.execute("UPDATE users SET display_name = 'mine' WHERE email = 'dev@example.com'")
        second = run_dbctl("local", "up", env=env)
        assert second.code == 0, second.output
        assert "seeding" not in second.out
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM _dbctl_seed_runs").fetchone()[0] == 1
            assert conn.execute("SELECT display_name FROM users WHERE email = 'dev@example.com'").fetchone()[0] == "mine"
    finally:
        run_dbctl("local", "stop", env=env)
        shutil.rmtree(root, ignore_errors=True)


def test_counts_come_from_postgresql_for_do_nothing_and_plain_inserts(db, tmp_path):
    migrate(db)  # 008 already inserts the 'login' policy
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "001_policies.sql").write_text(
        "INSERT INTO rate_limit_policies (name, scope, capacity, refill_per_sec)\n"
        "VALUES ('login', 'ip', 1, 1), ('seed-test', 'ip', 1, 1)\nON CONFLICT DO NOTHING;\n"
        "INSERT INTO health_checks (component, status) VALUES ('seed', 'ok'), ('seed', 'ok');\n"
    )
    result = seed(db, "--seeds", str(seeds))
    assert result.code == 0, result.output
    _, inserted, present, _, _, _ = runs(db)[-1]
    assert inserted == {"rate_limit_policies": 1, "health_checks": 2}
    assert present == {"rate_limit_policies": 1, "health_checks": 0}
    assert db.scalar("SELECT capacity FROM rate_limit_policies WHERE name = 'login'") == 10
    assert "001_policies.sql:4: INSERT INTO health_checks has no ON CONFLICT clause" in result.err


def big_insert(path, rows: int, pad: str, first: int = 0) -> None:
    """One INSERT ... ON CONFLICT of `rows` rows (id, pad), written a row at a time."""
    with open(path, "w") as out:
        out.write("INSERT INTO data (id, pad) VALUES")
        for i in range(first, first + rows):
            out.write(f"{',' if i > first else ''}\n({i}, '{pad}')")
        out.write("\nON CONFLICT (id) DO NOTHING;\n")


def test_a_20_mb_seed_statement_runs_inside_the_seed_jobs_128mib_limit(db, tmp_path):
    """The seed Job's limit is 128Mi; one 20 MB INSERT ... ON CONFLICT must seed inside it (a real memory
    cgroup), twice. When seeding held the file as text plus a copy per statement and one for EXPLAIN,
    it peaked near 6x the file and was killed here; bench/memory.py --seed-only measures it."""
    import subprocess
    import sys

    from conftest import REPO
    from test_crash import memory_cgroup

    group = memory_cgroup(128 * 1024 * 1024)
    if group is None:
        pytest.skip("no writable memory cgroup here (needs root and cgroup v1 memory or v2); bench/memory.py")
    migrations, seeds = tmp_path / "migrations", tmp_path / "seeds"
    migrations.mkdir()
    seeds.mkdir()
    (migrations / "1_data.sql").write_text("CREATE TABLE data (id int PRIMARY KEY, pad text);\n")
    rows = 20_000  # about 1 KB a row
    big_insert(seeds / "1_data.sql", rows, "x" * 1000)
    assert (seeds / "1_data.sql").stat().st_size > 20_000_000
    migrate(db, "--migrations", str(migrations))
    procs = group / "cgroup.procs"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBCTL_", "DATABASE_URL", "PG"))}
    argv = [sys.executable, "-m", "dbctl", "seed", "--migrations", str(migrations), "--seeds", str(seeds),
            "--database-url", db.url]
    try:
        first, second = (subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                                        preexec_fn=lambda: procs.write_text(str(os.getpid())))
                         for _ in range(2))
    finally:
        group.rmdir()
    assert first.returncode == 0, first.stdout[-500:] + first.stderr  # an OOM kill would be -9
    assert f"{rows} row(s) inserted, 0 already present" in first.stdout
    assert second.returncode == 0, second.stdout[-500:] + second.stderr
    assert f"0 row(s) inserted, {rows} already present" in second.stdout
    assert db.scalar("SELECT count(*) FROM data") == rows
    assert db.scalar("SELECT min(length(pad)) FROM data") == 1000


def test_an_error_in_a_large_seed_file_names_its_line(db, tmp_path):
    """A file over 1 MiB is mapped, not read; PostgreSQL's error position (in characters, after the
    EXPLAIN prefix) still comes back as the right line, past multi-byte characters."""
    migrations, seeds = tmp_path / "migrations", tmp_path / "seeds"
    migrations.mkdir()
    seeds.mkdir()
    (migrations / "1_data.sql").write_text("CREATE TABLE data (id int PRIMARY KEY, pad text);\n")
    big_insert(seeds / "1_data.sql", 1500, "é" * 480)  # two bytes a character: byte and character offsets differ
    with open(seeds / "1_data.sql", "a") as out:
        out.write("-- é comment\nINSERT INTO data (id, pad) VALUES\n(-1, 'x'),\n(-2, 'x' 'y')\n"
                  "ON CONFLICT (id) DO NOTHING;\n")
    assert (seeds / "1_data.sql").stat().st_size > 1 << 20
    migrate(db, "--migrations", str(migrations))
    text = (seeds / "1_data.sql").read_text()
    line = text.count("\n", 0, text.index("'x' 'y'")) + 1  # 1506: the INSERT, its 1,500 rows, ON CONFLICT...
    result = seed(db, "--migrations", str(migrations), "--seeds", str(seeds))
    assert_clean_error(result, 1, f"1_data.sql:{line}: ", "syntax error at or near \"'y'\"", "rolled back")
    assert db.scalar("SELECT count(*) FROM data") == 0
