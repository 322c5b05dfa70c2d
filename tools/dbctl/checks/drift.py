"""Schema drift: the live database compared with what its migrations produce.

The migrations the live database has applied are replayed into a scratch
database; both are read with the same pg_catalog queries into a snapshot (plain
dicts), and `compare` reports what differs. Only meaning counts: column order,
catalog order, whitespace in view and function bodies, and the names
PostgreSQL generates for indexes and constraints (`users_email_key`,
`users_x_idx1`) are not differences. dbctl's own tables are left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dbctl.engine import postgres
from dbctl.errors import MigrationFailed, Refused
from dbctl.engine.source import MigrationSet

# Schemas PostgreSQL owns; everything else is the application's.
_USER_NS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"


def _not_extension_member(catalog: str, oid: str) -> str:
    """Objects an extension created (citext's functions...) belong to the extension, compared by version."""
    return (f"NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = '{catalog}'::regclass "
            f"AND d.objid = {oid} AND d.deptype = 'e')")


_QUERIES = {
    "extension": """
        SELECT e.extname, e.extversion, n.nspname FROM pg_extension e
        JOIN pg_namespace n ON n.oid = e.extnamespace""",
    "schema": f"""
        SELECT n.nspname FROM pg_namespace n WHERE {_USER_NS}
          AND {_not_extension_member('pg_namespace', 'n.oid')}""",
    "table": f"""
        SELECT n.nspname, c.relname, c.relkind, c.relpersistence, c.relrowsecurity
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'f') AND {_USER_NS} AND {_not_extension_member('pg_class', 'c.oid')}""",
    "column": f"""
        SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated,
               CASE WHEN a.attcollation <> t.typcollation THEN co.collname END
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
        LEFT JOIN pg_collation co ON co.oid = a.attcollation
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'f') AND {_USER_NS}
          AND {_not_extension_member('pg_class', 'c.oid')}""",
    "constraint": f"""
        SELECT n.nspname, c.relname, con.conname, pg_get_constraintdef(con.oid, true)
        FROM pg_constraint con
        JOIN pg_class c ON c.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_USER_NS} AND {_not_extension_member('pg_class', 'c.oid')}""",
    "index": f"""
        SELECT n.nspname, t.relname, i.relname, pg_get_indexdef(i.oid), x.indisvalid
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE {_USER_NS} AND {_not_extension_member('pg_class', 't.oid')}
          AND NOT EXISTS (SELECT FROM pg_constraint con WHERE con.conindid = x.indexrelid
                          AND con.conrelid = x.indrelid AND con.contype IN ('p', 'u', 'x'))""",
    "view": f"""
        SELECT n.nspname, c.relname, c.relkind, pg_get_viewdef(c.oid, true)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('v', 'm') AND {_USER_NS} AND {_not_extension_member('pg_class', 'c.oid')}""",
    "function": f"""
        SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), p.prokind,
               CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) END
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE {_USER_NS} AND {_not_extension_member('pg_proc', 'p.oid')}""",
    "enum": f"""
        SELECT n.nspname, t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_enum e ON e.enumtypid = t.oid
        WHERE {_USER_NS} AND {_not_extension_member('pg_type', 't.oid')}
        GROUP BY n.nspname, t.typname""",
    "domain": f"""
        SELECT n.nspname, t.typname, format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault,
               coalesce((SELECT array_agg(pg_get_constraintdef(con.oid, true) ORDER BY 1)
                         FROM pg_constraint con WHERE con.contypid = t.oid), '{{}}')
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typtype = 'd' AND {_USER_NS} AND {_not_extension_member('pg_type', 't.oid')}""",
    "composite type": f"""
        SELECT n.nspname, t.typname,
               (SELECT array_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum)
                FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped)
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_class c ON c.oid = t.typrelid
        WHERE t.typtype = 'c' AND c.relkind = 'c' AND {_USER_NS} AND {_not_extension_member('pg_type', 't.oid')}""",
    "trigger": f"""
        SELECT n.nspname, c.relname, tg.tgname, pg_get_triggerdef(tg.oid, true), tg.tgenabled
        FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT tg.tgisinternal AND {_USER_NS}""",
    "sequence": f"""
        SELECT n.nspname, c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
               s.seqmin, s.seqmax, s.seqcycle
        FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_USER_NS} AND {_not_extension_member('pg_class', 'c.oid')}
          AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                          AND d.deptype IN ('a', 'i'))""",
    "policy": """
        SELECT schemaname, tablename, policyname, permissive, roles::text[], cmd, qual, with_check
        FROM pg_policies""",
}

# PostgreSQL's generated suffixes (ChooseConstraintName / ChooseIndexName), optionally numbered.
_GENERATED_NAME = re.compile(r".+_(pkey|key|fkey|check|excl|idx|not_null)[0-9]*")
_INDEX_NAME = re.compile(r'^(CREATE (?:UNIQUE )?INDEX )("(?:[^"]|"")+"|\S+)( ON )')
_RELKINDS = {"r": "table", "p": "partitioned table", "f": "foreign table", "v": "view", "m": "materialized view"}


def _own(table: str) -> bool:
    return table in postgres.OWN_TABLES or table.startswith("_dbctl_")


def _flat(text: str | None) -> str | None:
    """Whitespace runs become one space: reformatting a view or function body is not drift."""
    return " ".join(text.split()) if text is not None else None


def snapshot(conn) -> dict[str, dict[str, object]]:
    """The schema as {kind: {object name: comparable description}}; names say schema.table[.column]."""
    rows = {kind: conn.execute(sql).fetchall() for kind, sql in _QUERIES.items()}
    snap: dict[str, dict[str, object]] = {kind: {} for kind in _QUERIES}
    snap["extension"] = {name: {"version": version, "schema": schema} for name, version, schema in rows["extension"]}
    snap["schema"] = {name: {} for (name,) in rows["schema"]}
    for ns, rel, kind, persistence, rls in rows["table"]:
        if not _own(rel):
            snap["table"][f"{ns}.{rel}"] = {"kind": _RELKINDS[kind], "unlogged": persistence == "u",
                                            "row level security": rls}
    for ns, rel, col, typ, notnull, default, identity, generated, collation in rows["column"]:
        if not _own(rel):
            snap["column"][f"{ns}.{rel}.{col}"] = {
                "type": typ, "nullable": not notnull, "default": default,
                "identity": {"a": "always", "d": "by default"}.get(identity),
                "generated": "stored" if generated == "s" else None, "collation": collation,
            }
    for ns, rel, name, definition in rows["constraint"]:
        if not _own(rel):
            _add_named(snap["constraint"], f"{ns}.{rel}: {definition}", name)
    for ns, rel, name, definition, valid in rows["index"]:
        if not _own(rel):
            anonymous = _INDEX_NAME.sub(r"\1ON ", definition)
            _add_named(snap["index"], f"{ns}.{rel}: {anonymous}" + ("" if valid else " [INVALID]"), name)
    for ns, rel, kind, definition in rows["view"]:
        snap["view"][f"{ns}.{rel}"] = {"kind": _RELKINDS[kind], "definition": _flat(definition)}
    for ns, name, args, kind, definition in rows["function"]:
        label = {"p": "procedure", "a": "aggregate", "w": "window function"}.get(kind, "function")
        snap["function"][f"{ns}.{name}({args})"] = {"kind": label, "definition": _flat(definition)}
    snap["enum"] = {f"{ns}.{name}": {"labels": list(labels)} for ns, name, labels in rows["enum"]}
    snap["domain"] = {
        f"{ns}.{name}": {"type": base, "nullable": not notnull, "default": default, "checks": list(checks)}
        for ns, name, base, notnull, default, checks in rows["domain"]
    }
    snap["composite type"] = {f"{ns}.{name}": {"attributes": list(attrs or [])}
                              for ns, name, attrs in rows["composite type"]}
    for ns, rel, name, definition, enabled in rows["trigger"]:
        if not _own(rel):
            snap["trigger"][f"{ns}.{rel}.{name}"] = {"definition": definition, "enabled": enabled != "D"}
    for ns, name, typ, start, increment, minimum, maximum, cycle in rows["sequence"]:
        if not _own(name):
            snap["sequence"][f"{ns}.{name}"] = {"type": typ, "start": start, "increment": increment,
                                                "min": minimum, "max": maximum, "cycle": cycle}
    for ns, rel, name, permissive, roles, cmd, qual, check in rows["policy"]:
        snap["policy"][f"{ns}.{rel}.{name}"] = {"permissive": permissive, "roles": sorted(roles), "command": cmd,
                                                "using": qual, "with check": check}
    return snap


def _add_named(bucket: dict, key: str, name: str) -> None:
    """Indexes and constraints are keyed by what they do; their names are kept aside."""
    bucket.setdefault(key, {"names": []})["names"].append(name)


@dataclass
class Difference:
    kind: str  # table, column, index, ...
    name: str  # schema.table.column, or "schema.table: definition" for indexes and constraints
    change: str  # missing (migrations have it, the database not), extra (the reverse), changed, renamed
    expected: object = None  # what the migrations produce
    actual: object = None  # what the live database has
    attribute: str | None = None  # for "changed": which property (type, default, nullable...)

    def describe(self, expected: str = "the migrations", actual: str = "the database") -> str:
        name = f"{self.name} {self.attribute}" if self.attribute else self.name
        if self.change == "missing":
            return f"missing  {self.kind} {name}: in {expected}, not in {actual}"
        if self.change == "extra":
            return f"extra    {self.kind} {name}: in {actual}, not in {expected}"
        if self.change == "renamed":
            return f"renamed  {self.kind} {name}: named {_show(self.expected)} in {expected}, " \
                   f"{_show(self.actual)} in {actual}"
        return f"changed  {self.kind} {name}: {_show(self.expected)} in {expected}, " \
               f"{_show(self.actual)} in {actual}"

    def as_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "change": self.change, "attribute": self.attribute,
                "expected": self.expected, "actual": self.actual}


def _show(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def compare(expected: dict, actual: dict) -> list[Difference]:
    """Differences from the migrations' schema (`expected`) to the database's (`actual`): a pure function."""
    diffs: list[Difference] = []
    dropped_tables = set(expected["table"]) - set(actual["table"])
    added_tables = set(actual["table"]) - set(expected["table"])
    for kind in expected:
        want, have = expected[kind], actual.get(kind, {})
        for name in sorted(want.keys() | have.keys()):
            if kind == "column" and name.rsplit(".", 1)[0] in dropped_tables | added_tables:
                continue  # the table's own line says it
            if name not in have:
                diffs.append(Difference(kind, name, "missing"))
            elif name not in want:
                diffs.append(Difference(kind, name, "extra"))
            elif kind in ("index", "constraint"):
                diffs.extend(_compare_named(kind, name, want[name]["names"], have[name]["names"]))
            else:
                for attr in want[name]:
                    if want[name][attr] != have[name].get(attr):
                        diffs.append(Difference(kind, name, "changed", want[name][attr], have[name].get(attr),
                                                attr))
    return diffs


def _compare_named(kind: str, key: str, want: list[str], have: list[str]) -> list[Difference]:
    if len(want) > len(have):
        return [Difference(kind, key, "missing", sorted(want), sorted(have))]
    if len(want) < len(have):
        return [Difference(kind, key, "extra", sorted(want), sorted(have))]
    if len(want) == 1 and want != have and not (_GENERATED_NAME.fullmatch(want[0])
                                                 or _GENERATED_NAME.fullmatch(have[0])):
        return [Difference(kind, key, "renamed", want[0], have[0])]
    return []


@dataclass
class DriftReport:
    database: str
    versions: list[int]  # the versions replayed into the scratch database
    differences: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def as_dict(self) -> dict:
        return {"database": self.database, "drift": not self.ok, "versions": self.versions,
                "differences": [d.as_dict() for d in self.differences], "notes": self.notes}

    def format_text(self) -> str:
        through = f"versions {self.versions[0]}..{self.versions[-1]}" if self.versions else "no migrations"
        lines = [f"Drift check of {self.database} against its migrations ({through}, replayed in a scratch database)"]
        lines += [f"note: {n}" for n in self.notes]
        if self.ok:
            lines.append("no drift: the schema is exactly what the migrations produce")
        else:
            lines += [f"  {d.describe()}" for d in self.differences]
            lines.append(f"{len(self.differences)} difference(s); put intended changes in a migration "
                         "(dbctl new), or undo the change made by hand")
        return "\n".join(lines)


def check_drift(url: str, migrations: MigrationSet, scratch_url: str | None = None,
                lock_wait: float = 30.0) -> DriftReport:
    """Replay the migrations the live database applied into a scratch database and compare the two;
    reading the live database waits at most `lock_wait` seconds for another session's lock."""
    from dbctl.engine.plan import build_plan
    from dbctl.checks.scratch import scratch_database
    from dbctl.urls import mask_url

    conn = postgres.connect(url, application_name="dbctl drift")
    with conn, postgres.bounded_waits(conn, lock_wait, "read the migration history and the schema"):
        history = postgres.read_history(conn)
        plan = build_plan(migrations.ups, history)
        report = DriftReport(mask_url(url), [row.version for row in history])
        missing = [e.version for e in plan.entries if e.state == "missing"]
        if missing:
            raise Refused(f"version(s) {', '.join(map(str, missing))} are applied but their files are missing from "
                          f"{migrations.directory}, so their schema cannot be replayed; restore the files")
        modified = [e.migration.label for e in plan.entries if e.state == "modified"]
        if modified:
            report.notes.append(f"{', '.join(modified)} changed since applied; replayed as the files are now")
        pending = [e.migration.label for e in plan.to_apply]
        if pending:
            report.notes.append(f"{len(pending)} migration(s) not applied to the database yet, left out of the "
                                f"comparison: {', '.join(pending)}; run dbctl migrate")
        applied = set(report.versions)
        replay = MigrationSet(migrations.directory, [m for m in migrations.ups if m.version in applied])
        with scratch_database(scratch_url or url, "drift") as scratch:
            expected = replay_snapshot(scratch, replay)
        report.differences = compare(expected, snapshot(conn))
    return report


def replay_snapshot(scratch_url: str, migrations: MigrationSet) -> dict:
    """Apply `migrations` to an empty database and read its schema."""
    from dbctl.engine.migrator import MigrateOptions, migrate

    def quiet(_message: str) -> None:
        pass

    try:
        migrate(scratch_url, migrations, MigrateOptions(wait_timeout=5, max_attempts=1), say=quiet, warn=quiet)
    except MigrationFailed as exc:
        raise MigrationFailed(f"replaying the migrations in a scratch database failed: {exc}") from None
    scratch = postgres.connect(scratch_url, application_name="dbctl drift")
    with scratch:
        return snapshot(scratch)


def summary(url: str, migrations: MigrationSet) -> tuple[bool | None, str]:
    """One line for dev-setup (dbctl doctor): (True no drift / False drift / None not checked, text)."""
    from dbctl.errors import DbctlError

    try:
        report = check_drift(url, migrations)
    except DbctlError as exc:
        return None, f"not checked: {' '.join(str(exc).split())}"
    if report.ok:
        return True, "none: the schema is exactly what the migrations make"
    first = report.differences[0].describe().split(None, 1)
    return False, f"{len(report.differences)} difference(s), first: {first[0]} {first[1]}"
