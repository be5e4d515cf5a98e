"""gantune.api without a search: the evaluation table read back from logged metrics, search
options resolved as the CLI resolves them, and bad input as UsageError."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import gantune
from gantune import api
from gantune.search.cli import build_parser, search_options

DEMO = Path(__file__).resolve().parents[2] / "spaces" / "demo.yaml"


def test_method_table_reads_mean_and_sd_per_method_and_metric():
    metrics = {"test_best_config_auc_mean": 0.8, "test_best_config_auc_sd": 0.02, "test_real_only_auc_mean": 0.85,
               "test_real_only_sensitivity_mean": 0.5, "test_real_only_sensitivity_sd": 0.1, "paired_delta_auc": -0.05}
    table = api.method_table(metrics, ("best_config", "real_only", "classic_aug"))
    assert table["best_config"] == {"auc": (0.8, 0.02)}
    assert table["real_only"]["sensitivity"] == (0.5, 0.1)
    assert table["real_only"]["auc"][0] == 0.85 and math.isnan(table["real_only"]["auc"][1])  # no sd logged
    assert "classic_aug" not in table


def test_search_options_are_the_clis(monkeypatch):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    space = api.resolve_space(DEMO, {"gan.steps": 10}, smoke_test=True)
    args = build_parser().parse_args(["search", str(DEMO), "--tracking-uri", "sqlite:///m.db", "--seed", "3"])
    assert api.search_options(space, tracking_uri="sqlite:///m.db", seed=3) == search_options(args, space)
    assert space.fixed["gan.steps"] == 10 and space.search.num_samples == 2


def test_bad_input_is_a_usage_error_naming_it():
    with pytest.raises(gantune.UsageError, match="--max-failures must be >= 0"):
        api.search_options(api.resolve_space(DEMO), max_failures=-1)
    with pytest.raises(gantune.UsageError, match="gan.lrr"):
        gantune.search(DEMO, overrides={"gan.lrr": 1})
    with pytest.raises(TypeError, match="unknown search option"):
        api.search_options(api.resolve_space(DEMO), experimnet="x")
