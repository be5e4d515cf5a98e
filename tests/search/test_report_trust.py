"""report.html as a reviewer reads it: complete trials ranked and stopped ones apart, sensitivity
and specificity, real images beside synthetic ones, the test split when an evaluation ran, a caveat
on importances from few trials, parallel coordinates that stay visible."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image
from test_promote_gate import hierarchical
from test_promote_gate import make_search as gate_search
from test_report import fake_run

from gantune.search.report import (
    evaluation_lines,
    evaluation_section,
    leaderboard,
    leaderboard_section,
    optuna_plots,
    optuna_study,
    real_and_synthetic,
    write_html,
)
from gantune.search.runs import SearchView, experiment_and_latest_search, space_from_resolved, typed_value
from gantune.search.space import load_space
from gantune.search.tracking import REAL_GRIDS, log_real_grids
from gantune.trainables.data.datasets import ImageDataset
from gantune.trainables.plots import image_grid

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def view():
    """The demo space (3 folds): two complete trials, one stopped after a fold, one failed."""
    space = space_from_resolved(load_space(ROOT / "spaces" / "demo.yaml").resolved(), "demo")
    runs = [
        fake_run("base", 0.70, {"gan.lr": 3.1622776601683794e-04, "gan.batch_size": 32, "synth.ratio": 0.0},
                 baseline="real_only", val_sensitivity=0.41, val_specificity=0.93),
        fake_run("good", 0.75, {"gan.lr": 2e-4, "gan.batch_size": 64, "synth.ratio": 1.5},
                 val_sensitivity=0.52, val_specificity=0.91),
        fake_run("lucky", 0.90, {"gan.lr": 8e-4, "gan.batch_size": 32, "synth.ratio": 0.5}, folds_done=1.0),
        fake_run("err", None, {"gan.lr": 1e-4, "gan.batch_size": 64, "synth.ratio": 1.0}, status="FAILED"),
    ]
    distributions = space.optuna_space()
    trials = {r.data.tags["gantune.trial_id"]: r for r in runs}
    params = {t: {k: typed_value(v, distributions[k]) for k, v in r.data.params.items()} for t, r in trials.items()}
    search = SimpleNamespace(info=SimpleNamespace(run_id="parent", experiment_id="0"))
    return SearchView("demo", search, space, trials, params)


def tables(page: str) -> list[str]:
    return page.split("<table")[1:]


def test_only_complete_trials_are_ranked_and_a_stopped_one_is_listed_apart(view):
    page = leaderboard_section(view, leaderboard(view))
    ranked, stopped, failed = tables(page)
    # 'lucky' has the highest value but ran 1 of 3 folds: not first, not ranked at all.
    assert "lucky" not in ranked and "lucky" in stopped and "err" in failed
    assert "<td>1</td><td>good</td>" in ranked and "<td>2</td><td>base</td>" in ranked
    assert "Stopped early by the scheduler (1), not ranked" in page
    assert [t.state.name for t in optuna_study(view).trials] == ["COMPLETE", "COMPLETE", "PRUNED", "FAIL"]


def test_the_leaderboard_shows_sensitivity_and_specificity(view):
    ranked = tables(leaderboard_section(view, leaderboard(view)))[0]
    head = ranked.split("</thead>")[0]
    assert "<th>val_sensitivity</th><th>val_specificity</th>" in head
    assert "<td>0.52</td><td>0.91</td>" in ranked and "<td>0.41</td><td>0.93</td>" in ranked


def test_importances_from_few_trials_carry_a_caveat_under_the_plot(view, tmp_path):
    written, _, caveats = optuna_plots(optuna_study(view), "val_auc", tmp_path)
    assert "only 2 complete trials" in caveats["param_importances"]
    out = tmp_path / "report.html"
    write_html(out, view, [], "", written, [], "", caveats)
    page = out.read_text()
    after = page.split("param_importances</figcaption></figure>")[1]
    assert after.startswith('<p class="note">Hyperparameter importances computed from only 2 complete trials')


def test_parallel_coordinates_draw_every_score_in_a_visible_colour(view, tmp_path, monkeypatch):
    from matplotlib.collections import LineCollection

    from gantune.search import report

    kept = {}
    monkeypatch.setattr(report, "save_axes", lambda ax, path, size: kept.setdefault(path.stem, ax))
    optuna_plots(optuna_study(view), "val_auc", tmp_path)
    ax = kept["parallel_coordinate"]
    lines = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert lines and all(c.get_cmap().name == "viridis" for c in lines)
    assert ax.get_facecolor()[:3] == (1.0, 1.0, 1.0)
    # The lowest score's colour is dark on white, not Optuna's near-white 'Blues' end.
    assert sum(lines[0].get_cmap()(0.0)[:3]) < 1.5


def test_real_grids_are_pool_images_per_class_named_as_the_trials_samples(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("e", artifact_location=str(tmp_path / "a"))).info.run_id
    images = torch.rand(40, 1, 8, 8) * 2 - 1
    labels = torch.tensor([0] * 30 + [1] * 10)
    log_real_grids(client, run_id, ImageDataset(images, labels, ("malignant", "normal_benign")))
    names = sorted(a.path.split("/")[-1] for a in client.list_artifacts(run_id, REAL_GRIDS))
    assert names == ["class_0_malignant.png", "class_1_normal_benign.png"]
    grid = np.asarray(Image.open(client.download_artifacts(run_id, f"{REAL_GRIDS}/class_1_normal_benign.png",
                                                           str(tmp_path))).convert("L"))
    scale = grid.shape[1] // image_grid(images[:1]).shape[1]
    tiles = image_grid(images[30:40])  # every class-1 image (10 < a grid's 16), in pool order
    np.testing.assert_array_equal(grid[::scale, ::scale], tiles)


def test_each_synthetic_grid_sits_beside_the_real_grid_of_its_class(tmp_path):
    def png(folder, name):
        (tmp_path / folder).mkdir(exist_ok=True)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / folder / name)
        return tmp_path / folder / name

    real = [png("real", "class_1_b.png"), png("real", "class_0_a.png")]
    synthetic = [png("syn", "class_0_a.png"), png("syn", "class_1_b.png"), png("syn", "class_2_c.png")]
    pairs = real_and_synthetic(real, synthetic).split('<div class="pair">')[1:]
    assert len(pairs) == 3
    assert "real: class_0_a" in pairs[0] and "synthetic: class_0_a" in pairs[0]
    assert "real: class_1_b" in pairs[1] and "synthetic: class_1_b" in pairs[1]
    assert "no real grid logged" in pairs[2]


def test_the_test_split_table_when_an_evaluation_run_exists(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("e")
    parent = client.create_run(experiment_id, tags={"gantune.role": "search"}).info
    view = SimpleNamespace(experiment="e", search=SimpleNamespace(info=parent))
    assert "No evaluation run yet" in evaluation_section(client, view)
    run_id = client.create_run(experiment_id, tags={"gantune.role": "evaluation",
                                                    "mlflow.parentRunId": parent.run_id}).info.run_id
    for method, auc in (("real_only", 0.85), ("best_config", 0.81)):
        for metric in ("auc", "accuracy", "sensitivity", "specificity"):
            client.log_metric(run_id, f"test_{method}_{metric}_mean", auc if metric == "auc" else 0.5)
            client.log_metric(run_id, f"test_{method}_{metric}_sd", 0.01)
    client.log_metric(run_id, "paired_delta_auc", -0.04)
    client.log_metric(run_id, "paired_delta_auc_ci_low", -0.13)
    client.log_metric(run_id, "paired_delta_auc_ci_high", 0.05)
    client.log_param(run_id, "better_baseline", "real_only")
    client.set_terminated(run_id)
    page = evaluation_section(client, view)
    assert f"evaluation run {run_id}" in page
    rows = page.split("<tbody>")[1].split("</tr>")
    assert rows[0].startswith("<tr><td>best_config</td><td>0.8100 ± 0.0100</td>")  # best_config first
    assert rows[1].startswith("<tr><td>real_only</td><td>0.8500 ± 0.0100</td>")
    assert "-0.0400" in page and "[-0.1300, +0.0500]" in page
    client.log_metric(run_id, "paired_delta_auc_ci_low", float("nan"))  # one seed: no interval
    assert "no interval (one seed" in evaluation_section(client, view) and "nan" not in evaluation_section(client, view)


@pytest.mark.parametrize("evaluated, names", [
    ("gan", "the trial `gantune promote` would register; the promotion gate reads this evaluation, and decides on "
            "its lower bound +0.0020 (frac_1_delta_auc_lo)"),
    ("other", "not the trial `gantune promote` would register (trial gan), so the promotion gate does not count it"),
])
def test_the_test_split_names_its_trial_and_whether_promote_judges_it(tmp_path, evaluated, names):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    folds = [0.80, 0.81, 0.79]
    ids = gate_search(client, "e", {"base": (folds, True, 3), "gan": ([0.83, 0.84, 0.82], False, 3),
                                    "other": ([0.82, 0.83, 0.81], False, 3)},
                      evaluations=[(evaluated, hierarchical(0.002, 0.012, 0.022))])
    _, search = experiment_and_latest_search(client, "e")
    view = SimpleNamespace(experiment="e", search=search)
    page = evaluation_section(client, view)
    assert f"<h2>Test split of trial {evaluated} (evaluation run {ids['evaluation0']})</h2>" in page
    assert f"of trial {evaluated} (run {ids[evaluated]})" in page and names in page
    terminal = "\n".join(evaluation_lines(client, view))
    assert f"Test split: evaluation run {ids['evaluation0']} of trial {evaluated}" in terminal and names in terminal
