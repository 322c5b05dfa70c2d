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
larger than LARGE_FILE is kept as a FileImage: its open descriptor, read a
piece at a time when needed, so it costs no memory of ours. It is never
mapped: a file truncated under a mapping kills the process with SIGBUS. What
is sent of it later is read again, so `Sending` checks that those bytes are
the ones checksummed at load, before anything of them can commit.
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
import functools
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

from dbctl.errors import DbctlError, SourceError
from dbctl.text import quoted

NO_TX_DIRECTIVE = "-- no-transaction"
_NO_TX = NO_TX_DIRECTIVE.encode()
LARGE_FILE = 1 << 20  # bytes; larger files are read a piece at a time (FileImage), when needed
MIN_VERSION, MAX_VERSION = -(2**63), 2**63 - 1  # sqlx stores the version as BIGINT

SIMPLE, UP, DOWN = "simple", "up", "down"
_SUFFIXES = {UP: ".up.sql", DOWN: ".down.sql", SIMPLE: ".sql"}
_VERSION_RE = re.compile(r"[+-]?[0-9]+")  # what Rust's i64::from_str accepts


class Migration(NamedTuple):
    version: int
    description: str
    kind: str  # SIMPLE, UP or DOWN
    path: Path
    raw: bytes | FileImage  # the file's bytes, exactly what is sent to PostgreSQL
    checksum: bytes
    no_tx: bool
    nul_at: int | None = None  # offset of a NUL byte, found in the checksum's pass

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
        raw = read_file(path)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the file ({exc.strerror}); check its permissions") from None
    found = examine(raw)
    if found.bad_utf8 is not None:
        offset = found.bad_utf8
        raise SourceError(
            f"{path}:{count_newlines(raw, 0, offset) + 1}: not valid UTF-8 (byte 0x{raw[offset]:02x} at offset "
            f"{offset}); save the file as UTF-8"
        )
    return Migration(version=version, description=description, kind=kind, path=path, raw=raw,
                     checksum=found.checksum, no_tx=found.head.startswith(_NO_TX), nul_at=found.nul)


class FileImage:
    """A large file's bytes, read from its open descriptor when they are needed (`image[a:b]` is bytes).

    Reads stop at the size the file had when it was opened: bytes written after it
    are not part of what was checksummed. A shorter read means the file was cut
    since; `Sending` finds that, and any other change, before it can commit.
    """

    def __init__(self, fd: int, size: int):
        self._fd, self.size = fd, size

    def __del__(self):
        os.close(self._fd)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key):
        if isinstance(key, int):
            byte = self[key:key + 1]
            if not byte:
                raise IndexError("offset beyond the end of the file")
            return byte[0]
        start, stop, _ = key.indices(self.size)
        pieces, at = [], start
        while at < stop:
            piece = os.pread(self._fd, min(stop - at, 1 << 30), at)
            if not piece:
                break  # cut short since it was opened
            pieces.append(piece)
            at += len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def __bytes__(self) -> bytes:
        return self[:]

    def find(self, sub: bytes, start: int = 0, chunk: int = 1 << 20) -> int:
        for at in range(start, self.size, chunk):
            piece = self[at:at + chunk + len(sub) - 1]
            found = piece.find(sub)
            if found >= 0:
                return at + found
        return -1


def read_file(path: Path) -> bytes | FileImage:
    """The file's bytes: read whole when small, a FileImage over its open descriptor when large."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size > LARGE_FILE:
            return FileImage(fd, size)
        data = os.read(fd, size + 1)  # all of it in one call; a byte more means it grew since the fstat
        if len(data) > size:
            while piece := os.read(fd, 1 << 16):
                data += piece
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return data


class Examined(NamedTuple):
    checksum: bytes  # SHA-384 of the bytes examined
    bad_utf8: int | None  # offset of the first byte that is not UTF-8
    nul: int | None  # offset of the first NUL byte
    head: bytes  # the first bytes (for the -- no-transaction directive)


def examine(raw, chunk: int = 1 << 20) -> Examined:
    """Checksum, UTF-8 and NUL bytes in ONE pass over the same pieces: what is checked is what is hashed
    (a large file read twice could change between the reads). No text copy of a large file is made."""
    if isinstance(raw, bytes) and len(raw) <= chunk:  # a file read whole: no pieces to carry between
        head = raw[:len(_NO_TX)]
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Examined(b"", exc.start, None, head)
        nul = raw.find(b"\0")
        return Examined(hashlib.sha384(raw).digest(), None, nul if nul >= 0 else None, head)
    decoder = codecs.getincrementaldecoder("utf-8")()
    digest = hashlib.sha384()
    nul = bad = None
    head = b""
    for start in range(0, max(len(raw), 1), chunk):
        piece = raw[start:start + chunk]
        if start == 0:
            head = piece[:len(_NO_TX)]
        pending = len(decoder.getstate()[0])  # bytes of a character cut by the previous piece
        try:
            decoder.decode(piece, final=start + chunk >= len(raw))
        except UnicodeDecodeError as exc:
            bad = start - pending + exc.start
            return Examined(b"", bad, nul, head)
        if nul is None and (at := piece.find(b"\0")) >= 0:
            nul = start + at
        digest.update(piece)
    return Examined(digest.digest(), bad, nul, head)


class FileChanged(DbctlError):
    """A file's bytes, read again to be sent, are not the ones checksummed when it was loaded."""


class Sending:
    """Reads a loaded file again to send it, in order and each byte once, and proves the bytes are those
    checksummed at load.

    Each piece is scanned before it is sent (`take` refuses a piece with a statement that
    would end the transaction, or the wrong number of statements); `finish` reads the
    rest and compares the SHA-384 of everything taken with the checksum, and must be
    called before the transaction commits (before a no-transaction file is sent at all).
    """

    def __init__(self, path: Path, raw, checksum_: bytes):
        self.path, self.raw, self.expected = path, raw, checksum_
        self.at = 0
        self._digest = hashlib.sha384()

    def changed(self, why: str) -> FileChanged:
        return FileChanged(f"{self.path} changed on disk while dbctl was running ({why}), so it is not what "
                           f"was checked and checksummed (sha384 {self.expected.hex()[:16]}…)")

    def take(self, end: int, statements: int | None = None) -> bytes:
        """raw[at:end], hashed; `statements`, when given, is how many statements the piece must hold."""
        piece = self.raw[self.at:end]
        if len(piece) != end - self.at:
            raise self.changed(f"it is shorter than the {len(self.raw)} bytes it had")
        self.at = end
        self._digest.update(piece)
        scan = Scan(piece)
        found = list(scan)
        control = next((s for s in found if s.transaction_control), None)
        if control is not None:
            raise self.changed(f"a {control.transaction_control} appeared in it")
        if statements is not None and len(found) != statements:
            raise self.changed("its statements moved")
        return piece

    def finish(self) -> bytes:
        """The rest of the file, taken; FileChanged unless everything taken is the checksummed file."""
        rest = self.take(len(self.raw))
        if self._digest.digest() != self.expected:
            raise self.changed(f"its sha384 is now {self._digest.hexdigest()[:16]}…")
        return rest


def contents(path: Path, raw, checksum_: bytes) -> bytes:
    """The whole file as one query: its bytes, checked against the checksum (FileChanged) when they were
    read again; bytes kept in memory since the load are those checksummed."""
    if isinstance(raw, bytes):
        return raw
    sending = Sending(path, raw, checksum_)
    data = sending.raw[:]
    if len(data) != len(raw):
        raise sending.changed(f"it is shorter than the {len(raw)} bytes it had")
    if checksum(data) != checksum_:
        raise sending.changed(f"its sha384 is now {checksum(data).hex()[:16]}…")
    return data


def count_newlines(raw, start: int, end: int, chunk: int = 1 << 20) -> int:
    """Newlines in raw[start:end] (bytes, a FileImage, or text), a piece at a time."""
    newline = "\n" if isinstance(raw, str) else b"\n"
    return sum(raw[at:min(at + chunk, end)].count(newline) for at in range(start, end, chunk))


def _display_name(name: str) -> str:
    """The name as sqlx sees it: bytes that are not UTF-8 become U+FFFD (Rust's to_string_lossy)."""
    return os.fsencode(name).decode("utf-8", "replace")


def refuse_nul(migration: Migration) -> None:
    """A NUL byte ends the query text PostgreSQL receives: refuse the file rather than run half of it."""
    at = migration.nul_at
    if at is not None:
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
        try:  # follows links, like sqlx; a plain entry's type is known from the directory itself
            is_file = entry.is_file() if not entry.is_symlink() else \
                os.stat(entry.path).st_mode & 0o170000 == 0o100000
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
        raise SourceError(f"description {quoted(description)} has no letters or digits; e.g. dbctl new add_user_avatars")
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
    # Its first four tokens: words upper-cased, b"'" for a string constant (quoted or dollar-quoted), b'"'
    # for a quoted identifier, b"" for anything else.
    head: tuple[bytes, ...]
    stdio: bool = False  # the word STDIN or STDOUT appears in it (outside quotes)

    @property
    def transaction_control(self) -> str | None:
        """The statement's name when it ends the surrounding transaction (COMMIT, ROLLBACK...), else None.

        PostgreSQL's grammar: COMMIT|END|ABORT|ROLLBACK [WORK|TRANSACTION] [AND [NO] CHAIN] end it;
        ROLLBACK [WORK|TRANSACTION] TO [SAVEPOINT] name, COMMIT/ROLLBACK PREPARED 'id' do not;
        PREPARE TRANSACTION 'id' does (PREPARE transaction AS ... prepares a statement named transaction).
        """
        first, second, third = (self.head + (b"", b"", b""))[:3]
        if first in (b"COMMIT", b"ROLLBACK") and second == b"PREPARED":
            return None
        if first == b"ROLLBACK" and (second == b"TO" or second in (b"WORK", b"TRANSACTION") and third == b"TO"):
            return None
        if first in (b"COMMIT", b"END", b"ABORT", b"ROLLBACK"):
            return first.decode()
        if first == b"PREPARE" and second == b"TRANSACTION" and third == b"'":
            return "PREPARE TRANSACTION"
        return None

    @property
    def copies_through_client(self) -> bool:
        """COPY ... FROM STDIN / TO STDOUT: needs the COPY sub-protocol, which a migration query has not."""
        return self.head[:1] == (b"COPY",) and self.stdio


# PostgreSQL's lexer (scan.l): a `--` comment ends at a newline, which is \n or \r; whitespace is
# [ \t\n\r\f\v]. The rest follows its rules for quotes, dollar quotes and identifiers.
_TOKEN_PATTERN = r"""
    (?P<space>[ \t\n\r\f\v]+)
  | (?P<comment>--[^\n\r]*)
  | (?P<block>/\*)
  | (?P<string>[eE]'[^'\\]*(?:(?:\\.|'')[^'\\]*)*'|'[^']*(?:''[^']*)*'|"[^"]*(?:""[^"]*)*")
  | (?P<open_quote>[eE]?'|")
  | (?P<dollar>\$(?:[A-Za-z_HIGH][A-Za-z0-9_HIGH]*)?\$)
  | (?P<word>[A-Za-z_HIGH][A-Za-z0-9_$HIGH]*)
  | (?P<semi>;)
  | (?P<paren>[()])
  | (?P<other>[^ \t\n\r\f\v;()'"$/A-Za-z_HIGH-]+|.)
"""
_BLOCK_EDGE = r"/\*|\*/"
# A routine with a SQL-standard body (CREATE [OR REPLACE] FUNCTION|PROCEDURE ... BEGIN ATOMIC ... END):
# its inner `;` do not end the statement. Only BEGIN followed by ATOMIC, outside a body, opens one (begin
# and atomic may be parameter, column or table names); inside it CASE ... END nests.
_ROUTINE_HEADS = ((b"CREATE", b"FUNCTION"), (b"CREATE", b"PROCEDURE"), (b"CREATE", b"OR", b"REPLACE", b"FUNCTION"),
                  (b"CREATE", b"OR", b"REPLACE", b"PROCEDURE"))
_WINDOW = 1 << 20  # bytes of a FileImage scanned at a time (more when one statement is larger)


@functools.cache
def _patterns(kind: type) -> tuple[re.Pattern, re.Pattern]:
    """The token and block comment edge patterns over bytes (files) or text; non-ASCII characters are
    identifier characters. Compiled on first use: the text one takes milliseconds, and a run with nothing
    to apply scans nothing."""
    token = _TOKEN_PATTERN.replace("HIGH", r"\x80-\xff" if kind is bytes else r"\u0080-\U0010ffff")
    edge = _BLOCK_EDGE
    if kind is bytes:
        token, edge = token.encode(), edge.encode()
    return re.compile(token, re.X | re.S), re.compile(edge)


class Scan:
    """The statements of a file, one at a time; after iterating, `closed` says whether the file
    ends outside any quote, comment, parenthesis or routine body (so text appended to it stays apart).

    A FileImage is read a window at a time: a statement (or comment, or quote) that reaches the end
    of the window is scanned again from its start in a larger one, so memory follows the largest
    statement, not the file.
    """

    def __init__(self, raw, window: int = _WINDOW):
        self.raw = raw
        self.closed = True
        self.window = window

    def __iter__(self) -> Iterator[Statement]:
        raw = self.raw
        windowed = isinstance(raw, FileImage)
        text = isinstance(raw, str)
        token, _ = _patterns(str if text else bytes)
        want = self.window
        buf = raw[0:want] if windowed else raw
        base, line, line_pos = 0, 1, 0  # offsets are the file's: buf starts at base
        while True:
            n = len(buf)
            # The end of buf is the end of the file (a short read: the file was cut; Sending finds that).
            eof = not windowed or base + n >= len(raw) or n < want
            restart = yield from self._window(buf, base, n, eof, token, text, line, line_pos)
            if restart is None:
                return
            done, line, line_pos = restart
            # Read again from the last statement's end, twice as much when nothing was found; the old
            # window is dropped first, so a large statement costs one window, not three.
            want = max(self.window, 2 * (base + n - done))
            buf = None
            buf, base = raw[done:done + want], done

    def _window(self, buf, base, n, eof, token, text, line, line_pos):
        """Scan buf; returns None at the end of the file, or (offset, line, line_pos) to go on from there
        with more bytes: the end of the last statement found, before anything cut by the window's end."""
        pos = 0
        start, words, tokens, parens, body, stdio = -1, [], 0, 0, 0, False
        last_end = 0
        done = 0  # end (in buf) of the last statement yielded
        previous = None
        while pos < n:
            m = token.match(buf, pos)
            kind, end = m.lastgroup, m.end()
            if end >= n and not eof:
                break  # the token may go on beyond the window
            if kind in ("space", "comment"):
                pos = end
                continue
            if kind == "block":
                end = _block_comment_end(buf, pos)
                if end < 0:
                    break
                pos = end
                continue
            if kind == "open_quote":
                break
            if kind == "dollar":
                close = buf.find(m.group(), end)
                if close < 0:
                    break
                end = close + len(m.group())
            if start < 0:
                start, words, tokens, parens, body, stdio, previous = pos, [], 0, 0, 0, False, None
            tokens += 1
            if kind == "semi" and parens == 0 and body == 0:
                if tokens > 1:
                    line += count_newlines(buf, line_pos - base, start)
                    line_pos = base + start
                    yield Statement(base + start, base + end, line, tuple(words), stdio)
                start, last_end, pos, done = -1, end, end, end
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
                    if word == b"ATOMIC" and previous == b"BEGIN" and not body:  # bodies do not nest
                        body += 1
                    elif word == b"CASE" and body:
                        body += 1
                    elif word == b"END" and body:
                        body -= 1
                previous = word
            else:
                if len(words) < 4:
                    quoted = m.group()[:1] in ('"', b'"')
                    words.append(b"'" if kind == "dollar" or kind == "string" and not quoted
                                 else b'"' if kind == "string" else b"")
                if kind == "paren":
                    parens += 1 if m.group() in ("(", b"(") else -1 if parens else 0
                previous = None
            last_end = end
            pos = end
        else:
            if not eof:  # a comment or quote closed exactly at the window's end: more may follow
                return base + done, line + count_newlines(buf, line_pos - base, done), base + done
            if start >= 0:
                line += count_newlines(buf, line_pos - base, start)
                yield Statement(base + start, base + last_end, line, tuple(words), stdio)
                self.closed = parens == 0 and body == 0
            return None
        if not eof:  # cut by the window: go on from the last statement's end with more bytes
            return base + done, line + count_newlines(buf, line_pos - base, done), base + done
        # An unterminated quote, comment or dollar quote: PostgreSQL reports it; the rest is one statement.
        self.closed = False
        first, head = (start, tuple(words)) if start >= 0 else (pos, ())  # no words of an earlier statement
        line += count_newlines(buf, line_pos - base, first)
        yield Statement(base + first, base + n, line, head, stdio and start >= 0)
        return None


def _block_comment_end(raw: bytes | str, pos: int) -> int:
    """End of the (nested) block comment starting at pos; -1 when it never ends."""
    depth, at = 0, pos
    _, edge = _patterns(str if isinstance(raw, str) else bytes)
    while True:
        m = edge.search(raw, at)
        if m is None:
            return -1
        depth += 1 if m.group() in ("/*", b"/*") else -1
        at = m.end()
        if depth == 0:
            return at


def batches(raw, limit: int) -> Iterator[Statement]:
    """How a file of several statements is sent in messages of about `limit` bytes: whole statements,
    each message starting where the previous one ended (the first at 0, the comments between
    statements included) and the last ending at the end of the file, so every byte is sent once.
    Each is a Statement spanning its message: its `start`, `end`, and the `line` of its start."""
    start, line, first, end = 0, 1, None, 0
    for statement in Scan(raw):
        if first is not None and statement.end - first.start > limit:
            yield Statement(start, end, line, first.head, first.stdio)
            line += count_newlines(raw, start, end)
            start, first = end, None
        first = first or statement
        end = statement.end
    if first is not None or start < len(raw):
        yield Statement(start, len(raw), line, first.head if first else (), first.stdio if first else False)


class Facts(NamedTuple):
    """What one pass over a file finds that decides how it may run."""

    transaction_control: tuple[int, str] | None  # (line, name) of the first COMMIT/ROLLBACK/END...
    client_copy: int | None  # line of the first COPY ... FROM STDIN / TO STDOUT
    closed: bool  # ends outside any quote, comment, parenthesis or routine body
    statements: int
    rollback: tuple[int, str] | None = None  # (line, name) of the first ROLLBACK or ABORT


def lexical_facts(raw: bytes) -> Facts:
    control = copy = rollback = None
    scan, count = Scan(raw), 0
    for statement in scan:
        count += 1
        name = statement.transaction_control
        if control is None and name:
            control = (statement.line, name)
        if rollback is None and name in ("ROLLBACK", "ABORT"):
            rollback = (statement.line, name)
        if copy is None and statement.copies_through_client:
            copy = statement.line
    return Facts(control, copy, scan.closed, count, rollback)


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
