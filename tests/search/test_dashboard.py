"""`gantune dashboard`: the Optuna study a search persists by default, opened in optuna-dashboard
and looked at in headless Chromium, as a person would after a search logged to a tracking server
(the `served_search` fixture: its study lands in the search's storage path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from chromium import wait_in_browser
from ray_processes import BIN, free_port  # not from conftest: later conftests take that name

from gantune.search.dashboard import DashboardError, find_study
from gantune.search.options import SearchOptions, default_optuna_storage


def test_the_study_is_persisted_beside_a_sqlite_store_else_in_the_storage_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_optuna_storage(f"sqlite:///{tmp_path}/db/mlflow.db", "ray_results") == \
        f"sqlite:///{tmp_path}/db/optuna.db"
    assert default_optuna_storage("http://127.0.0.1:5000", "ray_results") == f"sqlite:///{tmp_path}/ray_results/optuna.db"
    assert default_optuna_storage("http://mlflow:5000", "s3://bucket/runs") is None  # no SQLite on S3: in memory
    given = SearchOptions(experiment="e", tracking_uri="sqlite:///m.db", optuna_storage="postgresql://db/optuna")
    assert given.optuna_storage == "postgresql://db/optuna"
    assert SearchOptions(experiment="e", tracking_uri="sqlite:///m.db").optuna_storage == \
        f"sqlite:///{tmp_path}/optuna.db"


def test_a_study_without_its_password_or_in_memory_is_refused_naming_the_flag(tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("e")
    for logged, message in [("postgresql://u:***@db/optuna", "--optuna-storage"), ("None", "in memory")]:
        run = client.create_run(experiment_id, tags={"gantune.role": "search"})
        client.log_param(run.info.run_id, "options.optuna_storage", logged)
        with pytest.raises(DashboardError, match=message):
            find_study(client, "e")
    with pytest.raises(DashboardError, match="no MLflow experiment named 'nope'"):
        find_study(client, "nope")


@pytest.mark.browser
@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_dashboard_serves_the_searchs_study_and_the_browser_lists_its_trials(served_search, browser):
    from selenium.webdriver.common.by import By

    storage = f"sqlite:///{served_search.workdir / 'ray_results' / 'optuna.db'}"  # the default, not a flag
    (name,) = optuna.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        [str(BIN / "gantune"), "dashboard", "--experiment", "served", "--tracking-uri", served_search.url,
         "--port", str(port)],
        cwd=served_search.workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert f"study '{name}' in {storage}" in line, line + proc.stderr.read() if proc.poll() is not None else line
        url = proc.stdout.readline().strip()
        assert url.startswith(f"http://127.0.0.1:{port}/dashboard/studies/"), url  # loopback by default
        browser.get(f"{url}/trials")

        def trial_list(driver):
            text = driver.find_element(By.TAG_NAME, "body").text
            return text if f"{len(trials)} Trials" in text else None

        text = wait_in_browser(browser, trial_list, f"optuna-dashboard did not list the {len(trials)} trials")
        assert name in text
        assert all(f"Trial {t.number}" in text for t in trials), text[:2000]
        browser.save_screenshot(str(Path("/tmp/gantune-dashboard-trials.png")))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_dashboard_help_is_quick_to_find():
    out = subprocess.run([sys.executable, "-m", "gantune.search.cli", "dashboard", "--help"],
                         capture_output=True, text=True, timeout=120).stdout
    assert "example: gantune dashboard --experiment demo" in out and "127.0.0.1" in out
