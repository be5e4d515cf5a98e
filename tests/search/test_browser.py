"""The MLflow UI as a person uses it: headless Chromium (Debian's chromium + chromium-driver,
installed by `make browser-deps`) against the real tracking server the smoke search logged to.

The experiment's runs page must show the search's parent run with its trial runs folded under
it (hidden until the parent row is expanded, listed after expanding), and a trial's sample grid
must load as an image on its artifacts page."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest
from chromium import wait_in_browser

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(900)]

SCREENSHOT_COPY = Path("/tmp/gantune-browser-screenshot.png")
ARTIFACT_SCREENSHOT_COPY = Path("/tmp/gantune-browser-artifact.png")


def wait_for(driver, condition, what: str):
    return wait_in_browser(driver, condition, f"the MLflow UI did not show {what}")


def run_links(driver, run_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, f"a[href$='/runs/{run_id}']")


def close_assistant(driver) -> None:
    """The UI opens its assistant panel over the table; a person would close it first."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.XPATH, "//button[@aria-label='Close']"):
        try:
            button.click()
        except WebDriverException:
            pass


def save_screenshot(driver, tmp_path: Path, name: str, copy: Path) -> Path:
    path = tmp_path / name
    assert driver.save_screenshot(str(path)), f"could not save {path}"
    shutil.copyfile(path, copy)  # for a person to look at after the run
    return path


def png_width(data: bytes) -> int:
    return struct.unpack(">I", data[16:20])[0]  # IHDR width


ROOT_SCREENSHOT_COPY = Path("/tmp/gantune-browser-root-runs.png")


def test_from_the_root_url_a_click_on_the_experiment_shows_val_auc_in_its_runs_table(served_search, browser, tmp_path):
    """A person types the server's address and clicks the experiment: no mode switch, no
    Columns menu (gantune server serves search/mlflow_ui.py's app; the profile has never chosen a
    mode). First in the module, so the shared browser profile is still fresh."""
    from selenium.webdriver.common.by import By

    name = served_search.client.get_experiment(served_search.experiment_id).name
    browser.get(f"{served_search.url}/")

    def experiment_links(driver):
        return [a for a in driver.find_elements(By.TAG_NAME, "a") if a.text.strip() == name]

    wait_for(browser, experiment_links, f"a link to the experiment '{name}' on the home page")[0].click()

    def runs_table_columns(driver):
        headers = {h.text.strip() for h in driver.find_elements(By.CSS_SELECTOR, ".ag-header-cell")}
        on_runs = f"/experiments/{served_search.experiment_id}/runs" in driver.current_url
        return headers if on_runs and "val_auc" in headers else None

    headers = wait_for(browser, runs_table_columns, "the experiment's runs table with a val_auc column")
    assert "workflowType=genai" not in browser.current_url
    assert {"val_auc_min_fold", "synth.ratio", "gantune.baseline"} <= headers, headers
    close_assistant(browser)
    save_screenshot(browser, tmp_path, "root_to_runs.png", ROOT_SCREENSHOT_COPY)


def test_experiment_page_nests_trial_runs_under_the_search(served_search, browser, tmp_path):
    from selenium.webdriver.common.by import By

    client, exp = served_search.client, served_search.experiment_id
    runs = client.search_runs([exp])
    parent = next(r for r in runs if r.data.tags.get("gantune.role") == "search")
    trials = [r for r in runs if r.data.tags.get("gantune.role") == "trial"]
    assert len(trials) == 2

    browser.get(f"{served_search.url}/#/experiments/{exp}/runs?workflowType=machine_learning")
    wait_for(browser, lambda d: run_links(d, parent.info.run_id), f"the search run {parent.info.run_id}")
    # Folded under the parent: not listed as rows of their own until the parent is expanded.
    assert all(not run_links(browser, t.info.run_id) for t in trials)
    expand = browser.find_element(
        By.XPATH,
        f"//div[@role='row'][.//a[contains(@href, '/runs/{parent.info.run_id}')]]"
        "//button[contains(@data-component-id, 'runnamecellrenderer')]",
    )
    expand.click()
    wait_for(browser, lambda d: all(run_links(d, t.info.run_id) for t in trials), "the trial runs under the search run")
    close_assistant(browser)
    rows = browser.find_elements(By.CSS_SELECTOR, ".ag-pinned-left-cols-container div[role='row']")
    names = [row.text for row in sorted(rows, key=lambda r: int(r.get_attribute("row-index")))]
    assert len(names) == 3 and parent.info.run_name in names[0]  # the search first, its trials below it
    assert all(any(t.info.run_name in n for n in names[1:]) for t in trials), names
    save_screenshot(browser, tmp_path, "experiment_runs.png", SCREENSHOT_COPY)


def test_trial_sample_grid_loads_on_its_artifacts_page(served_search, browser, tmp_path):
    from selenium.webdriver.common.by import By

    client, exp = served_search.client, served_search.experiment_id
    trials = client.search_runs([exp], "tags.`gantune.role` = 'trial'")
    gan_trial = next(r for r in trials if float(r.data.params["synth.ratio"]) > 0)
    sample = next(a.path for a in client.list_artifacts(gan_trial.info.run_id, "samples") if a.path.endswith(".png"))
    expected_width = png_width(
        Path(client.download_artifacts(gan_trial.info.run_id, sample, str(tmp_path))).read_bytes()
    )

    browser.get(f"{served_search.url}/#/experiments/{exp}/runs/{gan_trial.info.run_id}/artifacts/{sample}")

    def loaded_preview(driver):
        # The preview is the artifact fetched by the UI and shown from a blob: URL.
        images = [
            i for i in driver.find_elements(By.TAG_NAME, "img") if (i.get_attribute("src") or "").startswith("blob:")
        ]
        widths = [driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) for i in images]
        return [w for w in widths if w]

    widths = wait_for(browser, loaded_preview, f"the image preview of {sample}")
    assert expected_width in widths, (widths, expected_width)
    assert sample in browser.find_element(By.TAG_NAME, "body").text
    close_assistant(browser)
    save_screenshot(browser, tmp_path, "trial_sample_artifact.png", ARTIFACT_SCREENSHOT_COPY)
