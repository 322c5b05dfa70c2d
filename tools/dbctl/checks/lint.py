"""Find dangerous DDL in migrations before it runs, with PostgreSQL's own parser (pglast).

Each statement is parsed into PostgreSQL's syntax tree and checked against the
rules below. What is dangerous is what locks or rewrites a table that already
holds data: a table created earlier in the same file (or in an earlier file of
the same lint run, which is not applied yet either) is new and empty, so
statements on it are fine. Files beside the linted ones are read for what they
tell about the tables (column types), and each linted up file's `.down.sql` is
linted too. A file opts out of rules with a comment anywhere in it:

    -- dbctl-lint: ignore drop-column, rename-column -- the app stopped reading them in v2.3
    -- dbctl-lint: ignore-all (a one-off data fix on a table nobody uses yet)
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from dbctl.errors import ConfigError, DbctlError
from dbctl.engine.source import DOWN, Migration, read_migration
from dbctl.text import quoted


@dataclass(frozen=True)
class Rule:
    id: str
    problem: str  # what goes wrong in production
    safely: str  # how to do it instead


RULES = {r.id: r for r in (
    Rule("create-index-not-concurrently",
         "CREATE INDEX on an existing table blocks every write to it until the index is built",
         "use CREATE INDEX CONCURRENTLY in a file that starts with -- no-transaction"),
    Rule("needs-no-transaction",
         "PostgreSQL refuses it inside a transaction block, and this file runs in one: the migration will fail",
         "move it to a file of its own that starts with the line -- no-transaction (and make it idempotent, "
         "e.g. IF NOT EXISTS)"),
    Rule("no-transaction-not-alone",
         "sqlx sends a -- no-transaction file as ONE query, and PostgreSQL runs a query of several statements "
         "as one implicit transaction, which this statement refuses: sqlx fails here (dbctl would not)",
         "give it a -- no-transaction file with nothing else in it (set lock_timeout with dbctl migrate "
         "--lock-timeout or ALTER ROLE ... SET lock_timeout instead of SET in the file)"),
    Rule("transaction-control",
         "the file already runs in one transaction with its history row: COMMIT or ROLLBACK here ends it "
         "half-way (sqlx then commits part of the file without its history row), BEGIN only warns; "
         "dbctl migrate refuses the file",
         "remove it; statements that must run outside a transaction go in a -- no-transaction file"),
    Rule("add-not-null-without-default",
         "ADD COLUMN ... NOT NULL without a DEFAULT fails on a table that has rows",
         "add the column nullable or with a DEFAULT, backfill, then SET NOT NULL via a validated CHECK"),
    Rule("add-column-volatile-default",
         "a volatile default, serial, identity or stored generated column rewrites the whole table "
         "under an ACCESS EXCLUSIVE lock",
         "add the column without the default, set the default, then backfill existing rows in batches"),
    Rule("alter-column-type",
         "this type change rebuilds storage under an ACCESS EXCLUSIVE lock (PostgreSQL skips that only for "
         "changes that keep every stored value, such as widening varchar or varchar to text)",
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
             "clock_timestamp", "timeofday", "nextval", "gen_random_bytes"}  # txid_current is stable: no rewrite
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
                raise ConfigError(f"{migration.path}: unknown lint rule {quoted(rule)} in a dbctl-lint comment; "
                                  f"known rules: {', '.join(sorted(RULES))}")
        ignored.update(ids)
    return ignored


def lint_migrations(migrations: list[Migration], busy_tables=frozenset(), selection: str = "") -> LintReport:
    """Lint files in version order; tables created by an earlier file of the run count as new.

    The other files beside them are read too, without being linted: earlier ones
    tell the column types a type change starts from, and each linted up file's
    `.down.sql` is linted after it (a rollback runs it against the up's schema).
    """
    report = LintReport(selection=selection)
    schema = _Schema()
    chosen = {m.path.resolve(): m for m in migrations}
    on_disk = _files_beside(migrations)
    ups = {m.version: m for m in [*on_disk.values(), *chosen.values()] if m.kind != DOWN}
    downs = {m.version: m for m in on_disk.values() if m.kind == DOWN}
    downs.update({m.version: m for m in chosen.values() if m.kind == DOWN})
    last = max((m.version for m in chosen.values()), default=None)
    linted_up = {m.version for m in chosen.values() if m.kind != DOWN}
    for version in sorted(ups):
        up, down = ups[version], downs.get(version)
        down_chosen = down is not None and down.path.resolve() in chosen
        if up.path.resolve() in chosen:
            findings, ignores = lint_one(up, schema, set(busy_tables))
            _file_report(report, up, findings, ignores)
        elif last is not None and (version < last or down_chosen):  # applied, or the up of a chosen down
            lint_one(up, schema, set(), learn_only=True)
        if down is not None and (version in linted_up or down_chosen):
            findings, ignores = lint_one(down, schema.for_rollback(version), set(busy_tables))
            _file_report(report, down, findings, ignores)
    for version, down in sorted(downs.items()):  # a down file given without its up
        if version not in ups and down.path.resolve() in chosen:
            findings, ignores = lint_one(down, _Schema(), set(busy_tables))
            _file_report(report, down, findings, ignores)
    return report


def _file_report(report: LintReport, migration: Migration, findings: list[Finding], ignores: set[str]) -> None:
    report.files.append(str(migration.path))
    for finding in findings:
        if finding.rule != PARSE_ERROR and ("*" in ignores or finding.rule in ignores):
            report.ignored.append(finding)
        else:
            report.findings.append(finding)


def _files_beside(migrations: list[Migration]) -> dict:
    """The migration files in the directories of `migrations`, by resolved path (unreadable ones skipped)."""
    found = {}
    for directory in {m.path.parent for m in migrations}:
        for path in sorted(directory.glob("*.sql")):
            try:
                migration = read_migration(path)
            except DbctlError:  # a badly named or unreadable neighbour is the migrate command's business
                continue
            if migration is not None:
                found[path.resolve()] = migration
    return found


def lint_one(migration: Migration, schema: _Schema, busy_tables: set[str],
             learn_only: bool = False) -> tuple[list[Finding], set[str]]:
    """Findings for one file and the rules it ignores; records what it does to the tables in `schema`.

    learn_only: a file that is not linted (applied already) only teaches `schema` its tables.
    """
    from pglast import parse_sql
    from pglast.parser import ParseError, scan

    sql = migration.sql
    path = str(migration.path)
    try:
        tokens = scan(sql)
        statements = parse_sql(sql)
    except ParseError as exc:
        if learn_only:
            return [], set()
        line = sql[: max(0, exc.location - 1)].count("\n") + 1 if getattr(exc, "location", None) else 1
        return [Finding(path, line, PARSE_ERROR, f"PostgreSQL's parser rejects this file: {exc.args[0]}",
                        "fix the syntax (dbctl migrate would fail here too)")], set()
    comments = [sql[t.start:t.end + 1] for t in tokens if t.name in ("SQL_COMMENT", "C_COMMENT")]
    ignores = set() if learn_only else parse_ignores(migration, comments)
    starts = [t.start for t in tokens if t.name not in ("SQL_COMMENT", "C_COMMENT")]
    checker = _FileChecker(migration, path, schema, busy_tables, len(statements), learn_only)
    for raw in statements:
        at = bisect.bisect_left(starts, raw.stmt_location)
        offset = starts[at] if at < len(starts) else raw.stmt_location
        checker.check(raw.stmt, sql[:offset].count("\n") + 1)
    schema.created_by[migration.version] = checker.created
    return ([] if learn_only else checker.findings), ignores


# -- what a column type change costs ------------------------------------------------------------------
# PostgreSQL keeps a column's storage when the new type accepts every stored value unchanged: a binary-
# coercible cast (pg_cast castmethod 'b') or a length/precision change its support functions
# (varchar_support, numeric_support, varbit_support, timestamp_support, time_support, interval_support)
# call a no-op. Everything else rewrites the table and its indexes. An index is also rebuilt when the
# column's operator class or collation changes. Measured on PostgreSQL 15 (tests/test_lint_rewrites.py).
REWRITE = "rewrites the table and its indexes"
REINDEX = "keeps the table but rebuilds the indexes on the column"
_MAX_TIME_PRECISION = 6
_RELABEL = {  # (old, new unconstrained) -> cost; binary-coercible casts between different types
    ("varchar", "text"): None, ("text", "varchar"): None, ("cidr", "inet"): None,
    ("varchar", "bpchar"): REINDEX, ("text", "bpchar"): REINDEX, ("bit", "varbit"): REINDEX,  # another opclass
}
# interval field masks (1 << field number in PostgreSQL's datetime.h), finest first
_INTERVAL_FIELDS = (1 << 12, 1 << 11, 1 << 10, 1 << 3, 1 << 1, 1 << 2)  # second minute hour day month year


@dataclass(frozen=True)
class ColumnType:
    name: str  # PostgreSQL's own name: varchar, bpchar, numeric, int4, timestamptz ...
    mods: tuple[int, ...] = ()  # the type modifiers as written: varchar(10) -> (10,)
    array: bool = False
    collation: str | None = None  # None: the type's default

    def __str__(self) -> str:
        mods = f"({','.join(map(str, self.mods))})" if self.mods and self.name != "interval" else ""
        return f"{self.name}{mods}{'[]' if self.array else ''}" + (f' COLLATE "{self.collation}"'
                                                                      if self.collation else "")


def column_type(type_name, collate=None) -> ColumnType:
    names = [n.sval.lower() for n in type_name.names]
    if len(names) > 1 and names[0] == "pg_catalog":
        names = names[1:]
    mods = tuple(getattr(getattr(m, "val", None), "ival", 0) for m in type_name.typmods or ())
    collation = ".".join(n.sval for n in collate.collname) if collate is not None else None
    return ColumnType(".".join(names), mods, bool(type_name.arrayBounds),
                      None if collation in (None, "default") else collation)


def type_change_cost(old: ColumnType | None, new: ColumnType) -> str | None:
    """REWRITE, REINDEX or None (only the catalog changes) for ALTER COLUMN ... TYPE from `old` to `new`."""
    if old is None:
        return REWRITE  # not known from the migrations: assume the worst
    if old.array or new.array:
        cost = None if (old.name, old.mods, old.array) == (new.name, new.mods, new.array) else REWRITE
    elif old.name == new.name:
        cost = None if _keeps_values(old.name, old.mods, new.mods) else REWRITE
    elif (old.name, new.name) in _RELABEL and not new.mods:
        cost = _RELABEL[(old.name, new.name)]
    else:
        cost = REWRITE
    return REINDEX if cost is None and old.collation != new.collation else cost


def _keeps_values(name: str, old: tuple, new: tuple) -> bool:
    if old == new or (not new and name in ("varchar", "varbit", "bpchar", "numeric", "interval")):
        return True
    if name in ("varchar", "varbit"):
        return bool(old) and new[0] >= old[0]
    if name == "numeric":  # same scale, no less precision; numeric(p) is numeric(p,0)
        return bool(old) and (old + (0,))[1] == (new + (0,))[1] and new[0] >= old[0]
    if name in ("timestamp", "timestamptz", "time", "timetz"):  # unconstrained means the maximum, 6
        return _precision(new, 0) >= _precision(old, 0)
    if name == "interval":  # keeps at least the finest field, and the fractional digits if that is seconds
        old_field, new_field = _finest_field(old), _finest_field(new)
        return new_field <= old_field and (old_field > 0 or _precision(new, 1) >= _precision(old, 1))
    return False


def _precision(mods: tuple, at: int) -> int:
    return min(mods[at], _MAX_TIME_PRECISION) if len(mods) > at else _MAX_TIME_PRECISION


def _finest_field(mods: tuple) -> int:
    """0 for seconds ... 5 for years, from interval's field mask (no mask: all fields)."""
    mask = mods[0] if mods else _INTERVAL_FIELDS[0]
    return next((rank for rank, bit in enumerate(_INTERVAL_FIELDS) if mask & bit), len(_INTERVAL_FIELDS))


@dataclass
class _Schema:
    """What the files of one lint run have told about the tables so far."""
    columns: dict = field(default_factory=dict)  # table -> {column: ColumnType}
    new_tables: set = field(default_factory=set)  # created by a linted file: empty, so safe to change
    created_by: dict = field(default_factory=dict)  # version -> {"table" or "table.column"} its up file created
    reverting: set = field(default_factory=set)  # for a down file: what its up created (dropping it is the point)

    def for_rollback(self, version: int) -> _Schema:
        """The schema a down file runs against: the up's, with every table holding data by then."""
        return _Schema({t: dict(cols) for t, cols in self.columns.items()}, set(), {},
                       set(self.created_by.get(version, ())))


# -- statements that cannot share a transaction -------------------------------------------------------
# Each calls PreventInTransactionBlock: refused inside BEGIN ... COMMIT and inside the implicit
# transaction of a query of several statements (measured on PostgreSQL 15, tests/test_lint_transactions.py).
def outside_transaction_only(stmt) -> str | None:
    """How to name `stmt` when PostgreSQL refuses to run it in a transaction block, else None."""
    from pglast import ast
    from pglast.enums.parsenodes import AlterTableType, DiscardMode, ReindexObjectType, TransactionStmtKind

    options = {d.defname.lower(): getattr(d.arg, "sval", getattr(d.arg, "boolval", True))
               for d in (getattr(stmt, "options", None) or getattr(stmt, "params", None) or ())
               if isinstance(d, ast.DefElem)}
    kind = type(stmt)
    if kind is ast.IndexStmt and stmt.concurrent:
        return "CREATE INDEX CONCURRENTLY"
    if kind is ast.DropStmt and stmt.concurrent:
        return "DROP INDEX CONCURRENTLY"
    if kind is ast.ReindexStmt:
        if "concurrently" in options:
            return "REINDEX CONCURRENTLY"
        if stmt.kind != ReindexObjectType.REINDEX_OBJECT_INDEX and stmt.kind != ReindexObjectType.REINDEX_OBJECT_TABLE:
            return f"REINDEX {stmt.kind.name.rsplit('_', 1)[1]}"
    if kind is ast.VacuumStmt and stmt.is_vacuumcmd:
        return "VACUUM"
    if kind is ast.ClusterStmt and stmt.relation is None:
        return "CLUSTER without a table"
    if kind is ast.AlterDatabaseStmt and "tablespace" in options:
        return "ALTER DATABASE ... SET TABLESPACE"
    if kind is ast.AlterTableStmt and any(c.subtype == AlterTableType.AT_DetachPartition and c.def_.concurrent
                                          for c in stmt.cmds):
        return "DETACH PARTITION ... CONCURRENTLY"
    if kind is ast.DiscardStmt and stmt.target == DiscardMode.DISCARD_ALL:
        return "DISCARD ALL"
    if kind is ast.TransactionStmt and stmt.kind in (TransactionStmtKind.TRANS_STMT_COMMIT_PREPARED,
                                                     TransactionStmtKind.TRANS_STMT_ROLLBACK_PREPARED):
        return stmt.kind.name[len("TRANS_STMT_"):].replace("_", " ")
    if kind is ast.CreateSubscriptionStmt and str(options.get("connect", True)).lower() not in ("false", "off", "0") \
            and str(options.get("create_slot", True)).lower() not in ("false", "off", "0"):
        return "CREATE SUBSCRIPTION (it creates a replication slot)"
    return _ALWAYS_OUTSIDE.get(kind.__name__)


_ALWAYS_OUTSIDE = {"CreatedbStmt": "CREATE DATABASE", "DropdbStmt": "DROP DATABASE",
                   "CreateTableSpaceStmt": "CREATE TABLESPACE", "DropTableSpaceStmt": "DROP TABLESPACE",
                   "AlterSystemStmt": "ALTER SYSTEM", "DropSubscriptionStmt": "DROP SUBSCRIPTION"}
# In a transactional file these end (or, BEGIN, warn about) the transaction the file shares with its history row.
_TRANSACTION_CONTROL = {"TRANS_STMT_BEGIN": "BEGIN", "TRANS_STMT_START": "START TRANSACTION",
                        "TRANS_STMT_COMMIT": "COMMIT", "TRANS_STMT_ROLLBACK": "ROLLBACK",
                        "TRANS_STMT_PREPARE": "PREPARE TRANSACTION"}


def _table(rangevar) -> str:
    schema = (rangevar.schemaname or "public").lower()
    name = rangevar.relname.lower()
    return name if schema == "public" else f"{schema}.{name}"


def _last_name(names) -> str:
    return names[-1].sval.lower() if names else ""


class _FileChecker:
    def __init__(self, migration: Migration, path: str, schema: _Schema, busy_tables: set[str],
                 statement_count: int, learn_only: bool = False):
        self.migration, self.path, self.schema = migration, path, schema
        self.columns = schema.columns
        # an applied file's tables are not new; its own bookkeeping goes to a scratch set
        self.new_tables = set() if learn_only else schema.new_tables
        self.busy_tables = {t.lower() for t in busy_tables}
        self.statement_count = statement_count
        self.findings: list[Finding] = []
        self.created: set[str] = set()  # tables and table.columns this file creates
        self.lock_timeout_set = False
        self.reported_lock_timeout = False

    def add(self, line: int, rule: str, detail: str) -> None:
        r = RULES[rule]
        self.findings.append(Finding(self.path, line, rule, f"{detail}: {r.problem}", r.safely))

    def check(self, stmt, line: int) -> None:
        from pglast import ast

        self._transaction_rules(stmt, line)
        handler = {
            ast.CreateStmt: self._create_table, ast.CreateTableAsStmt: self._create_table_as,
            ast.IndexStmt: self._index, ast.DropStmt: self._drop, ast.RenameStmt: self._rename,
            ast.AlterTableStmt: self._alter, ast.VariableSetStmt: self._set,
            ast.SelectStmt: self._select, ast.CreateTrigStmt: self._trigger, ast.TruncateStmt: self._truncate,
        }.get(type(stmt))
        if handler:
            handler(stmt, line)

    def _transaction_rules(self, stmt, line):
        """What sqlx cannot run: see outside_transaction_only and _TRANSACTION_CONTROL."""
        from pglast import ast

        refused = outside_transaction_only(stmt)
        if refused and not self.migration.no_tx:
            self.add(line, "needs-no-transaction", refused)
        elif refused and self.statement_count > 1:
            self.add(line, "no-transaction-not-alone",
                     f"{refused} in a -- no-transaction file of {self.statement_count} statements")
        elif isinstance(stmt, ast.TransactionStmt) and not self.migration.no_tx \
                and stmt.kind.name in _TRANSACTION_CONTROL:
            self.add(line, "transaction-control", f"{_TRANSACTION_CONTROL[stmt.kind.name]} in a transactional file")

    # -- bookkeeping ---------------------------------------------------------------------------------
    def _create_table(self, stmt, line):
        from pglast import ast

        table = _table(stmt.relation)
        self.new_tables.add(table)
        self.created.add(table)
        self.columns[table] = {c.colname.lower(): column_type(c.typeName, c.collClause)
                               for c in stmt.tableElts or () if isinstance(c, ast.ColumnDef) and c.typeName}

    def _create_table_as(self, stmt, line):
        table = _table(stmt.into.rel)
        self.new_tables.add(table)
        self.created.add(table)
        self.columns[table] = {}  # the query decides the types: unknown here

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
        if stmt.concurrent:  # not a write lock; whether it can run here is _transaction_rules' business
            return
        if self._locks(table, line, "CREATE INDEX"):
            self.add(line, "create-index-not-concurrently", f"CREATE INDEX {stmt.idxname or ''} ON {table}".replace(
                "  ", " "))

    def _drop(self, stmt, line):
        from pglast.enums.parsenodes import ObjectType

        if stmt.removeType != ObjectType.OBJECT_TABLE:
            return
        for names in stmt.objects:
            parts = [n.sval.lower() for n in names]
            table = parts[-1] if len(parts) == 1 or parts[0] == "public" else ".".join(parts)
            self.columns.pop(table, None)
            if table in self.new_tables:
                self.new_tables.discard(table)
                continue
            self._locks(table, line, "DROP TABLE")
            if table not in self.schema.reverting:
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
            self.columns[stmt.newname.lower()] = self.columns.pop(table, {})
        elif stmt.renameType == ObjectType.OBJECT_COLUMN:
            if self._locks(table, line, "RENAME COLUMN"):
                self.add(line, "rename-column", f"{table}.{stmt.subname} renamed to {stmt.newname}")
            columns = self.columns.get(table, {})
            if stmt.subname.lower() in columns:
                columns[stmt.newname.lower()] = columns.pop(stmt.subname.lower())

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
        existing = self._locks(table, line, "ALTER TABLE")
        columns = self.columns.setdefault(table, {})
        for cmd in stmt.cmds:
            if cmd.subtype == AT.AT_AddColumn:
                columns[cmd.def_.colname.lower()] = column_type(cmd.def_.typeName, cmd.def_.collClause)
                self.created.add(f"{table}.{cmd.def_.colname.lower()}")
                if existing:
                    self._add_column(table, cmd.def_, line)
            elif cmd.subtype == AT.AT_AlterColumnType:
                self._alter_type(table, columns, cmd, line, existing)
            elif cmd.subtype == AT.AT_DropColumn:
                columns.pop(cmd.name.lower(), None)
                if existing and f"{table}.{cmd.name.lower()}" not in self.schema.reverting:
                    self.add(line, "drop-column", f"{table}.{cmd.name} dropped")
            elif not existing:
                continue
            elif cmd.subtype == AT.AT_AddConstraint:
                self._add_constraint(table, cmd.def_, line, cmd.def_.conname or "")
            elif cmd.subtype == AT.AT_SetNotNull:
                self.add(line, "set-not-null", f"{table}.{cmd.name} SET NOT NULL")

    def _alter_type(self, table, columns, cmd, line, existing):
        from pglast import ast

        name = cmd.name.lower()
        old, new = columns.get(name), column_type(cmd.def_.typeName, cmd.def_.collClause)
        columns[name] = new
        using = cmd.def_.raw_default  # USING expr; the bare column is the same as none
        if using is not None and not (isinstance(using, ast.ColumnRef)
                                      and getattr(using.fields[-1], "sval", "").lower() == name):
            old = None
        cost = type_change_cost(old, new)
        if existing and cost:
            was = "an unknown type (not created by these migrations)" if old is None else str(old)
            self.add(line, "alter-column-type", f"{table}.{cmd.name} from {was} to {new} {cost}")

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
