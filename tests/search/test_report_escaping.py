"""report.html renders text anyone with EDIT access to the tracking server wrote: experiment,
run and trial names, the logged resolved space (its metric name), and artifact file names. Each field
here carries a live-HTML payload naming the field; the page must
show every payload as text and contain no markup but the report's own."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from gantune.search.report import build_report, write_html
from gantune.search.space import load_space

ROOT = Path(__file__).resolve().parents[2]
# Tags and attributes the report itself writes; an injected payload shows up as anything else.
OWN_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "table", "thead", "tbody", "tr", "th",
            "td", "div", "figure", "figcaption", "img"}
OWN_ATTRIBUTES = {"charset", "alt", "src", "width", "class"}


def payload(field: str) -> str:
    # No '/', so it also fits in file and artifact names.
    return f"<img src=x onerror=alert('{field}')>"


class Page(HTMLParser):
    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, list]] = []
        self.shown: list[str] = []  # text and attribute values, as a browser decodes them
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))
        self.shown += [v for _, v in attrs if v]

    def handle_data(self, data):
        self.shown.append(data)


def assert_only_own_markup(text: str, fields: list[str]) -> None:
    page = Page(text)
    foreign = [(t, a) for t, a in page.tags if t not in OWN_TAGS or any(k not in OWN_ATTRIBUTES for k, _ in a)]
    assert not foreign, f"markup from a run's data is live in report.html: {foreign[:5]}"
    assert all(v.startswith("data:image/png;base64,") for t, a in page.tags if t == "img" for k, v in a if k == "src")
    shown = "\n".join(page.shown)
    missing = [f for f in fields if payload(f) not in shown]
    assert not missing, f"fields not rendered at all (so not tested): {missing}"


def png(path: Path) -> Path:
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    return path


def crafted_store(tmp_path: Path, craft_metric: bool) -> tuple[MlflowClient, str]:
    """A finished search whose every user-written string is a payload; returns (client, experiment).

    MLflow refuses '<' in a metric name, so a crafted metric lives only in the logged resolved
    space (the values read NaN and no trial has samples to show); the other case logs val_auc and
    shows the sample section."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = payload("experiment")
    exp_id = client.create_experiment(experiment, artifact_location=str(tmp_path / "artifacts"))
    resolved = load_space(ROOT / "spaces" / "demo.yaml").resolved()
    # Baseline names, choices and param values are checked against known names and the space's
    # domains when the search is read back, so only the metric can carry a payload in the space.
    metric, baseline = payload("metric") if craft_metric else "val_auc", "real_only"
    resolved["search"].update(metric=metric, baselines=[baseline])
    parent = client.create_run(exp_id, tags={"gantune.role": "search"}, run_name=payload("run_name")).info.run_id
    client.log_dict(parent, resolved, "config/resolved_space.json")
    for trial_id, value, tags in (
        (payload("baseline_trial"), 0.6, {"gantune.baseline": baseline}),
        (payload("trial_id"), 0.8, {}),
    ):
        tags = {"mlflow.parentRunId": parent, "gantune.role": "trial", "gantune.trial_id": trial_id, **tags}
        run = client.create_run(exp_id, tags=tags).info.run_id
        for key, v in {
            "gan.lr": 2e-4,
            "gan.batch_size": 32,
            "synth.ratio": 0.0 if tags.get("gantune.baseline") else 1.0,
        }.items():
            client.log_param(run, key, v)
        client.log_metric(run, "val_auc", value)
        client.log_metric(run, "folds_done", 3)
        if not tags.get("gantune.baseline"):
            client.log_artifact(run, str(png(tmp_path / f"class_0_{payload('class_name')}.png")), "samples")
            client.log_artifact(run, str(png(tmp_path / f"roc_{payload('plot_name')}.png")), "plots")
        client.set_terminated(run)
    client.set_terminated(parent)
    return client, experiment


@pytest.mark.parametrize("craft_metric", [False, True], ids=["samples", "metric"])
def test_report_html_shows_every_crafted_field_as_text(tmp_path, craft_metric):
    client, experiment = crafted_store(tmp_path, craft_metric)
    build_report(client, experiment, 10, tmp_path / "out")
    text = (tmp_path / "out" / "report.html").read_text()
    fields = ["experiment", "run_name", "baseline_trial", "trial_id"]
    fields += ["metric"] if craft_metric else ["class_name", "plot_name"]
    assert_only_own_markup(text, fields)


def test_write_html_escapes_plot_names_and_notes(tmp_path):
    """Plot captions (file stems carry the metric) and notes (exception texts) of the page frame."""
    from types import SimpleNamespace

    plot = png(tmp_path / f"ratio_vs_{payload('plot_stem')}.png")
    out = tmp_path / "report.html"
    view = SimpleNamespace(experiment=payload("experiment"))
    write_html(out, view, [payload("title_line")], "", [plot], [payload("note")], "")
    assert_only_own_markup(out.read_text(), ["plot_stem", "note", "title_line", "experiment"])
