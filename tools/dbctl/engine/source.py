"""Read and validate a migrations directory, the way sqlx names and hashes files.

`<VERSION>_<DESCRIPTION>.sql` is a simple migration; `.up.sql` / `.down.sql`
make a reversible pair. Version is the integer prefix, description the rest
with `_` turned to spaces, checksum the SHA-384 of the raw bytes. A file that
starts exactly with `-- no-transaction` runs outside a transaction.

Nothing here touches the database, so every problem with the files is found
before connecting.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from dbctl.errors import SourceError

NO_TX_DIRECTIVE = "-- no-transaction"
MAX_VERSION = 2**63 - 1  # sqlx stores the version as BIGINT

SIMPLE, UP, DOWN = "simple", "up", "down"
_SUFFIXES = ((".up.sql", UP), (".down.sql", DOWN), (".sql", SIMPLE))
_VERSION_RE = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    kind: str  # SIMPLE, UP or DOWN
    path: Path
    sql: str
    checksum: bytes
    no_tx: bool

    @property
    def label(self) -> str:
        """How messages name it: the file name, which people can open."""
        return self.path.name


@dataclass
class MigrationSet:
    directory: Path
    ups: list[Migration] = field(default_factory=list)  # simple and .up, by version
    downs: dict[int, Migration] = field(default_factory=dict)

    def by_version(self) -> dict[int, Migration]:
        return {m.version: m for m in self.ups}

    @property
    def width(self) -> int:
        """Digits used by existing file names, so new ones sort the same way."""
        return max((len(m.path.name.split("_", 1)[0]) for m in self.ups), default=3)


def checksum(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()


def parse_name(name: str) -> tuple[int, str, str] | None:
    """(version, description, kind) for a migration file name.

    None for files that are not SQL (README.md, .gitkeep); SourceError for a
    `.sql` file whose name does not follow the convention.
    """
    if not name.endswith(".sql") or name.startswith("."):
        return None
    prefix, sep, rest = name.partition("_")
    if not sep or not _VERSION_RE.fullmatch(prefix):
        raise SourceError(
            f"{name}: expected an integer version prefix, e.g. 001_create_users.sql; "
            "rename the file (dbctl new DESCRIPTION makes one)"
        )
    version = int(prefix)
    if not 0 < version <= MAX_VERSION:
        raise SourceError(f"{name}: version must be between 1 and {MAX_VERSION}; rename the file")
    kind = next(k for suffix, k in _SUFFIXES if rest.endswith(suffix))
    suffix = next(s for s, k in _SUFFIXES if k == kind)
    description = rest[: -len(suffix)].replace("_", " ")
    if not description.strip():
        raise SourceError(f"{name}: the description after the version is empty; rename the file")
    return version, description, kind


def read_migration(path: Path) -> Migration | None:
    parsed = parse_name(path.name)
    if parsed is None:
        return None
    version, description, kind = parsed
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the file ({exc.strerror}); check its permissions") from None
    try:
        sql = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SourceError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8"
        ) from None
    if not sql.strip():
        raise SourceError(f"{path}: the file is empty; write the migration's SQL or delete the file")
    return Migration(
        version=version,
        description=description,
        kind=kind,
        path=path,
        sql=sql,
        checksum=checksum(raw),
        no_tx=sql.startswith(NO_TX_DIRECTIVE),
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
        if not entry.is_file():  # follows symlinks, like sqlx
            continue
        migration = read_migration(Path(entry.path))
        if migration is None:
            continue
        slot = (migration.version, DOWN if migration.kind == DOWN else UP)
        if slot in seen:
            raise SourceError(
                f"{seen[slot].path.name} and {migration.path.name} share version {migration.version}; "
                "give one of them a new version number"
            )
        seen[slot] = migration
        if migration.kind == DOWN:
            result.downs[migration.version] = migration
        else:
            result.ups.append(migration)
    result.ups.sort(key=lambda m: m.version)
    _check_pairs(result, seen)
    return result


def _check_pairs(result: MigrationSet, seen: dict[tuple[int, str], Migration]) -> None:
    for version, down in result.downs.items():
        up = seen.get((version, UP))
        if up is None:
            raise SourceError(f"{down.path.name}: no matching {version}_….up.sql; add it or delete the down file")
        if up.kind == SIMPLE:
            raise SourceError(
                f"{down.path.name}: {up.path.name} is not reversible; rename it to "
                f"{up.path.name[:-4]}.up.sql or delete the down file"
            )


def new_migration_paths(migrations: MigrationSet, description: str, reversible: bool) -> list[Path]:
    """File names for the next migration: next version, same zero-padding as the rest."""
    slug = re.sub(r"[^a-z0-9]+", "_", description.strip().lower()).strip("_")
    if not slug:
        raise SourceError(f"description {description!r} has no letters or digits; e.g. dbctl new add_user_avatars")
    version = max((m.version for m in migrations.ups), default=0) + 1
    stem = f"{version:0{migrations.width}d}_{slug}"
    suffixes = (".up.sql", ".down.sql") if reversible else (".sql",)
    return [migrations.directory / (stem + s) for s in suffixes]
