"""The /ui demo page end to end in headless Chromium: choose a shipped digit, see its label and heatmap.

Needs Debian's `chromium` and `chromium-driver` packages (the Makefile installs them) and selenium;
nothing is downloaded. VITSERVE_DEMO_SCREENSHOT=PATH also saves the page as docs/img/ shows it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.support import DEFAULT_MODEL_DIR, SAMPLES_DIR

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        pytest.fail(f"{missing} not found: `apt-get install -y chromium chromium-driver` (see the Makefile)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",  # small /dev/shm in containers crashes tabs
        "--window-size=1100,760",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    # An explicit driver path: selenium's own driver manager (which would download) is never consulted.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def shipped_digit(url: str, folder: Path) -> tuple[Path, str]:
    """A shipped sample digit that the served model labels correctly, and its label.

    The shipped samples/ folder when there is one, else a held-out digit saved as a PNG file.
    """
    candidates: list[tuple[Path, str]] = []
    labels_file = SAMPLES_DIR / "labels.json"
    if labels_file.is_file():
        labels = json.loads(labels_file.read_text())
        candidates = [(SAMPLES_DIR / name, str(label)) for name, label in sorted(labels.items())]
    else:
        with np.load(DEFAULT_MODEL_DIR / "heldout.npz") as data:
            for i in range(20):
                path = folder / f"heldout-{i}.png"
                Image.fromarray(data["images"][i]).save(path)
                candidates.append((path, str(int(data["labels"][i]))))
    for path, label in candidates:
        answer = httpx.post(f"{url}/classify", files={"image": (path.name, path.read_bytes())}).json()
        if answer.get("label") == label:
            return path, label
    raise AssertionError("the served model labels none of the shipped digits correctly")


def test_demo_page_shows_label_and_heatmap(
    vitserve_server: str, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    path, label = shipped_digit(vitserve_server, tmp_path)
    browser.get(f"{vitserve_server}/ui")
    assert "vitserve" in browser.title
    browser.find_element(By.ID, "file").send_keys(str(path.resolve()))
    WebDriverWait(browser, 60).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
    )
    state = browser.find_element(By.TAG_NAME, "body").get_attribute("data-state")
    assert state == "done", browser.find_element(By.ID, "status").text

    assert browser.find_element(By.ID, "label").get_attribute("data-label") == label
    ranked = browser.find_elements(By.CSS_SELECTOR, "#topk li")
    assert len(ranked) == 5 and ranked[0].get_attribute("data-label") == label

    # The overlay <img> decoded a real PNG, and the grid canvas has more than one colour on it.
    size = browser.execute_script(
        "const i = document.getElementById('overlay'); return [i.complete, i.naturalWidth, i.naturalHeight];"
    )
    assert size == [True, 224, 224]
    colours = browser.execute_script(
        """const c = document.getElementById('heatmap');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const seen = new Set();
        for (let i = 0; i < d.length; i += 4) seen.add(`${d[i]},${d[i + 1]},${d[i + 2]},${d[i + 3]}`);
        return seen.size;"""
    )
    assert colours > 5

    # What the user sees, not the canvas's buffer: the grid on screen, in colour, not hidden or blank.
    shown = Image.open(io.BytesIO(browser.find_element(By.ID, "heatmap").screenshot_as_png)).convert("RGB")
    assert shown.width > 0 and len(set(shown.getdata())) > 5
    screenshot = browser.get_screenshot_as_png()
    if target := os.environ.get("VITSERVE_DEMO_SCREENSHOT"):
        Path(target).write_bytes(screenshot)
