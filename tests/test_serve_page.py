"""The inference page in a real headless Chromium (Debian's chromium and chromedriver), served
by a real `seglab serve`: upload an image, wait for the overlay, read the legend and the pixels.

Skipped where Chromium is not installed, except under `.ci/run`, which installs it and sets
SEGLAB_REQUIRE_BROWSER=1 so that a missing browser fails instead. SEGLAB_SCREENSHOTS=FOLDER
also saves the page as FOLDER/serve_page.png (the README's picture).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from seglab.prediction import load_predictor
from tests.browser import MISSING, REQUIRED, browser_available, chromium, severe_messages
from tests.serving import running_server

if not browser_available() and not REQUIRED:
    pytest.skip(MISSING, allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


def wait_for_state(driver, state: str, seconds: float = 60) -> None:
    WebDriverWait(driver, seconds).until(
        lambda d: (
            d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in (state, "error")
        )
    )
    assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-state") == state, (
        driver.find_element(By.ID, "status").text
    )


def test_upload_through_the_page_shows_the_overlay_and_legend(
    browser, trained_run: dict, tmp_path: Path
):
    ckpt = trained_run["metrics"]["best_ckpt"]
    predictor = load_predictor(ckpt, "cpu")
    source = sorted((trained_run["export"] / "JPEGImages").glob("*.jpg"))[0]
    upload = tmp_path / "upload.png"  # lossless, not the training size or aspect
    cv2.imwrite(str(upload), cv2.resize(cv2.imread(str(source)), (96, 56)))
    rgb = cv2.cvtColor(cv2.imread(str(upload)), cv2.COLOR_BGR2RGB)
    expected = np.asarray(predictor.info.colors, np.uint8)[predictor.predict(rgb)]

    with running_server([f"ckpt={ckpt}", "device=cpu"]) as url:
        browser.get(url)
        wait_for_state(browser, "ready")
        rows = browser.find_elements(By.CSS_SELECTOR, "#legend tbody tr")
        assert [r.text.strip() for r in rows] == [f"{n} –" for n in predictor.info.names]
        browser.find_element(By.ID, "file").send_keys(str(upload))
        wait_for_state(browser, "done")

        # The legend lists every class of the checkpoint, with the predicted areas.
        rows = browser.find_elements(By.CSS_SELECTOR, "#legend tbody tr")
        names = {r.get_attribute("data-class-index"): r.text for r in rows}
        assert len(rows) == len(predictor.info.names)
        counts = np.bincount(predictor.predict(rgb).ravel(), minlength=len(rows))
        for index, name in enumerate(predictor.info.names):
            assert names[str(index)].startswith(name)
            assert names[str(index)].endswith(f"{100 * counts[index] / counts.sum():.2f} %")

        # At full opacity the overlay's pixels are the class colours of predict.py's mask.
        browser.execute_script(
            "const s = document.getElementById('opacity'); s.value = 100;"
            "s.dispatchEvent(new Event('input'));"
        )
        pixels = browser.execute_script(
            "const c = document.getElementById('overlay');"
            "return [c.width, c.height, Array.from(c.getContext('2d')"
            ".getImageData(0, 0, c.width, c.height).data)];"
        )
        width, height, data = pixels
        assert (height, width) == rgb.shape[:2]
        shown = np.asarray(data, np.uint8).reshape(height, width, 4)[..., :3]
        np.testing.assert_array_equal(shown, expected)

        links = [browser.find_element(By.ID, f"download-{k}") for k in ("index", "color")]
        assert all(a.get_attribute("href").startswith("data:image/png;base64,") for a in links)
        assert links[0].get_attribute("download") == "upload_index.png"
        errors = severe_messages(browser)
        assert not errors, errors
        if os.environ.get("SEGLAB_SCREENSHOTS"):
            browser.execute_script(
                "const s = document.getElementById('opacity'); s.value = 55;"
                "s.dispatchEvent(new Event('input'));"
            )
            folder = Path(os.environ["SEGLAB_SCREENSHOTS"])
            folder.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(folder / "serve_page.png"))
