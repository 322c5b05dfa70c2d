"""Read `python -X importtime` output (or PYTHONPROFILEIMPORTTIME=1's): how many modules, and the biggest."""

from __future__ import annotations


def profile(stderr: str, top: int) -> dict:
    """Modules imported, and the `top` biggest top-level imports by cumulative time (ms)."""
    rows = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            _, cumulative, name = line[len("import time:"):].split("|")
            rows.append((int(cumulative), name.rstrip()))
    # A nested import is indented under its importer; a top-level one has a single space.
    top_level = sorted((r for r in rows if not r[1].startswith("  ")), reverse=True)[:top]
    return {"modules": len(rows), "top": [(round(us / 1000, 1), name.strip()) for us, name in top_level]}
