"""On a cluster (unit level; the e2e tests are in test_cluster_e2e.py): `gantune search` as the
entrypoint of `ray job submit` joins the job's cluster, retries default higher there, and the
preflight refuses what other nodes cannot reach."""

from __future__ import annotations

from pathlib import Path

import pytest

from gantune.search.cli import build_parser, search_options
from gantune.search.options import CLUSTER_MAX_FAILURES, SearchOptions
from gantune.search.space import load_space

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "spaces" / "demo.yaml"


def options_for(*flags: str) -> SearchOptions:
    args = build_parser().parse_args(["search", str(DEMO), "--tracking-uri", "sqlite:///m.db", *flags])
    return search_options(args, load_space(DEMO))


def test_a_ray_job_entrypoint_joins_the_jobs_cluster_with_cluster_retries(monkeypatch):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    local = options_for()
    assert (local.address, local.max_failures) == (None, 1)
    # What the job supervisor sets for the entrypoint of `ray job submit`.
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"runtime_env": {}}')
    job = options_for()
    assert (job.address, job.max_failures) == ("auto", CLUSTER_MAX_FAILURES) and CLUSTER_MAX_FAILURES >= 3
    assert options_for("--address", "ray://head:10001").address == "ray://head:10001"


def test_max_failures_defaults_higher_with_address_and_an_explicit_value_wins(monkeypatch):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert options_for("--address", "auto").max_failures == CLUSTER_MAX_FAILURES
    assert options_for("--address", "auto", "--max-failures", "0").max_failures == 0
    assert options_for("--max-failures", "5").max_failures == 5
    # Built directly (Python API, benchmarks), the same rule applies.
    assert SearchOptions(experiment="e", tracking_uri="sqlite:///m.db", address="auto").max_failures == CLUSTER_MAX_FAILURES
    assert SearchOptions(experiment="e", tracking_uri="sqlite:///m.db").max_failures == 1
