"""The Dagster UI in a real browser: headless Chromium (the Debian ``chromium`` + ``chromium-driver`` packages, which
``.ci/run`` installs) against ``birdassets ui`` serving the demo's home on loopback.

Screenshots go to ``$BIRDASSETS_TEST_ARTIFACTS/ui/``. Without Chromium the test is skipped with the reason, except
under ``CI=true``, where a missing browser is a failure (no skip may hide one).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from birdassets_tests.ui_server import STOP_S, UiServer, alive, kill_all, start_ui

pytestmark = pytest.mark.slow
ASSETS = ("raw_audio", "mel_dataset", "folds", "encoder", "embeddings", "probe", "scores", "metrics_db", "detections",
          "supervised_model", "supervised_scores", "slds_benchmark", "slds_scores")
"""Every asset of the code location, written out by hand."""
WAIT_S = 120
COVERING = "[role=dialog], [role=alertdialog], .bp5-overlay-open, .bp5-overlay-backdrop, .dagster-backdrop"
"""What an onboarding modal or any other overlay over the page would be."""


def chromium_paths() -> tuple[str, str]:
    """The Chromium binary and its driver, or a skip (a failure under ``CI=true``) naming what is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    why = "needs Chromium and its driver (Debian: apt-get install chromium chromium-driver)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"the browser test {why}; .ci/run installs them")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,1000"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    yield chrome
    chrome.quit()


@pytest.fixture(scope="module")
def ui(demo_home):
    """``birdassets ui --read-only --no-daemon`` on the demo's home (a view that launches nothing); after the
    module, SIGINT must stop it and everything it started within :data:`STOP_S` seconds, exit status 0."""
    home, _ = demo_home
    started: list[UiServer] = []
    try:
        server = start_ui(home, ["--read-only", "--no-daemon"], started, read_only=True)
        yield server
        tree = server.descendants()
        server.process.send_signal(signal.SIGINT)
        server.process.wait(STOP_S + 5)
        deadline = time.monotonic() + STOP_S
        while alive(tree) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert server.process.returncode == 0 and alive(tree) == [], server.log.read_text()[-2000:]
    finally:
        for server in started:
            kill_all(server)


def wait_for(browser, condition, what: str):
    """Poll ``condition(browser)`` until it is truthy (its value) or fail after :data:`WAIT_S` naming ``what``."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT_S, poll_frequency=0.5).until(condition, f"the UI never showed {what}")


def uncovered(browser) -> bool:
    """No dialog or overlay is open, and the element at the page's centre belongs to the page."""
    return browser.execute_script(
        "const open = Array.from(document.querySelectorAll(arguments[0])).filter(e => e.offsetParent !== null);"
        "const hit = document.elementFromPoint(window.innerWidth / 2, window.innerHeight / 2);"
        "return open.length === 0 && hit !== null && hit.closest(arguments[0]) === null;", COVERING)


def expand_sidebar_groups(browser) -> None:
    """Open every collapsed group of the lineage page's sidebar (one click each; the list re-renders)."""
    from selenium.webdriver.common.by import By

    collapsed = "//button[./div[@aria-label='arrow_drop_down' and contains(@style, 'rotate(-90deg)')]]"
    wait_for(browser, lambda b: b.find_elements(By.XPATH, collapsed), "the sidebar's groups")
    while buttons := browser.find_elements(By.XPATH, collapsed):
        buttons[0].click()
        wait_for(browser, lambda b: len(b.find_elements(By.XPATH, collapsed)) < len(buttons), "a group opening")


def show_markdown(browser, key: str):
    """Open the ``[Show Markdown]`` dialog of metadata entry ``key``; returns the dialog."""
    from selenium.webdriver.common.by import By

    link = wait_for(browser, lambda b: b.find_element(
        By.XPATH, f"//tr[.//span[text()='{key}']]//*[contains(text(), 'Show Markdown')]"), f"the {key} entry")
    link.click()
    return wait_for(browser, lambda b: b.find_element(By.CSS_SELECTOR, "[role=dialog]"), f"the {key} dialog")


def close_dialog(browser) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.XPATH, "//div[@role='dialog']//button[normalize-space()='Close']").click()
    wait_for(browser, uncovered, "the page again after closing the dialog")


def test_the_asset_graph_lists_every_asset_and_no_modal_covers_it(ui, browser, artifacts_dir):
    browser.get(f"{ui.origin}/asset-groups")
    wait_for(browser, lambda b: "Global asset lineage" in b.find_element("tag name", "body").text, "the lineage page")
    assert uncovered(browser), "an overlay (the onboarding modal?) covers the asset graph"
    expand_sidebar_groups(browser)
    text = wait_for(browser, lambda b: (t := b.find_element("tag name", "body").text) and all(
        name in t.split("\n") for name in ASSETS) and t, "every asset in the graph's list")
    assert set(ASSETS) <= set(text.split("\n"))
    browser.save_screenshot(str(screens(artifacts_dir) / "asset_graph.png"))
    assert uncovered(browser), "an overlay (the onboarding modal?) covers the asset graph"


def test_a_scores_materialization_shows_its_plots_and_leaderboard(ui, browser, artifacts_dir):
    browser.get(f"{ui.origin}/assets/scores")
    wait_for(browser, lambda b: "Latest materialization" in b.find_element("tag name", "body").text, "the scores page")
    assert uncovered(browser), "an overlay (the onboarding modal?) covers the scores page"
    for name in ("plot_per_class_ap", "plot_pr_curves"):
        dialog = show_markdown(browser, name)
        image = wait_for(browser, lambda b: b.execute_script(
            "const i = arguments[0].querySelector('img'); return i && i.complete && i.naturalWidth > 0 && i;",
            dialog), f"the {name} image")
        assert image.get_attribute("src").startswith("data:image/png;base64,iVBORw0KGgo")
        assert image.size["width"] >= 300 and image.size["height"] >= 150  # drawn at a readable size
        browser.save_screenshot(str(screens(artifacts_dir) / f"scores_{name}.png"))
        close_dialog(browser)
    dialog = show_markdown(browser, "scores")  # the Markdown table renders after the dialog opens: wait for it
    wait_for(browser, lambda b: all(word in dialog.text for word in ("probe", "metric", "cmAP", "linear", "chance")),
             "the scores table with its probes and metrics")
    browser.save_screenshot(str(screens(artifacts_dir) / "scores_leaderboard.png"))
    close_dialog(browser)


def screens(artifacts_dir: Path) -> Path:
    folder = artifacts_dir / "ui"
    folder.mkdir(exist_ok=True)
    return folder
