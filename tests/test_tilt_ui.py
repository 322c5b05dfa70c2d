"""Tilt's real web UI, built into the Tilt we run (scripts/build-tilt), in Debian's Chromium:
what a developer sees and clicks, checked in the page and in the database.

One `tilt up` per mode for the module: without a cluster (its own PostgreSQL), and on the real
cluster of scripts/cluster (namespace kiro-dev), each on a copy of the project, and one Chromium.
The tests run in file order: the panes are read first, before any button adds to them.

`make screenshots` runs this file with DBCTL_SCREENSHOTS=docs, so the pictures in the README
are made by these tests, never by hand.
"""

from __future__ import annotations

import os
import re
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, require
from tilt_env import MODES, SERVICES, running_tilt_in_mode
from tilt_ui import (CHROMEDRIVER, CHROMIUM, Browser, button, button_texts, count_lines, dialog, dialog_button,
                     endpoint_link, endpoint_links, filter_button, filter_count, open_overview, open_resource,
                     overview_groups, overview_row, page_text, pane_lines, pane_lines_with_level, screenshot,
                     set_checkbox, settled_pane, trigger_button, wait_for_pane, wait_until)


GROUPS = {
    "database": {"postgres", "redis", "database-migration"},
    "app": {"backend"},
    "tools": {"database-seed", "db-migrate", "db-seed", "db-reset", "db-status", "dev-setup", "health-check"},
}
# On a cluster the namespace and Secret, and PostgreSQL's claim, are resources of their own.
CLUSTER_ONLY = {"database": {"dev-base", "postgres-data"}}
BUTTONS = {"database-migration": ["Migrate"], "postgres": ["DB status", "Seed", "Reset DB"], "backend": ["Health"]}
MIGRATIONS = sorted(p.name for p in (REPO / "migrations").glob("*.sql"))


@pytest.fixture(scope="module", params=MODES)
def tilt(request, tilt_bin):
    with running_tilt_in_mode(request, tilt_bin) as env:
        yield env


def groups_of(tilt) -> dict[str, set[str]]:
    return {label: names | (CLUSTER_ONLY.get(label, set()) if tilt.cluster else set())
            for label, names in GROUPS.items()}


@pytest.fixture(scope="module")
def driver():
    require(CHROMIUM.exists() and CHROMEDRIVER.exists(),
            "Chromium is not installed (scripts/install-system-deps: apt-get install chromium chromium-driver)")
    browser = Browser()
    try:
        yield browser.driver
    finally:
        browser.quit()


@pytest.fixture(scope="module")
def ui(tilt, driver) -> str:
    """The address of this Tilt's web UI."""
    address = f"http://localhost:{tilt.web_port}"
    require(serves_the_web_ui(address), "this Tilt has no web UI (built before scripts/build-tilt embedded it)")
    return address


def serves_the_web_ui(address: str) -> bool:
    """Tilt's page loads the UI's scripts; a Tilt built with a placeholder page does not."""
    with urllib.request.urlopen(address + "/", timeout=30) as response:
        return "/static/js/" in response.read().decode()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    """Where screenshots go: docs/ under `make screenshots` (DBCTL_SCREENSHOTS), else a temporary folder."""
    chosen = os.environ.get("DBCTL_SCREENSHOTS")
    return Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")


def new_lines(before: list[str], after: list[str]) -> list[str]:
    """What a pane gained since `before` (the pane only grows while the page stays open)."""
    return after[len(before):] if after[:len(before)] == before else after


def is_probe_line(line: str) -> bool:
    return line.startswith("[readiness probe")


def reset_done(run: list[str], seed_after: bool) -> bool:
    """The reset ended: its summary, then the seed's line or the hint that the data is gone (on a
    cluster the migration and seed Jobs run after the summary)."""
    last = "seeded in" if seed_after else "the database is empty of data"
    return any(is_reset_summary(line) for line in run) and any(last in line for line in run)


def is_reset_summary(line: str) -> bool:
    """dbctl reset's last line: `reset postgresql://kiro:****@.../kiro in 2.86 s`."""
    return re.match(r"reset postgresql://\S+ in [\d.]+ m?s$", line) is not None


# ---------------------------------------------------------------- the overview

def test_overview_shows_the_groups_and_their_resources(tilt, driver, ui, pictures):
    open_overview(driver, ui)
    groups = wait_until(driver, lambda: (lambda g: g if all(label in g for label in GROUPS) else None)(
        overview_groups(driver)), "the app, database and tools groups")
    for label, names in groups_of(tilt).items():
        assert {row["name"] for row in groups[label]} == names, (label, groups[label])
    everything_ready = all(not row["error"] for rows in groups.values() for row in rows)
    assert everything_ready, groups
    if not tilt.cluster:
        screenshot(driver, pictures / "tilt-overview.png", size=(1600, 1560))  # every group, every column


def test_each_button_sits_on_its_resource(driver, ui):
    open_overview(driver, ui)
    wait_until(driver, lambda: overview_row(driver, "backend"), "the backend's row")
    for rows in overview_groups(driver).values():
        for row in rows:
            assert sorted(row["buttons"]) == sorted(BUTTONS.get(row["name"], [])), row
    for name, texts in BUTTONS.items():
        open_resource(driver, ui, name)
        wait_until(driver, lambda: sorted(button_texts(driver, name)) == sorted(texts), f"{name}'s buttons {texts}", 30)
        for text in texts:
            assert button(driver, name, text).text.endswith(text)  # after the icon (its name, offline)


# ---------------------------------------------------------------- the panes, before any button

def test_the_migration_pane_has_a_line_per_migration_with_its_time_and_a_summary(driver, ui):
    open_resource(driver, ui, "database-migration")
    lines = wait_for_pane(driver, lambda ls: count_lines(ls, "applied 8 migration(s)") == 1, "the migration summary")
    for name in MIGRATIONS:
        applied = [line for line in lines if line.startswith(f"applied {name} (")]
        assert len(applied) == 1 and re.search(r"\(\d+(\.\d+)? ?(ns|µs|us|ms|s)\)$", applied[0]), (name, lines)
    assert any(re.match(r"applied 8 migration\(s\) in .+; database at version 8$", line) for line in lines), lines


def test_a_probe_writes_one_line_and_nothing_repeats_while_nothing_happens(tilt, driver, ui):
    """Tilt prints a probe's output when its result changes: one line each time, never a body of
    many lines (a local resource's probe; the kubelet's probes print nothing in a pane). And a
    service that simply runs adds nothing: watched for a few probe periods."""
    before = {}
    for name in SERVICES:
        open_resource(driver, ui, name)
        before[name] = settled_pane(driver)
        for previous, line in zip(before[name], before[name][1:]):
            assert not (is_probe_line(previous) and is_probe_line(line)), f"a multi-line probe body: {before[name]}"
    if not tilt.cluster:
        assert "[readiness probe: success] ready: schema at version 8, every migration applied" in before["backend"]
    time.sleep(8)  # four periods of the 2 s probes: a line repeated every few seconds would show
    for name in SERVICES:
        open_resource(driver, ui, name)
        now = settled_pane(driver)
        repeated = [line for line in new_lines(before[name], now) if line.strip() and line in before[name]]
        assert not repeated, f"{name} repeats itself: {repeated}"


# ---------------------------------------------------------------- buttons

def test_migrate_runs_the_migration_and_its_progress_shows_in_the_pane(tilt, driver, ui, pictures):
    tilt.wipe_database()
    open_resource(driver, ui, "database-migration")
    before = settled_pane(driver)
    assert count_lines(before, "applied 8 migration(s)") == 1, before  # the run at startup
    button(driver, "database-migration", "Migrate").click()
    # On a cluster the Job's lines come twice: dbctl streams the Job it re-created, and Tilt follows its pod.
    lines = wait_for_pane(driver, lambda ls: count_lines(ls, "applied 8 migration(s)") >= 2, "the Migrate run")
    run = new_lines(before, lines)
    for name in MIGRATIONS:
        assert any(line.startswith(f"applied {name} (") for line in run), (name, run)
    assert tilt.history()[:8] == list(range(1, 9))
    if not tilt.cluster:
        screenshot(driver, pictures / "tilt-migration-pane.png")


def test_db_status_shows_a_readable_table_in_the_pane(driver, ui):
    open_resource(driver, ui, "postgres")
    before = settled_pane(driver)
    button(driver, "postgres", "DB status").click()
    lines = wait_for_pane(driver, lambda ls: count_lines(new_lines(before, ls), "audit logging and rate limiting") >= 1,
                          "the status table")
    run = new_lines(before, lines)
    assert any("initial schema" in line for line in run), run
    assert not any(line.lstrip().startswith(("{", "}", '"')) for line in run), run  # words, not JSON
    assert not any("Traceback" in line for line in run), run


def test_health_shows_each_check_in_the_pane(driver, ui):
    open_resource(driver, ui, "backend")
    before = settled_pane(driver)
    button(driver, "backend", "Health").click()
    lines = wait_for_pane(driver, lambda ls: count_lines(new_lines(before, ls), "checks passed") == 1, "the health summary")
    run = new_lines(before, lines)
    assert any("answered 200" in line for line in run), run
    assert not any("FAIL" in line or "Traceback" in line for line in run), run


def test_dev_setup_from_its_trigger_says_ok_or_what_to_fix_on_each_line(tilt, driver, ui):
    open_overview(driver, ui)
    wait_until(driver, lambda: trigger_button(driver, "dev-setup"), "dev-setup's trigger", 30).click()
    open_resource(driver, ui, "dev-setup")
    lines = wait_for_pane(driver, lambda ls: any("checks passed" in line for line in ls), "dev-setup's summary")
    checks = [line.strip() for line in lines if re.match(r"\s+(ok|warn|FAIL)\s", line)]
    assert any(line.startswith("ok   tool tilt") for line in checks), lines
    tool = "ok   tool kubectl" if tilt.cluster else "ok   tool PostgreSQL server"
    assert any(line.startswith(tool) for line in checks), lines
    assert not any(line.startswith("FAIL") for line in checks), lines


def test_db_reset_triggered_once_turns_red_and_says_what_to_do(tilt, driver, ui):
    """The trigger's own confirmation: the first run only says what it would drop, and fails."""
    tables = tilt.query("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")[0][0]
    open_overview(driver, ui)
    wait_until(driver, lambda: trigger_button(driver, "db-reset"), "db-reset's trigger", 30).click()
    wait_until(driver, lambda: (overview_row(driver, "db-reset") or {}).get("error"), "db-reset to turn red")
    open_resource(driver, ui, "db-reset")
    lines = wait_for_pane(driver, lambda ls: any(is_build_failed(line) for line in ls), "db-reset's failed run")
    assert any("trigger it again within 60s" in line for line in lines), lines
    assert filter_count(driver, "Errors") >= 1
    assert tilt.query("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")[0][0] == tables  # nothing dropped


def test_reset_db_asks_first_and_cancel_changes_nothing(tilt, driver, ui):
    tilt.query("CREATE TABLE IF NOT EXISTS kept_by_cancel (id int)")
    open_resource(driver, ui, "postgres")
    before = settled_pane(driver)
    button(driver, "postgres", "Reset DB").click()
    wait_until(driver, lambda: dialog(driver), "the Reset DB dialog", 30)
    assert "Configure Reset DB" in dialog(driver).text and "seed after reset" in dialog(driver).text
    dialog_button(driver, "Cancel").click()
    wait_until(driver, lambda: dialog(driver) is None, "the dialog to close", 30)
    assert tilt.query("SELECT to_regclass('kept_by_cancel') IS NOT NULL")[0][0] is True
    assert not any("dropped and re-created" in line for line in new_lines(before, pane_lines(driver)))


@pytest.mark.parametrize("seed_after", [True, False])  # in this order: the second reset drops the seeded rows
def test_reset_db_with_its_seed_checkbox(tilt, driver, ui, seed_after):
    open_resource(driver, ui, "postgres")
    before = settled_pane(driver)
    button(driver, "postgres", "Reset DB").click()
    wait_until(driver, lambda: dialog(driver), "the Reset DB dialog", 30)
    set_checkbox(driver, "seed after reset", seed_after)
    dialog_button(driver, "Confirm & Execute").click()
    lines = wait_for_pane(driver, lambda ls: reset_done(new_lines(before, ls), seed_after), "the reset's last line",
                          600 if tilt.cluster else 120)
    run = new_lines(before, lines)
    assert any('dropped and re-created database "kiro"' in line for line in run), run
    assert any("seeded in" in line for line in run) == seed_after, run
    assert (tilt.users() > 0) == seed_after
    assert tilt.history()[:8] == list(range(1, 9))


# ---------------------------------------------------------------- the /health link

def test_the_backend_health_link_opens_a_page_that_says_the_schema_is_ready(driver, ui):
    open_resource(driver, ui, "backend")
    links = wait_until(driver, lambda: endpoint_links(driver, "backend"), "the backend's links", 30)
    assert list(links) == ["backend /health"], links
    original = driver.current_window_handle
    endpoint_link(driver, "backend", "backend /health").click()
    wait_until(driver, lambda: len(driver.window_handles) > 1, "the /health tab", 30)
    driver.switch_to.window([h for h in driver.window_handles if h != original][0])
    try:
        text = wait_until(driver, lambda: (lambda body: body if '"summary"' in body else None)(page_text(driver)),
                          "the /health page", 30)
        assert '"status": "ok"' in text, text
        assert '"summary": "ready: schema at version 8, every migration applied"' in text, text
    finally:
        driver.close()
        driver.switch_to.window(original)


# ---------------------------------------------------------------- a broken migration

@pytest.mark.timeout(1200)  # on a cluster: two image builds and a Job's retries
def test_a_broken_migration_turns_red_with_its_error_in_the_pane_and_among_the_errors(tilt, driver, ui):
    """Tilt gives a log line a level only for what Tilt itself says (tilt-dev/tilt#4762): a command's
    own output is never an error line. A failed run's "Build Failed" line is (counted in "Errors (N)");
    dbctl's error line is the line just above it. The backend's readiness probe failing is a warning,
    shown in the Warnings view with the server's one line saying why just above it."""
    broken = tilt.project / "migrations" / "099_broken.sql"
    broken.write_text("SELECT 1;\nALTER TABLE no_such_table ADD COLUMN x int;\n")
    if tilt.cluster:
        return broken_migration_on_the_cluster(tilt, driver, ui, broken)
    try:
        open_overview(driver, ui)
        wait_until(driver, lambda: (overview_row(driver, "database-migration") or {}).get("error"),
                   "database-migration to turn red")
        open_resource(driver, ui, "database-migration")
        lines = wait_for_pane(driver, lambda ls: any(is_build_failed(line) for line in ls), "the failed run")
        failed_at = max(i for i, line in enumerate(lines) if is_build_failed(line))
        error = lines[failed_at - 1]  # dbctl's one line: file, line, PostgreSQL's message, what to do
        assert error.startswith("Error: migrations/099_broken.sql:2: ") and "no_such_table" in error, lines
        assert "fix it and run dbctl migrate again" in error and "Traceback" not in "\n".join(lines), lines
        assert filter_count(driver, "Errors") >= 1
        filter_button(driver, "Errors").click()
        shown = wait_until(driver, lambda: (lambda ls: ls if any(level == "error" for level, _ in ls) else None)(
            pane_lines_with_level(driver)), "the Errors view")
        assert any(level == "error" and is_build_failed(text) for level, text in shown), shown

        # The pill's count leaves out a local resource's runtime warnings (web/src/alerts.ts: "TODO: local
        # resource runtime alerts"), but its view shows them.
        open_resource(driver, ui, "backend")
        filter_button(driver, "Warnings").click()
        wait_until(driver, lambda: warning_with_reason(pane_lines_with_level(driver), "099_broken.sql"),
                   "the Warnings view to show the probe's failure, the server's reason above it")
    finally:
        broken.unlink()
    open_overview(driver, ui)
    wait_until(driver, lambda: (lambda row: row and not row["error"])(overview_row(driver, "database-migration")),
               "database-migration to turn green again")
    tilt.wait_ready(["backend"])


def broken_migration_on_the_cluster(tilt, driver, ui, broken: Path) -> None:
    """On a cluster the file rebuilds the image and Tilt re-creates the Job, whose pod fails: the
    resource turns red and the pod's error line (the file's path in the image) shows in its pane.
    Removing the file turns it green again."""
    slow = 600  # an image build, then the Job's pod (and its retries)
    try:
        open_overview(driver, ui)
        wait_until(driver, lambda: (overview_row(driver, "database-migration") or {}).get("error"),
                   "database-migration to turn red", slow)
        open_resource(driver, ui, "database-migration")
        lines = wait_for_pane(driver, lambda ls: any("099_broken.sql:2: " in line for line in ls),
                              "the Job's error line", slow)
        (error, *_) = [line for line in lines if "099_broken.sql:2: " in line]
        assert error.startswith("Error: /app/migrations/099_broken.sql:2: ") and "no_such_table" in error, lines
        assert "fix it and run dbctl migrate again" in error and "Traceback" not in "\n".join(lines), lines
        # Not in the pane's "Errors (N)": Tilt counts only lines it marks as errors itself, and a
        # Job's failed pod is shown by the resource's red status, not by a log line (tilt-dev/tilt#4762).
    finally:
        broken.unlink()
    open_overview(driver, ui)
    wait_until(driver, lambda: (lambda row: row and not row["error"])(overview_row(driver, "database-migration")),
               "database-migration to turn green again", slow)
    tilt.wait_ready(["backend"], timeout=slow)


def warning_with_reason(shown: list[tuple[str, str]], reason: str) -> bool:
    """A probe's warning line in the view, and the server's line saying why (containing `reason`)
    just above it (the UI shows a few lines before each warning with it)."""
    return any(level == "warning" and text.startswith("[readiness probe: failure]") and i > 0
               and " 503: " in shown[i - 1][1] and reason in shown[i - 1][1]
               for i, (level, text) in enumerate(shown))


def is_build_failed(line: str) -> bool:
    """Tilt's error line for a failed run of a local resource's command."""
    return line.startswith('Build Failed: Command "') and line.endswith('failed: exit status 1')
