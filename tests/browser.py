"""Debian's headless Chromium (with its chromedriver) for the tests that look at pages.

Where Chromium is not installed the page tests are skipped, except under `.ci/run`, which
installs it and sets SEGLAB_REQUIRE_BROWSER=1, so that a missing browser fails there instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
REQUIRED = os.environ.get("SEGLAB_REQUIRE_BROWSER") == "1"
MISSING = "Debian's chromium and chromium-driver are not installed"


def browser_available() -> bool:
    return bool(CHROMIUM and CHROMEDRIVER)


@contextmanager
def chromium(width: int = 1200, height: int = 800) -> Iterator:
    """A headless Chromium driven by selenium, its console log kept for `severe_messages`."""
    if not browser_available():
        if REQUIRED:
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", f"--window-size={width},{height}"):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def severe_messages(driver) -> list[dict]:
    """The console's errors since the last call (failed loads, script exceptions)."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def broken_images(driver) -> list[str]:
    """The `<img>` elements of the page that did not decode (by their alt text)."""
    return driver.execute_script(
        "return Array.from(document.images)"
        ".filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt || i.src.slice(0, 60));"
    )
