"""`gantune report`: the pieces on hand-made trial runs (fast), then the command on a real smoke
search logged to a real tracking server (the `served_search` fixture, shared with the browser test)."""

from __future__ import annotations

import base64
import math
import re
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from gantune.search.plots import ratio_plot
from gantune.search.report import leaderboard, optuna_plots, optuna_study
from gantune.search.runs import SearchView, space_from_resolved, typed_value
from gantune.search.space import load_space

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_run(
    trial_id: str, auc: float | None, params: dict, status: str = "FINISHED", baseline: str | None = None, **metrics
):
    tags = {"gantune.trial_id": trial_id, **({"gantune.baseline": baseline} if baseline else {})}
    values = {**({"val_auc": auc} if auc is not None else {}), "folds_done": 3.0}
    values.update(metrics)
    return SimpleNamespace(
        info=SimpleNamespace(run_id=f"run-{trial_id}", status=status),
        data=SimpleNamespace(metrics=values, params={k: str(v) for k, v in params.items()}, tags=tags),
    )


@pytest.fixture
def view():
    """Five trials of the demo space: the real-only baseline, three GAN trials (one diverged),
    and one that failed."""
    space = load_space(ROOT / "spaces" / "demo.yaml")
    space = space_from_resolved(space.resolved(), "demo")
    runs = [
        fake_run(
            "base",
            0.70,
            {"gan.lr": 3.1622776601683794e-04, "gan.batch_size": 32, "synth.ratio": 0.0},
            baseline="real_only",
        ),
        fake_run("a", 0.75, {"gan.lr": 2e-4, "gan.batch_size": 64, "synth.ratio": 1.5}, val_auc_min_fold=0.62),
        fake_run("b", 0.66, {"gan.lr": 8e-4, "gan.batch_size": 32, "synth.ratio": 0.5}, folds_done=1.0),
        fake_run("div", 0.0, {"gan.lr": 9e-4, "gan.batch_size": 32, "synth.ratio": 2.0}, diverged=1.0),
        fake_run("err", None, {"gan.lr": 1e-4, "gan.batch_size": 64, "synth.ratio": 1.0}, status="FAILED"),
    ]
    distributions = space.optuna_space()
    trials = {r.data.tags["gantune.trial_id"]: r for r in runs}
    params = {t: {k: typed_value(v, distributions[k]) for k, v in r.data.params.items()} for t, r in trials.items()}
    return SearchView("demo", SimpleNamespace(), space, trials, params)


def test_typed_value_gives_back_what_optuna_sampled():
    choice = optuna.distributions.CategoricalDistribution([32, 64])
    assert typed_value("64", choice) == 64 and isinstance(typed_value("64", choice), int)
    assert typed_value("False", optuna.distributions.CategoricalDistribution([False, True])) is False
    assert typed_value("0.00025", optuna.distributions.FloatDistribution(1e-4, 1e-3, log=True)) == 0.00025
    assert typed_value("7.0", optuna.distributions.IntDistribution(1, 9)) == 7
    with pytest.raises(ValueError, match="not one of"):
        typed_value("128", choice)


def test_space_round_trips_through_its_resolved_json():
    space = load_space(ROOT / "spaces" / "demo.yaml")
    again = space_from_resolved(space.resolved(), "x")
    assert again.optuna_space() == space.optuna_space()
    assert again.search == space.search and again.fixed == space.fixed


def test_leaderboard_ranks_and_deltas_against_the_tagged_baseline(view):
    rows = leaderboard(view)
    assert [r["trial_id"] for r in rows][:3] == ["a", "base", "b"]
    by_id = {r["trial_id"]: r for r in rows}
    assert by_id["a"]["delta_val_auc_vs_real_only"] == pytest.approx(0.75 - 0.70)
    assert by_id["b"]["delta_val_auc_vs_real_only"] == pytest.approx(0.66 - 0.70)
    assert by_id["base"]["baseline"] == "real_only"
    assert by_id["div"]["outcome"] == "diverged" and by_id["err"]["outcome"] == "failed"
    assert by_id["a"]["val_auc_min_fold"] == 0.62 and math.isnan(by_id["base"]["val_auc_min_fold"])  # not logged
    assert by_id["a"]["outcome"] == "finished" and by_id["b"]["outcome"] == "stopped early"  # b: 1 of 3 folds
    assert math.isnan(by_id["err"]["val_auc"])


def test_optuna_study_keeps_order_values_and_failures(view):
    study = optuna_study(view)
    states = [t.state for t in study.trials]
    C, F, P = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED
    assert states == [C, C, P, F, F]  # b ran 1 of 3 folds; the diverged trial's 0.0 is its failure, not a value
    assert [t.value for t in study.trials[:2]] == [0.70, 0.75]
    assert study.trials[2].value is None and study.trials[2].intermediate_values == {1: 0.66}  # its fold-1 mean
    assert study.best_value == 0.75 and study.best_trial.user_attrs["trial_id"] == "a"
    assert study.best_params == {"gan.lr": 2e-4, "gan.batch_size": 64, "synth.ratio": 1.5}
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE


def test_plots_are_pngs(view, tmp_path):
    written, notes, caveats = optuna_plots(optuna_study(view), "val_auc", tmp_path)
    written.append(ratio_plot(leaderboard(view), view.space, tmp_path))
    assert notes == []
    # base and a; b stopped, two failed
    assert "importances computed from only 2 complete trials" in caveats["param_importances"]
    assert sorted(p.name for p in written) == [
        "optimization_history.png", "parallel_coordinate.png", "param_importances.png", "ratio_vs_auc.png"
    ]
    for path in written:
        assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 5000


# --- the command on a real search, through a real tracking server --------------------------


def artifact_paths(client, run_id, path=None):
    out = []
    for item in client.list_artifacts(run_id, path):
        out += artifact_paths(client, run_id, item.path) if item.is_dir else [item.path]
    return out


def search_runs(served):
    runs = served.client.search_runs([served.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("gantune.role") == "search")
    trials = [r for r in runs if r.data.tags.get("gantune.role") == "trial"]
    return parent, trials


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_quiet_search_prints_one_line_per_trial_and_no_table(served_search):
    out = served_search.search.stdout
    _, trials = search_runs(served_search)
    for run in trials:
        lines = [line for line in out.splitlines() if line.startswith(f"trial {run.data.tags['gantune.trial_id']} ")]
        assert len(lines) == 1, out[-3000:]
        assert re.search(r"\((1|2)/2\): val_auc=0\.\d+ folds=\d", lines[0])
    assert "+-----" not in out and "done |" not in out  # no Ray table, no live status line


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_report_prints_leaderboard_with_deltas(served_search):
    proc = served_search.report
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    parent, trials = search_runs(served_search)
    assert parent.info.run_id in proc.stdout
    assert "delta_val_auc_vs_real_only" in proc.stdout
    baseline = next(r for r in trials if r.data.tags.get("gantune.baseline") == "real_only")
    base = baseline.data.metrics["val_auc"]
    header = next(line for line in proc.stdout.splitlines() if line.startswith("trial_id ")).split()
    for run in trials:
        trial_id = run.data.tags["gantune.trial_id"]
        line = next(line for line in proc.stdout.splitlines() if line.startswith(trial_id + " "))
        row = dict(zip(header, line.split()))
        assert float(row["val_auc"]) == pytest.approx(run.data.metrics["val_auc"], abs=1e-4)
        assert float(row["val_auc_min_fold"]) == pytest.approx(run.data.metrics["val_auc_min_fold"], abs=1e-4)
        assert float(row["delta_val_auc_vs_real_only"]) == pytest.approx(run.data.metrics["val_auc"] - base, abs=1e-4)
    assert "Downloading artifacts" not in proc.stdout + proc.stderr


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_report_logs_plots_and_html_on_the_parent_run(served_search, tmp_path):
    parent, trials = search_runs(served_search)
    client = served_search.client
    paths = set(artifact_paths(client, parent.info.run_id))
    expected = {"plots/optimization_history.png", "plots/param_importances.png", "plots/parallel_coordinate.png",
                "plots/ratio_vs_auc.png", "report.html"}
    assert expected <= paths
    for name in sorted(expected - {"report.html"}):
        assert (
            Path(client.download_artifacts(parent.info.run_id, name, str(tmp_path))).read_bytes().startswith(PNG_MAGIC)
        )
    page = Path(client.download_artifacts(parent.info.run_id, "report.html", str(tmp_path))).read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) >= 4 + 2  # the four plots and a sample grid per class
    assert all(base64.b64decode(i).startswith(PNG_MAGIC) for i in images)
    assert "Samples of trial" in page and "src=\"http" not in page  # self-contained
    assert "real: class_0_" in page and "synthetic: class_0_" in page  # the search logged real grids (data/real)
    for run in trials:
        assert run.data.tags["gantune.trial_id"] in page
    assert (served_search.report_dir / "report.html").read_text() == page
