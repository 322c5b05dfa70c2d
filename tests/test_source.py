"""Reading migration files the way sqlx does: names, checksums, directives, refusals."""

from __future__ import annotations

import hashlib
import zlib

import pytest

from dbctl.errors import SourceError
from dbctl.engine.postgres import lock_key
from dbctl.engine.source import DOWN, SIMPLE, UP, load_migrations, new_migration_paths, parse_name

# FIPS 180-2 test vector: SHA-384("abc").
SHA384_ABC = (
    "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded163"
    "1a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7"
)


@pytest.mark.parametrize("name, expected", [
    ("001_initial_schema.sql", (1, "initial schema", SIMPLE)),
    ("1_a.sql", (1, "a", SIMPLE)),
    ("20240101120000_add_users.sql", (20240101120000, "add users", SIMPLE)),
    ("0042_add_user_avatars.up.sql", (42, "add user avatars", UP)),
    ("0042_add_user_avatars.down.sql", (42, "add user avatars", DOWN)),
    ("7_with.dots.in_name.sql", (7, "with.dots.in name", SIMPLE)),
    ("9223372036854775807_max.sql", (9223372036854775807, "max", SIMPLE)),
    # What Rust's i64 parser accepts, sqlx accepts: 0, signs, leading zeros.
    ("0_setup.sql", (0, "setup", SIMPLE)),
    ("-1_neg.sql", (-1, "neg", SIMPLE)),
    ("+5_plus.sql", (5, "plus", SIMPLE)),
    ("-9223372036854775808_min.sql", (-9223372036854775808, "min", SIMPLE)),
    # The description may be empty; repeated suffixes are all stripped (trim_end_matches).
    ("3_.sql", (3, "", SIMPLE)),
    ("4_x.up.up.sql", (4, "x.up", UP)),
    ("4_x.up.sql.up.sql", (4, "x", UP)),
    ("5_x.sql.sql", (5, "x", SIMPLE)),
    ("6_x.down.up.sql", (6, "x.down", UP)),
    ("8_café_ü.sql", (8, "café ü", SIMPLE)),
])
def test_names_parse_like_sqlx(name, expected):
    assert parse_name(name) == expected


@pytest.mark.parametrize("name", ["README.md", ".gitkeep", "notes.txt", "schema.sql", "1.sql", "1_x.SQL",
                                  "1_x.sql.bak"])
def test_files_sqlx_ignores_are_ignored(name):
    assert parse_name(name) is None


@pytest.mark.parametrize("name", ["v1_initial.sql", ".001_hidden.sql", "_x.sql", "1 _x.sql", "+_x.sql",
                                  "9223372036854775808_too_big.sql", "1e3_x.sql", "٣_arabic_digit.sql"])
def test_names_sqlx_refuses_are_refused_with_the_file_name(name):
    with pytest.raises(SourceError) as err:
        parse_name(name)
    assert name in str(err.value) and "expected an integer version prefix" in str(err.value)


def test_checksum_is_sha384_of_raw_bytes(tmp_path):
    (tmp_path / "1_abc.sql").write_bytes(b"abc")
    (tmp_path / "2_crlf.sql").write_bytes(b"SELECT 1;\r\n")
    (tmp_path / "3_lf.sql").write_bytes(b"SELECT 1;\n")
    ups = load_migrations(tmp_path).ups
    assert ups[0].checksum.hex() == SHA384_ABC
    # No normalisation: line endings are part of the checksum, as in sqlx.
    assert ups[1].checksum == hashlib.sha384(b"SELECT 1;\r\n").digest()
    assert ups[1].checksum != ups[2].checksum
    assert len(ups[0].checksum) == 48


def test_no_transaction_directive_must_start_the_file(tmp_path):
    (tmp_path / "1_concurrent.sql").write_text("-- no-transaction\nCREATE INDEX CONCURRENTLY i ON t (c);\n")
    (tmp_path / "2_late.sql").write_text("\n-- no-transaction\nSELECT 1;\n")
    (tmp_path / "3_plain.sql").write_text("SELECT 1; -- no-transaction\n")
    no_tx = [m.no_tx for m in load_migrations(tmp_path).ups]
    assert no_tx == [True, False, False]


def test_lock_key_matches_sqlx_formula():
    # CRC-32/ISO-HDLC's check value for "123456789" is 0xCBF43926.
    assert lock_key("123456789") == 0x3D32AD9E * 0xCBF43926
    assert lock_key("kiro") == 0x3D32AD9E * zlib.crc32(b"kiro")
    assert lock_key("kiro") < 2**63  # fits the BIGINT pg_try_advisory_lock takes


def test_migrations_are_sorted_by_version_and_pairs_kept_apart(tmp_path):
    for name in ["10_ten.sql", "2_two.up.sql", "2_two.down.sql", "1_one.sql", "README.md"]:
        (tmp_path / name).write_text("SELECT 1;\n")
    (tmp_path / "subdir").mkdir()
    result = load_migrations(tmp_path)
    assert [m.version for m in result.ups] == [1, 2, 10]
    assert [m.kind for m in result.ups] == [SIMPLE, UP, SIMPLE]
    assert list(result.downs) == [2]


@pytest.mark.parametrize("files, fragment", [
    ({"1_a.sql": "SELECT 1;", "1_b.sql": "SELECT 2;"}, "1_a.sql and 1_b.sql share version 1"),
    ({"01_a.sql": "SELECT 1;", "1_b.sql": "SELECT 2;"}, "share version 1"),
    ({"1_a.sql": "SELECT 1;", "1_a.up.sql": "SELECT 2;"}, "share version 1"),
    ({"1_a.sql": "SELECT 1;\0DROP TABLE x;"}, "1_a.sql:1: contains a NUL byte (offset 9)"),
])
def test_invalid_directories_are_refused_naming_the_file(tmp_path, files, fragment):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(SourceError) as err:
        load_migrations(tmp_path)
    assert fragment in str(err.value)


def test_what_sqlx_accepts_loads(tmp_path):
    files = {"1_empty.sql": "", "2_blank.sql": "  \n\n", "3_orphan.down.sql": "SELECT 1;",
             "4_simple.sql": "SELECT 1;", "4_simple.down.sql": "SELECT 1;", "5_nul.down.sql": "SELECT 1;\0"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = load_migrations(tmp_path)
    assert [m.version for m in result.ups] == [1, 2, 4]
    assert sorted(result.downs) == [3, 4, 5]  # a NUL in a down file is refused when it is about to run


def test_broken_link_is_refused_as_sqlx_refuses_it(tmp_path):
    (tmp_path / "1_a.sql").write_text("SELECT 1;")
    (tmp_path / "README").symlink_to(tmp_path / "nowhere")
    with pytest.raises(SourceError) as err:
        load_migrations(tmp_path)
    assert "README: cannot read it" in str(err.value)


def test_utf8_nul_and_checksum_are_checked_in_one_pass_across_piece_boundaries():
    from dbctl.engine.source import examine

    data = "é€😀".encode() * 7
    found = examine(data, chunk=3)  # characters cut by every piece: fine
    assert found.bad_utf8 is None and found.nul is None and found.checksum == hashlib.sha384(data).digest()
    assert examine("é€".encode() * 3 + b"\n\xff", chunk=4).bad_utf8 == 16
    assert examine(b"SELECT 1;\n\0", chunk=4).nul == 10


def test_non_utf8_file_is_refused_with_line_and_offset(tmp_path):
    (tmp_path / "1_latin1.sql").write_bytes(b"SELECT 1;\nSELECT 'caf\xe9';\n")
    with pytest.raises(SourceError) as err:
        load_migrations(tmp_path)
    assert "1_latin1.sql:2: not valid UTF-8 (byte 0xe9 at offset 21)" in str(err.value)


def test_unreadable_file_is_refused(tmp_path):
    path = tmp_path / "1_secret.sql"
    path.write_text("SELECT 1;")
    path.chmod(0)
    try:
        with open(path, "rb"):
            pytest.skip("running with permissions that read any file (root without DAC restrictions)")
    except PermissionError:
        pass
    with pytest.raises(SourceError) as err:
        load_migrations(tmp_path)
    assert "1_secret.sql: cannot read the file" in str(err.value)


def test_missing_directory_says_how_to_point_at_one(tmp_path):
    with pytest.raises(SourceError) as err:
        load_migrations(tmp_path / "nope")
    assert "does not exist; pass --migrations DIR or set DBCTL_MIGRATIONS" in str(err.value)


def test_new_migration_takes_the_next_version_and_padding(tmp_path):
    (tmp_path / "001_a.sql").write_text("SELECT 1;")
    (tmp_path / "008_b.sql").write_text("SELECT 1;")
    migrations = load_migrations(tmp_path)
    assert [p.name for p in new_migration_paths(migrations, "Add user avatars!", False)] == [
        "009_add_user_avatars.sql"]
    assert [p.name for p in new_migration_paths(migrations, "x", True)] == [
        "009_x.up.sql", "009_x.down.sql"]
    with pytest.raises(SourceError):
        new_migration_paths(migrations, "!!!", False)


def test_a_seed_file_with_a_nul_byte_is_refused_naming_the_line(tmp_path):
    from dbctl.devdata.seeding import read_seed
    from dbctl.errors import ConfigError

    path = tmp_path / "1_users.sql"
    path.write_bytes(b"INSERT INTO t VALUES (1);\nINSERT INTO t VALUES (2);\0 DELETE FROM t;\n")
    with pytest.raises(ConfigError) as err:
        read_seed(path)
    assert f"{path}:2: contains a NUL byte (offset 51)" in str(err.value)


def test_a_large_file_is_read_when_needed_never_mapped_and_reads_the_same(tmp_path):
    from dbctl.engine.source import LARGE_FILE, FileImage, Scan, lexical_facts

    body = b"".join(b"INSERT INTO t VALUES (%d, 'caf\xc3\xa9');\n" % i for i in range(LARGE_FILE // 30))
    (tmp_path / "1_big.sql").write_bytes(b"-- no-transaction\n" + body)
    (tmp_path / "2_small.sql").write_bytes(body[:1000])
    big, small = load_migrations(tmp_path).ups
    assert isinstance(big.raw, FileImage) and isinstance(small.raw, bytes)
    assert big.no_tx and big.checksum == hashlib.sha384(b"-- no-transaction\n" + body).digest()
    facts = lexical_facts(big.raw)
    assert facts.closed and facts.statements == LARGE_FILE // 30 and facts.transaction_control is None
    assert big.line_at(len(big.raw) - 1) == LARGE_FILE // 30 + 1
    whole = b"-- no-transaction\n" + body
    # Scanned a small window at a time, the file's statements are the same as scanned whole.
    assert list(Scan(big.raw, window=4096)) == list(Scan(whole))
