"""Find dangerous DDL in migrations before it runs, with PostgreSQL's own parser (pglast).

Each statement is parsed into PostgreSQL's syntax tree and checked against the
rules below. What is dangerous is what locks or rewrites a table that already
holds data: a table created earlier in the same file (or in an earlier file of
the same lint run, which is not applied yet either) is new and empty, so
statements on it are fine. A file opts out of rules with a comment anywhere in it:

    -- dbctl-lint: ignore drop-column, rename-column -- the app stopped reading them in v2.3
    -- dbctl-lint: ignore-all (a one-off data fix on a table nobody uses yet)
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from dbctl.errors import ConfigError
from dbctl.engine.source import Migration


@dataclass(frozen=True)
class Rule:
    id: str
    problem: str  # what goes wrong in production
    safely: str  # how to do it instead


RULES = {r.id: r for r in (
    Rule("create-index-not-concurrently",
         "CREATE INDEX on an existing table blocks every write to it until the index is built",
         "use CREATE INDEX CONCURRENTLY in a file that starts with -- no-transaction"),
    Rule("concurrently-in-transaction",
         "CONCURRENTLY cannot run inside a transaction block; this migration will fail",
         "start the file with the line -- no-transaction (and make it idempotent with IF NOT EXISTS)"),
    Rule("add-not-null-without-default",
         "ADD COLUMN ... NOT NULL without a DEFAULT fails on a table that has rows",
         "add the column nullable or with a DEFAULT, backfill, then SET NOT NULL via a validated CHECK"),
    Rule("add-column-volatile-default",
         "a volatile default, serial, identity or stored generated column rewrites the whole table "
         "under an ACCESS EXCLUSIVE lock",
         "add the column without the default, set the default, then backfill existing rows in batches"),
    Rule("alter-column-type",
         "ALTER COLUMN ... TYPE rewrites the table (and its indexes) under an ACCESS EXCLUSIVE lock, "
         "except for a few binary-compatible changes such as widening varchar",
         "add a new column, backfill it in batches, switch the application, then drop the old one"),
    Rule("set-not-null",
         "SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock",
         "ADD CONSTRAINT ... CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT, then SET NOT NULL "
         "(PostgreSQL 12+ skips the scan)"),
    Rule("add-constraint-without-not-valid",
         "adding a CHECK or FOREIGN KEY validates every row while holding a lock that blocks writes",
         "add it with NOT VALID, then ALTER TABLE ... VALIDATE CONSTRAINT in a later migration"),
    Rule("add-unique-constraint",
         "adding a PRIMARY KEY, UNIQUE or EXCLUDE constraint builds its index under an ACCESS EXCLUSIVE lock",
         "CREATE UNIQUE INDEX CONCURRENTLY first, then ADD CONSTRAINT ... USING INDEX"),
    Rule("drop-column",
         "dropping a column breaks every running version of the application that still reads it",
         "stop using the column in the application first, deploy, then drop it in a later migration"),
    Rule("drop-table",
         "dropping a table loses its data and breaks running code that still uses it",
         "stop using the table first, deploy, then drop it in a later migration (keep a backup)"),
    Rule("rename-column",
         "renaming a column breaks every running version of the application that uses the old name",
         "add the new column, write to both, backfill, switch reads, then drop the old one"),
    Rule("rename-table",
         "renaming a table breaks every running version of the application that uses the old name",
         "create a view with the old name during the switch, or copy through a new table"),
    Rule("missing-lock-timeout",
         "a statement that locks an existing table without lock_timeout queues behind any long "
         "transaction, and every query on that table queues behind it",
         "put SET lock_timeout = '5s'; at the top of the file (production mode, DBCTL_ENV=production, "
         "sets it by default; dbctl migrate --lock-timeout does it per run)"),
    Rule("lock-on-busy-table",
         "this statement takes a lock on a busy table (named with --busy-table / DBCTL_BUSY_TABLES, or large "
         "in the database)",
         "run it when traffic is low with a short lock_timeout, or use the non-blocking variant"),
)}

PARSE_ERROR = "parse-error"  # not a rule: a file PostgreSQL could not parse cannot be checked, nor ignored

# Functions whose default forces PostgreSQL to rewrite the table (a constant default is just stored).
_VOLATILE = {"random", "gen_random_uuid", "uuid_generate_v1", "uuid_generate_v1mc", "uuid_generate_v4",
             "clock_timestamp", "timeofday", "nextval", "txid_current", "gen_random_bytes"}
_SERIAL = {"serial", "bigserial", "smallserial", "serial2", "serial4", "serial8"}
_IGNORE = re.compile(r"--\s*dbctl-lint:\s*(ignore-all|ignore\s+(.*))", re.IGNORECASE)


@dataclass
class Finding:
    path: str
    line: int
    rule: str
    message: str
    safely: str = ""

    def describe(self) -> str:
        fix = f"; instead: {self.safely}" if self.safely else ""
        return f"{self.path}:{self.line}: {self.rule}: {self.message}{fix}"

    def as_dict(self) -> dict:
        return {"file": self.path, "line": self.line, "rule": self.rule, "message": self.message,
                "safely": self.safely}


@dataclass
class LintReport:
    files: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    ignored: list[Finding] = field(default_factory=list)  # silenced by a dbctl-lint comment
    selection: str = ""  # how the files were chosen, for people

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict:
        return {"ok": self.ok, "selection": self.selection, "files": self.files,
                "findings": [f.as_dict() for f in self.findings],
                "ignored": [f.as_dict() for f in self.ignored]}

    def format_text(self) -> str:
        lines = [f.describe() for f in self.findings]
        ignored = f", {len(self.ignored)} ignored by dbctl-lint comments" if self.ignored else ""
        if self.ok:
            lines.append(f"lint: {len(self.files)} file(s) checked ({self.selection}), no dangerous changes{ignored}")
        else:
            lines.append(f"lint: {len(self.findings)} finding(s) in {len(self.files)} file(s) checked "
                         f"({self.selection}){ignored}; fix them, or add -- dbctl-lint: ignore RULE "
                         "to the file with a comment saying why")
        return "\n".join(lines)


def parse_ignores(migration: Migration, comments: list[str]) -> set[str]:
    """Rule ids the file opts out of ('*' for all); an unknown id is a mistake worth stopping for."""
    ignored: set[str] = set()
    for text in comments:
        match = _IGNORE.match(text.strip())
        if not match:
            continue
        if match.group(1).lower() == "ignore-all":
            ignored.add("*")
            continue
        rules = re.split(r"\s--|[(:]", match.group(2), maxsplit=1)[0]  # a reason may follow: -- why, (why)
        ids = [word for word in re.split(r"[\s,]+", rules.strip()) if word]
        for rule in ids:
            if rule not in RULES:
                raise ConfigError(f"{migration.path}: unknown lint rule {rule!r} in a dbctl-lint comment; "
                                  f"known rules: {', '.join(sorted(RULES))}")
        ignored.update(ids)
    return ignored


def lint_migrations(migrations: list[Migration], busy_tables=frozenset(), selection: str = "") -> LintReport:
    """Lint files in version order; tables created by an earlier file of the run count as new."""
    report = LintReport(selection=selection)
    new_tables: set[str] = set()
    for migration in sorted(migrations, key=lambda m: m.version):
        report.files.append(str(migration.path))
        findings, ignores = lint_one(migration, new_tables, set(busy_tables))
        for finding in findings:
            if finding.rule != PARSE_ERROR and ("*" in ignores or finding.rule in ignores):
                report.ignored.append(finding)
            else:
                report.findings.append(finding)
    return report


def lint_one(migration: Migration, new_tables: set[str], busy_tables: set[str]) -> tuple[list[Finding], set[str]]:
    """Findings for one file and the rules it ignores; adds the tables it creates to `new_tables`."""
    from pglast import parse_sql
    from pglast.parser import ParseError, scan

    sql = migration.sql
    path = str(migration.path)
    try:
        tokens = scan(sql)
        statements = parse_sql(sql)
    except ParseError as exc:
        line = sql[: max(0, exc.location - 1)].count("\n") + 1 if getattr(exc, "location", None) else 1
        return [Finding(path, line, PARSE_ERROR, f"PostgreSQL's parser rejects this file: {exc.args[0]}",
                        "fix the syntax (dbctl migrate would fail here too)")], set()
    comments = [sql[t.start:t.end + 1] for t in tokens if t.name in ("SQL_COMMENT", "C_COMMENT")]
    ignores = parse_ignores(migration, comments)
    starts = [t.start for t in tokens if t.name not in ("SQL_COMMENT", "C_COMMENT")]
    checker = _FileChecker(migration, path, new_tables, busy_tables)
    for raw in statements:
        at = bisect.bisect_left(starts, raw.stmt_location)
        offset = starts[at] if at < len(starts) else raw.stmt_location
        checker.check(raw.stmt, sql[:offset].count("\n") + 1)
    return checker.findings, ignores


def _table(rangevar) -> str:
    schema = (rangevar.schemaname or "public").lower()
    name = rangevar.relname.lower()
    return name if schema == "public" else f"{schema}.{name}"


def _last_name(names) -> str:
    return names[-1].sval.lower() if names else ""


class _FileChecker:
    def __init__(self, migration: Migration, path: str, new_tables: set[str], busy_tables: set[str]):
        self.migration, self.path = migration, path
        self.new_tables, self.busy_tables = new_tables, {t.lower() for t in busy_tables}
        self.findings: list[Finding] = []
        self.lock_timeout_set = False
        self.reported_lock_timeout = False

    def add(self, line: int, rule: str, detail: str) -> None:
        r = RULES[rule]
        self.findings.append(Finding(self.path, line, rule, f"{detail}: {r.problem}", r.safely))

    def check(self, stmt, line: int) -> None:
        from pglast import ast

        handler = {
            ast.CreateStmt: self._create_table, ast.CreateTableAsStmt: self._create_table_as,
            ast.IndexStmt: self._index, ast.DropStmt: self._drop, ast.RenameStmt: self._rename,
            ast.AlterTableStmt: self._alter, ast.VariableSetStmt: self._set,
            ast.SelectStmt: self._select, ast.CreateTrigStmt: self._trigger, ast.TruncateStmt: self._truncate,
        }.get(type(stmt))
        if handler:
            handler(stmt, line)

    # -- bookkeeping ---------------------------------------------------------------------------------
    def _create_table(self, stmt, line):
        self.new_tables.add(_table(stmt.relation))

    def _create_table_as(self, stmt, line):
        self.new_tables.add(_table(stmt.into.rel))

    def _set(self, stmt, line):
        if (stmt.name or "").lower() == "lock_timeout":
            self.lock_timeout_set = True

    def _select(self, stmt, line):
        """SELECT set_config('lock_timeout', ...) counts as setting it."""
        from pglast import ast
        from pglast.visitors import Visitor

        checker = self

        class SetConfig(Visitor):
            def visit_FuncCall(self, ancestors, node):
                args = node.args or ()
                if _last_name(node.funcname) == "set_config" and args and isinstance(args[0], ast.A_Const) \
                        and getattr(args[0].val, "sval", "").lower() == "lock_timeout":
                    checker.lock_timeout_set = True

        SetConfig()(stmt)

    def _locks(self, table: str, line: int, what: str) -> bool:
        """A statement locks `table`: True when the table exists already (so the lock matters)."""
        if table in self.new_tables:
            return False
        if not self.lock_timeout_set and not self.reported_lock_timeout:
            self.reported_lock_timeout = True
            self.add(line, "missing-lock-timeout", f"{what} locks {table}")
        if table in self.busy_tables:
            self.add(line, "lock-on-busy-table", f"{what} locks the busy table {table}")
        return True

    # -- the rules -----------------------------------------------------------------------------------
    def _index(self, stmt, line):
        table = _table(stmt.relation)
        if stmt.concurrent:
            if not self.migration.no_tx:
                self.add(line, "concurrently-in-transaction", f"CREATE INDEX CONCURRENTLY on {table}")
            return
        if self._locks(table, line, "CREATE INDEX"):
            self.add(line, "create-index-not-concurrently", f"CREATE INDEX {stmt.idxname or ''} ON {table}".replace(
                "  ", " "))

    def _drop(self, stmt, line):
        from pglast.enums.parsenodes import ObjectType

        if stmt.concurrent and not self.migration.no_tx:
            self.add(line, "concurrently-in-transaction", "DROP INDEX CONCURRENTLY")
        if stmt.removeType != ObjectType.OBJECT_TABLE:
            return
        for names in stmt.objects:
            parts = [n.sval.lower() for n in names]
            table = parts[-1] if len(parts) == 1 or parts[0] == "public" else ".".join(parts)
            if table in self.new_tables:
                self.new_tables.discard(table)
                continue
            self._locks(table, line, "DROP TABLE")
            self.add(line, "drop-table", f"DROP TABLE {table}")

    def _rename(self, stmt, line):
        from pglast.enums.parsenodes import ObjectType

        if stmt.relation is None:
            return
        table = _table(stmt.relation)
        if stmt.renameType == ObjectType.OBJECT_TABLE:
            if self._locks(table, line, "RENAME"):
                self.add(line, "rename-table", f"ALTER TABLE {table} RENAME TO {stmt.newname}")
            if table in self.new_tables:
                self.new_tables.add(stmt.newname.lower())
        elif stmt.renameType == ObjectType.OBJECT_COLUMN:
            if self._locks(table, line, "RENAME COLUMN"):
                self.add(line, "rename-column", f"{table}.{stmt.subname} renamed to {stmt.newname}")

    def _trigger(self, stmt, line):
        self._locks(_table(stmt.relation), line, "CREATE TRIGGER")

    def _truncate(self, stmt, line):
        for rel in stmt.relations:
            self._locks(_table(rel), line, "TRUNCATE")

    def _alter(self, stmt, line):
        from pglast.enums.parsenodes import AlterTableType as AT
        from pglast.enums.parsenodes import ObjectType

        if stmt.objtype != ObjectType.OBJECT_TABLE:
            return
        table = _table(stmt.relation)
        if not self._locks(table, line, "ALTER TABLE"):
            return
        for cmd in stmt.cmds:
            if cmd.subtype == AT.AT_AddColumn:
                self._add_column(table, cmd.def_, line)
            elif cmd.subtype == AT.AT_AddConstraint:
                self._add_constraint(table, cmd.def_, line, cmd.def_.conname or "")
            elif cmd.subtype == AT.AT_AlterColumnType:
                self.add(line, "alter-column-type", f"{table}.{cmd.name} changes type")
            elif cmd.subtype == AT.AT_SetNotNull:
                self.add(line, "set-not-null", f"{table}.{cmd.name} SET NOT NULL")
            elif cmd.subtype == AT.AT_DropColumn:
                self.add(line, "drop-column", f"{table}.{cmd.name} dropped")

    def _add_column(self, table, column, line):
        from pglast.enums.parsenodes import ConstrType as C

        name = f"{table}.{column.colname}"
        kinds = {c.contype: c for c in column.constraints or ()}
        rewrites = _last_name(column.typeName.names) in _SERIAL or C.CONSTR_IDENTITY in kinds or (
            C.CONSTR_GENERATED in kinds)
        default = kinds.get(C.CONSTR_DEFAULT)
        if default is not None and _calls_volatile(default.raw_expr):
            rewrites = True
        if rewrites:
            self.add(line, "add-column-volatile-default", f"ADD COLUMN {name}")
        elif (C.CONSTR_NOTNULL in kinds or C.CONSTR_PRIMARY in kinds) and default is None:
            self.add(line, "add-not-null-without-default", f"ADD COLUMN {name} NOT NULL")
        for constraint in column.constraints or ():
            self._add_constraint(table, constraint, line, f"on new column {column.colname}")

    def _add_constraint(self, table, constraint, line, label):
        from pglast.enums.parsenodes import ConstrType as C

        kind = {C.CONSTR_CHECK: "CHECK", C.CONSTR_FOREIGN: "FOREIGN KEY", C.CONSTR_PRIMARY: "PRIMARY KEY",
                C.CONSTR_UNIQUE: "UNIQUE", C.CONSTR_EXCLUSION: "EXCLUDE"}.get(constraint.contype)
        if kind in ("CHECK", "FOREIGN KEY") and not constraint.skip_validation:
            self.add(line, "add-constraint-without-not-valid", f"{kind} {label} on {table}".replace("  ", " "))
        elif kind in ("PRIMARY KEY", "UNIQUE", "EXCLUDE") and not constraint.indexname:
            self.add(line, "add-unique-constraint", f"{kind} {label} on {table}".replace("  ", " "))


def _calls_volatile(expr) -> bool:
    from pglast.visitors import Visitor

    found = []

    class Calls(Visitor):
        def visit_FuncCall(self, ancestors, node):
            if _last_name(node.funcname) in _VOLATILE:
                found.append(node)

    Calls()(expr)
    return bool(found)


def select_migrations(ups: list[Migration], *, applied: set[int] | None, since: int | None,
                      everything: bool) -> tuple[list[Migration], str]:
    """Which files to lint, and how that was decided (for the report)."""
    if everything:
        return list(ups), "all files"
    if since is not None:
        return [m for m in ups if m.version > since], f"versions after {since}"
    if applied is not None:
        return [m for m in ups if m.version not in applied], "files not applied to the database yet"
    return list(ups), "all files; no database to tell which are applied"
