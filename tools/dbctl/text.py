"""How a user-controlled name (a file, a database, a role, an option's value) appears in a line dbctl prints,
and how a duration does (`format_ns`).

Every such name goes through `quoted` or `escaped`: a control character
(newline, carriage return, an escape sequence) is shown as a visible escape, so
a name can never forge a row of `dbctl status` or a line of the log, and
quoting is SQL's (double quotes, a quote doubled), the same everywhere.
"""

from __future__ import annotations


def escaped(text: str) -> str:
    """`text` with every non-printable character as a backslash escape (\\n, \\x1b, \\x80 for a non-UTF-8 byte)."""
    text = str(text)
    if text.isprintable():  # nearly always: no per-character work
        return text
    return "".join(_escape(c) for c in text)


def _escape(c: str) -> str:
    if c.isprintable():
        return c
    if "\udc80" <= c <= "\udcff":  # a byte of a non-UTF-8 file name, as Python decoded it
        return f"\\x{ord(c) - 0xDC00:02x}"
    if c == "\\":
        return c
    return c.encode("unicode_escape").decode("ascii")


def quoted(name, limit: int = 200) -> str:
    """A name in a message in SQL's double quotes (a quote inside doubled), escaped, cut to `limit` characters.
    A number is shown as it is."""
    if isinstance(name, int | float) and not isinstance(name, bool):
        return str(name)
    text = escaped(name)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return '"' + text.replace('"', '""') + '"'


def format_ns(ns: int | None) -> str:
    """A duration in nanoseconds as people read it: "12 ms", "3.40 s"; "-" when unknown."""
    if ns is None or ns < 0:
        return "-"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.0f} ms"
    return f"{ns / 1_000_000_000:.2f} s"
