"""Tilt's real web UI in a real browser (Debian's Chromium, headless, through its chromedriver).

Plain functions over a selenium WebDriver that read what a person sees and do what a person
does: the overview's groups and resources, a resource's buttons, its log pane, the log filters.
The selectors are the UI's own labels and ids (Tilt v0.37.6, web/src): `tableOverview-<label>`
on each group, the "Resource Name" and "Widgets" columns, `<name> links and custom buttons` on a
resource's action bar, `Trigger <text>` on a button, `Log pane` and its `LogLine`s.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1400, 900)
WAIT = 120  # seconds: a generous bound for anything the UI shows after Tilt or a command acted


def start_chromium(profile: Path) -> WebDriver:
    """Headless Chromium with a private profile; no sandbox (the tests may run as root)."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-extensions", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


class Browser:
    """One Chromium for a test module: started lazily, its profile removed at the end."""

    def __init__(self):
        self.profile = Path(tempfile.mkdtemp(prefix="dbctl-chromium-"))
        self.driver = start_chromium(self.profile)

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


def wait_until(driver: WebDriver, condition: Callable[[], object], what: str, timeout: float = WAIT):
    """Poll `condition` until it returns something truthy; a stale element (React re-rendered) is retried."""
    def attempt(_driver):
        try:
            return condition()
        except (StaleElementReferenceException, WebDriverException) as exc:
            if "no such window" in str(exc):
                raise
            return None
    return WebDriverWait(driver, timeout, poll_frequency=0.5).until(attempt, f"waited {timeout}s for {what}")


# ---------------------------------------------------------------- pages

def open_overview(driver: WebDriver, base: str) -> None:
    """The table of every resource, grouped by label."""
    driver.get(f"{base}/overview")
    wait_until(driver, lambda: driver.find_elements(By.CSS_SELECTOR, "[id^='tableOverview-']"), "the overview's groups")


def open_resource(driver: WebDriver, base: str, name: str, level: str = "") -> None:
    """A resource's page: its action bar (links, buttons, log filters) and its log pane."""
    driver.get(f"{base}/r/{name}/overview" + (f"?level={level}" if level else ""))
    wait_until(driver, lambda: driver.find_elements(By.CSS_SELECTOR, "[aria-label='Log pane']"), f"{name}'s log pane")


# ---------------------------------------------------------------- the overview

GROUPS_JS = """
const groups = {};
for (const summary of document.querySelectorAll("[id^='tableOverview-']")) {
  const label = summary.id.slice('tableOverview-'.length);
  const table = summary.parentElement.querySelector('table');
  if (!table) continue;
  const headers = [...table.querySelectorAll("thead [role='columnheader']")].map(th => th.innerText.trim());
  const nameColumn = headers.indexOf('Resource Name');
  const widgetsColumn = headers.indexOf('Widgets');
  groups[label] = [...table.querySelectorAll('tbody tr')].filter(row => row.cells.length > nameColumn).map(row => ({
    name: row.cells[nameColumn].innerText.trim(),
    error: !!row.cells[nameColumn].querySelector('.has-error'),
    buttons: widgetsColumn < 0 ? [] : [...row.cells[widgetsColumn].querySelectorAll("button[aria-label^='Trigger ']")]
      .map(b => b.getAttribute('aria-label').slice('Trigger '.length)),
  }));
}
return groups;
"""


def overview_groups(driver: WebDriver) -> dict[str, list[dict]]:
    """{group label: [{name, error, buttons}]} as the overview table shows them (groups expanded)."""
    return driver.execute_script(GROUPS_JS)


def overview_row(driver: WebDriver, name: str) -> dict | None:
    return next((row for rows in overview_groups(driver).values() for row in rows if row["name"] == name), None)


def trigger_button(driver: WebDriver, name: str) -> WebElement:
    """The ↻ in the resource's row of the overview ("Trigger update"): runs a manual resource."""
    return driver.find_element(By.XPATH, f"//tr[.//button[normalize-space(.)='{name}']]"
                                         "//button[starts-with(@aria-label, 'Trigger update')]")


# ---------------------------------------------------------------- a resource's page

def action_bar(driver: WebDriver, name: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f"[aria-label='{name} links and custom buttons']")


def button_texts(driver: WebDriver, name: str) -> list[str]:
    """The text on each custom button of the resource, as shown (offline the icon font shows its
    icon's name, e.g. "upgrade", in front: that is the machine, not the Tiltfile)."""
    bars = driver.find_elements(By.CSS_SELECTOR, f"[aria-label='{name} links and custom buttons']")
    if not bars:
        return []
    return [b.get_attribute("aria-label").removeprefix("Trigger ")
            for b in bars[0].find_elements(By.CSS_SELECTOR, "button[aria-label^='Trigger ']")]


def button(driver: WebDriver, name: str, text: str) -> WebElement:
    return action_bar(driver, name).find_element(By.CSS_SELECTOR, f"button[aria-label='Trigger {text}']")


def endpoint_links(driver: WebDriver, name: str) -> dict[str, str]:
    """{link text: URL} of the resource's links in its action bar."""
    return {a.text: a.get_attribute("href") for a in action_bar(driver, name).find_elements(By.TAG_NAME, "a")}


def endpoint_link(driver: WebDriver, name: str, text: str) -> WebElement:
    return action_bar(driver, name).find_element(By.XPATH, f".//a[normalize-space(.)='{text}']")


def pane_lines(driver: WebDriver) -> list[str]:
    """The log pane's lines as shown (one per LogLine element)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(\"[aria-label='Log pane'] .LogLine\")]"
        ".map(l => l.innerText.replace(/\\n+$/, ''));")


def pane_lines_with_level(driver: WebDriver) -> list[tuple[str, str]]:
    """(level, text) of each line in the pane: level "error", "warning" or "" as the UI marks it."""
    return [tuple(x) for x in driver.execute_script(
        "return [...document.querySelectorAll(\"[aria-label='Log pane'] .LogLine\")].map(l => ["
        "l.classList.contains('is-error') ? 'error' : l.classList.contains('is-warning') ? 'warning' : '',"
        "l.innerText.replace(/\\n+$/, '')]);")]


def wait_for_pane(driver: WebDriver, condition: Callable[[list[str]], bool], what: str,
                  timeout: float = WAIT) -> list[str]:
    """Wait until the pane's lines satisfy `condition`; return them. On a timeout the pane's last lines are
    in the failure, so it says what the pane showed instead."""
    try:
        return wait_until(driver, lambda: (lambda lines: lines if condition(lines) else None)(pane_lines(driver)),
                          what, timeout)
    except TimeoutException as exc:
        try:
            shown = pane_lines(driver)[-15:]
        except WebDriverException:
            shown = ["(the pane could not be read)"]
        raise TimeoutException(f"{exc.msg}; the pane's last lines: {shown}") from None


def settled_pane(driver: WebDriver, timeout: float = WAIT) -> list[str]:
    """The pane's lines once it has loaded: the UI receives a resource's log over its websocket and
    draws it in chunks, so a page just opened may show part of it. Settled: two reads a second apart agree."""
    last: list[list[str]] = [[]]

    def settled():
        lines = pane_lines(driver)
        same = lines and lines == last[0]
        last[0] = lines
        if not same:
            time.sleep(1)
        return lines if same else None
    return wait_until(driver, settled, "the log pane to load", timeout)


def count_lines(lines: list[str], text: str) -> int:
    return sum(text in line for line in lines)


def filter_button(driver: WebDriver, level_word: str) -> WebElement:
    """The log filter pill "Errors (N)" or "Warnings (N)"."""
    return driver.find_element(By.XPATH, f"//button[starts-with(normalize-space(.), '{level_word} (')]")


def filter_count(driver: WebDriver, level_word: str) -> int:
    return int(filter_button(driver, level_word).text.split("(", 1)[1].rstrip(")"))


# ---------------------------------------------------------------- dialogs

def dialog(driver: WebDriver) -> WebElement | None:
    dialogs = driver.find_elements(By.CSS_SELECTOR, "[role='dialog']")
    return dialogs[0] if dialogs and dialogs[0].is_displayed() else None


def dialog_button(driver: WebDriver, text: str) -> WebElement:
    return dialog(driver).find_element(By.XPATH, f".//button[normalize-space(.)='{text}']")


def set_checkbox(driver: WebDriver, label: str, checked: bool) -> None:
    """Tick or untick the dialog's checkbox with this label, as a person does: clicking its label."""
    box = dialog(driver).find_element(By.XPATH, f".//label[normalize-space(.)='{label}']")
    checkbox = box.find_element(By.CSS_SELECTOR, "input[type='checkbox']")
    if checkbox.is_selected() != checked:
        box.click()
    wait_until(driver, lambda: checkbox.is_selected() == checked, f"'{label}' to be {'' if checked else 'un'}checked", 10)


def page_text(driver: WebDriver) -> str:
    """The text of the page in the current tab (a JSON answer shows as text)."""
    return driver.find_element(By.TAG_NAME, "body").text


def screenshot(driver: WebDriver, path: Path, size: tuple[int, int] = WINDOW) -> Path:
    """A PNG of the window at `size` (larger to show a whole page), then the window as before."""
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.set_window_size(*size)
    try:
        time.sleep(1)  # the UI lays itself out again for the new size
        driver.save_screenshot(str(path))
    finally:
        driver.set_window_size(*WINDOW)
    return path
