"""Read and validate a migrations directory exactly as sqlx 0.8 resolves it.

sqlx splits a file name at its first `_`: a name without one, or whose rest
does not end in `.sql`, is not a migration and is ignored (`schema.sql`,
`README.md`). The part before the `_` must parse as a signed 64-bit integer
(Rust's `i64`: an optional sign, digits, leading zeros allowed, 0 allowed), or
the whole directory is refused. `.up.sql` / `.down.sql` make a reversible
pair; the description is the rest without that suffix (repeated suffixes all
stripped, as sqlx's `trim_end_matches` does) with `_` turned to spaces, and may
be empty. The checksum is SHA-384 of the raw bytes. A file whose bytes start
exactly with `-- no-transaction` runs outside a transaction.

Files are kept as the bytes on disk (never a decoded copy beside them); one
larger than LARGE_FILE is mapped from the file instead of read, so its pages
are the kernel's page cache, which it can drop again, not memory of ours.
`Migration.sql` decodes on demand for the few callers that want text (lint,
drift).

The lexical scan below (statement boundaries, a file's own transaction control,
whether it ends outside any quote) is ours: a few regular expressions over the
bytes, one statement at a time, so memory does not grow with the file.
PostgreSQL's own scanner (pglast) builds a token list for the whole file,
about 16 bytes of memory per byte of SQL. tests/test_sqlx_scan.py compares the
two on generated SQL.

Nothing here touches the database, so every problem with the files is found
before connecting.
"""

from __future__ import annotations

import codecs
import hashlib
import mmap
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

from dbctl.errors import SourceError

NO_TX_DIRECTIVE = "-- no-transaction"
_NO_TX = NO_TX_DIRECTIVE.encode()
LARGE_FILE = 1 << 20  # bytes; larger files are mapped (mmap), not read
MIN_VERSION, MAX_VERSION = -(2**63), 2**63 - 1  # sqlx stores the version as BIGINT

SIMPLE, UP, DOWN = "simple", "up", "down"
_SUFFIXES = {UP: ".up.sql", DOWN: ".down.sql", SIMPLE: ".sql"}
_VERSION_RE = re.compile(r"[+-]?[0-9]+")  # what Rust's i64::from_str accepts


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    kind: str  # SIMPLE, UP or DOWN
    path: Path
    raw: bytes | mmap.mmap  # the file's bytes, exactly what is sent to PostgreSQL (mapped when large)
    checksum: bytes
    no_tx: bool

    @property
    def sql(self) -> str:
        """The file as text (decoded on each call: large files are only ever kept as bytes)."""
        return bytes(self.raw).decode("utf-8")

    @property
    def label(self) -> str:
        """How messages name it: the file name, which people can open."""
        return self.path.name

    def line_at(self, byte_offset: int) -> int:
        return count_newlines(self.raw, 0, byte_offset) + 1


@dataclass
class MigrationSet:
    directory: Path
    ups: list[Migration] = field(default_factory=list)  # simple and .up, by version
    downs: dict[int, Migration] = field(default_factory=dict)
    # Down files sharing a version with another down file: sqlx's run ignores them (so does migrate),
    # its undo would run both; rollback refuses to revert such a version.
    duplicate_downs: dict[int, list[str]] = field(default_factory=dict)

    def by_version(self) -> dict[int, Migration]:
        return {m.version: m for m in self.ups}

    @property
    def width(self) -> int:
        """Digits used by existing file names, so new ones sort the same way."""
        return max((len(m.path.name.split("_", 1)[0].lstrip("+-")) for m in self.ups), default=3)


def checksum(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()


def parse_name(name: str) -> tuple[int, str, str] | None:
    """(version, description, kind) for a migration file name, as sqlx reads it.

    None for a file sqlx ignores; SourceError for one sqlx refuses (the whole
    directory then fails to load, in sqlx as here).
    """
    prefix, sep, rest = name.partition("_")
    if not sep or not rest.endswith(".sql"):
        return None
    if not _VERSION_RE.fullmatch(prefix) or not MIN_VERSION <= int(prefix) <= MAX_VERSION:
        raise SourceError(
            f"{name}: expected an integer version prefix (a 64-bit integer), e.g. 001_create_users.sql; "
            "rename the file, or move it out of the migrations directory (sqlx reads every *_*.sql file there)"
        )
    kind = UP if rest.endswith(_SUFFIXES[UP]) else DOWN if rest.endswith(_SUFFIXES[DOWN]) else SIMPLE
    suffix = _SUFFIXES[kind]
    while rest.endswith(suffix):
        rest = rest[: -len(suffix)]
    return int(prefix), rest.replace("_", " "), kind


def read_migration(path: Path) -> Migration | None:
    parsed = parse_name(_display_name(path.name))
    if parsed is None:
        return None
    version, description, kind = parsed
    try:
        raw = _read(path)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the file ({exc.strerror}); check its permissions") from None
    _check_utf8(path, raw)
    migration = Migration(
        version=version,
        description=description,
        kind=kind,
        path=path,
        raw=raw,
        checksum=checksum(raw),
        no_tx=raw[:len(_NO_TX)] == _NO_TX,
    )
    release(raw)
    return migration


def _read(path: Path) -> bytes | mmap.mmap:
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size > LARGE_FILE:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return f.read()


def release(raw) -> None:
    """Unmap the pages of a mapped file read so far: they stay in the page cache (a later read maps
    them again, cheaply) but stop counting as this process's memory."""
    if isinstance(raw, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        raw.madvise(mmap.MADV_DONTNEED)


def count_newlines(raw, start: int, end: int, chunk: int = 1 << 20) -> int:
    """Newlines in raw[start:end] (bytes, a mapped file, or text), a piece at a time."""
    newline = "\n" if isinstance(raw, str) else b"\n"
    return sum(raw[at:min(at + chunk, end)].count(newline) for at in range(start, end, chunk))


def _display_name(name: str) -> str:
    """The name as sqlx sees it: bytes that are not UTF-8 become U+FFFD (Rust's to_string_lossy)."""
    return os.fsencode(name).decode("utf-8", "replace")


def _check_utf8(path: Path, raw: bytes, chunk: int = 1 << 20) -> None:
    """Refuse a file that is not UTF-8, decoding a piece at a time (no text copy of a large file)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(raw)
    for start in range(0, max(len(raw), 1), chunk):
        pending = len(decoder.getstate()[0])  # bytes of a character cut by the previous piece
        try:
            decoder.decode(view[start:start + chunk], final=start + chunk >= len(raw))
        except UnicodeDecodeError as exc:
            offset = start - pending + exc.start
            line = count_newlines(raw, 0, offset) + 1
            raise SourceError(
                f"{path}:{line}: not valid UTF-8 (byte 0x{raw[offset]:02x} at offset {offset}); "
                "save the file as UTF-8"
            ) from None


def refuse_nul(migration: Migration) -> None:
    """A NUL byte ends the query text PostgreSQL receives: refuse the file rather than run half of it."""
    at = migration.raw.find(b"\0")
    release(migration.raw)
    if at >= 0:
        raise SourceError(
            f"{migration.path}:{migration.line_at(at)}: contains a NUL byte (offset {at}); PostgreSQL cannot "
            "receive it in a query (sqlx fails on it too); remove it, e.g. tr -d '\\000'"
        )


def load_migrations(directory: str | os.PathLike) -> MigrationSet:
    """Every migration in `directory`, validated; raises SourceError naming the file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SourceError(
            f"migrations directory {directory} does not exist; "
            "pass --migrations DIR or set DBCTL_MIGRATIONS"
        )
    result = MigrationSet(directory=directory)
    seen: dict[tuple[int, str], Migration] = {}
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        try:
            is_file = os.stat(entry.path).st_mode & 0o170000 == 0o100000  # follows links, like sqlx
        except OSError as exc:
            raise SourceError(f"{entry.path}: cannot read it ({exc.strerror}); "
                              "fix or remove it (a broken link stops sqlx too)") from None
        if not is_file:
            continue
        migration = read_migration(Path(entry.path))
        if migration is None:
            continue
        slot = (migration.version, DOWN if migration.kind == DOWN else UP)
        if slot in seen and migration.kind == DOWN:
            result.duplicate_downs.setdefault(migration.version, [seen[slot].path.name]).append(migration.path.name)
            continue
        if slot in seen:
            raise SourceError(
                f"{seen[slot].path.name} and {migration.path.name} share version {migration.version}; "
                "give one of them a new version number"
            )
        seen[slot] = migration
        if migration.kind == DOWN:
            result.downs[migration.version] = migration
        else:
            refuse_nul(migration)
            result.ups.append(migration)
    result.ups.sort(key=lambda m: m.version)
    return result


def new_migration_paths(migrations: MigrationSet, description: str, reversible: bool) -> list[Path]:
    """File names for the next migration: next version, same zero-padding as the rest."""
    slug = re.sub(r"[^a-z0-9]+", "_", description.strip().lower()).strip("_")
    if not slug:
        raise SourceError(f"description {description!r} has no letters or digits; e.g. dbctl new add_user_avatars")
    version = max((m.version for m in migrations.ups), default=0) + 1
    if version > MAX_VERSION:  # a file named past BIGINT would make the whole directory unreadable
        raise SourceError(f"the newest migration has version {version - 1}, the largest a BIGINT holds: there is "
                          "no next version; use smaller versions (001, 002... or a timestamp such as 20250101120000)")
    stem = f"{version:0{migrations.width}d}_{slug}"
    suffixes = (".up.sql", ".down.sql") if reversible else (".sql",)
    return [migrations.directory / (stem + s) for s in suffixes]


# ---------------------------------------------------------------- the lexical scan

class Statement(NamedTuple):
    start: int  # byte offset of the statement's first token (after comments and blank space)
    end: int  # byte offset just after its last token (its `;`, when it has one)
    line: int  # line of `start`, 1-based
    head: tuple[bytes, ...]  # its first two words, upper-cased (b"" for a token that is not a word)
    stdio: bool = False  # the word STDIN or STDOUT appears in it (outside quotes)

    @property
    def transaction_control(self) -> str | None:
        """The statement's name when it ends the surrounding transaction (COMMIT, ROLLBACK...), else None."""
        first, second = (self.head + (b"", b""))[:2]
        if first in (b"COMMIT", b"END", b"ABORT") and second != b"PREPARED":
            return first.decode()
        if first == b"ROLLBACK" and second not in (b"TO", b"PREPARED"):
            return "ROLLBACK"
        if first == b"PREPARE" and second == b"TRANSACTION":
            return "PREPARE TRANSACTION"
        return None

    @property
    def copies_through_client(self) -> bool:
        """COPY ... FROM STDIN / TO STDOUT: needs the COPY sub-protocol, which a migration query has not."""
        return self.head[:1] == (b"COPY",) and self.stdio


_TOKEN_PATTERN = r"""
    (?P<space>[ \t\n\r\f\v]+)
  | (?P<comment>--[^\n]*)
  | (?P<block>/\*)
  | (?P<string>[eE]'[^'\\]*(?:(?:\\.|'')[^'\\]*)*'|'[^']*(?:''[^']*)*'|"[^"]*(?:""[^"]*)*")
  | (?P<open_quote>[eE]?'|")
  | (?P<dollar>\$(?:[A-Za-z_HIGH][A-Za-z0-9_HIGH]*)?\$)
  | (?P<word>[A-Za-z_HIGH][A-Za-z0-9_$HIGH]*)
  | (?P<semi>;)
  | (?P<paren>[()])
  | (?P<other>[^ \t\n\r\f\v;()'"$/A-Za-z_HIGH-]+|.)
"""
# The same scanner over bytes (files) and over text (seeds); non-ASCII characters are identifier characters.
_TOKEN = {bytes: re.compile(_TOKEN_PATTERN.replace("HIGH", r"\x80-\xff").encode(), re.X | re.S),
          str: re.compile(_TOKEN_PATTERN.replace("HIGH", r"\u0080-\U0010ffff"), re.X | re.S)}
_BLOCK_EDGE = {bytes: re.compile(rb"/\*|\*/"), str: re.compile(r"/\*|\*/")}
# A routine with a SQL-standard body (CREATE [OR REPLACE] FUNCTION|PROCEDURE ... BEGIN ATOMIC ... END):
# its inner `;` do not end the statement (psql counts BEGIN/CASE/END the same way).
_ROUTINE_HEADS = ((b"CREATE", b"FUNCTION"), (b"CREATE", b"PROCEDURE"), (b"CREATE", b"OR", b"REPLACE", b"FUNCTION"),
                  (b"CREATE", b"OR", b"REPLACE", b"PROCEDURE"))


class Scan:
    """The statements of a file, one at a time; after iterating, `closed` says whether the file
    ends outside any quote, comment, parenthesis or routine body (so text appended to it stays apart)."""

    def __init__(self, raw: bytes | str):
        self.raw = raw
        self.closed = True

    def __iter__(self) -> Iterator[Statement]:
        raw, n, pos, line, line_pos = self.raw, len(self.raw), 0, 1, 0
        text = isinstance(raw, str)
        token = _TOKEN[str if text else bytes]
        start, words, tokens, parens, body, stdio = -1, [], 0, 0, 0, False
        last_end = 0
        while pos < n:
            m = token.match(raw, pos)
            kind, end = m.lastgroup, m.end()
            if kind in ("space", "comment"):
                pos = end
                continue
            if kind == "block":
                end = _block_comment_end(raw, pos)
                if end < 0:
                    break
                pos = end
                continue
            if kind == "open_quote":
                break
            if kind == "dollar":
                close = raw.find(m.group(), end)
                if close < 0:
                    break
                end = close + len(m.group())
            if start < 0:
                start, words, tokens, parens, body, stdio = pos, [], 0, 0, 0, False
            tokens += 1
            if kind == "semi" and parens == 0 and body == 0:
                if tokens > 1:
                    line += count_newlines(raw, line_pos, start)
                    line_pos = start
                    yield Statement(start, end, line, tuple(words[:2]), stdio)
                start, last_end, pos = -1, end, end
                continue
            if kind == "word":
                word = m.group().upper()
                if text:
                    word = word.encode()
                if len(words) < 4:
                    words.append(word)
                if word in (b"STDIN", b"STDOUT"):
                    stdio = True
                if parens == 0 and (tuple(words[:2]) in _ROUTINE_HEADS or tuple(words[:4]) in _ROUTINE_HEADS):
                    if word == b"BEGIN" and len(words) > 1:
                        body += 1
                    elif word == b"CASE" and body:
                        body += 1
                    elif word == b"END" and body:
                        body -= 1
            else:
                if len(words) < 4:
                    words.append(b"")
                if kind == "paren":
                    parens += 1 if m.group() in ("(", b"(") else -1 if parens else 0
            last_end = end
            pos = end
        else:
            if start >= 0:
                line += count_newlines(raw, line_pos, start)
                yield Statement(start, last_end, line, tuple(words[:2]), stdio)
                self.closed = parens == 0 and body == 0
            return
        # An unterminated quote, comment or dollar quote: PostgreSQL reports it; the rest is one statement.
        self.closed = False
        first = start if start >= 0 else pos
        line += count_newlines(raw, line_pos, first)
        yield Statement(first, n, line, tuple(words[:2]), stdio)


def _block_comment_end(raw: bytes | str, pos: int) -> int:
    """End of the (nested) block comment starting at pos; -1 when it never ends."""
    depth, at = 0, pos
    edge = _BLOCK_EDGE[str if isinstance(raw, str) else bytes]
    while True:
        m = edge.search(raw, at)
        if m is None:
            return -1
        depth += 1 if m.group() in ("/*", b"/*") else -1
        at = m.end()
        if depth == 0:
            return at


def statements(raw: bytes) -> list[Statement]:
    return list(Scan(raw))


class Facts(NamedTuple):
    """What one pass over a file finds that decides how it may run."""

    transaction_control: tuple[int, str] | None  # (line, name) of the first COMMIT/ROLLBACK/END...
    client_copy: int | None  # line of the first COPY ... FROM STDIN / TO STDOUT
    closed: bool  # ends outside any quote, comment, parenthesis or routine body
    statements: int


def lexical_facts(raw: bytes) -> Facts:
    control = copy = None
    scan, count = Scan(raw), 0
    for statement in scan:
        count += 1
        if control is None and statement.transaction_control:
            control = (statement.line, statement.transaction_control)
        if copy is None and statement.copies_through_client:
            copy = statement.line
        if count % 4096 == 0:
            release(raw)
    release(raw)
    return Facts(control, copy, scan.closed, count)


def line_of_character(raw: bytes, char_offset: int, chunk: int = 1 << 20) -> int:
    """The 1-based line of the character at `char_offset` (PostgreSQL counts positions in characters)."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    lines, seen = 1, 0
    for start in range(0, len(raw), chunk):
        text = decoder.decode(raw[start:start + chunk], final=start + chunk >= len(raw))
        if seen + len(text) >= char_offset:
            return lines + text.count("\n", 0, char_offset - seen)
        lines += text.count("\n")
        seen += len(text)
    return lines
