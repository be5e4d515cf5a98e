"""--keep-artifacts: the generator model, a trial's heaviest artifact, is logged once, at its last
fold ('complete', the default), so a trial the scheduler stops early keeps none and no fold
re-uploads it; 'all' logs it at every fold. MLflow is a recorder; the plots and sample grids are
stubbed (they are logged every fold either way)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gantune.trainables.config import TrialConfig
from gantune.trainables.tracking import TrialRun


class Recorder:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def fold(i: int):
    synthetic = SimpleNamespace(history={}, kept_fraction={}, gans={0: object()}, refiners={})
    return SimpleNamespace(fold=i, metrics={"auc": 0.5}, gen_metrics={}, synthetic=synthetic)


@pytest.mark.parametrize("every, expected", [(False, [3]), (True, [1, 2, 3])])
def test_the_generator_is_logged_at_the_last_fold_only_unless_all(monkeypatch, every, expected):
    cfg = TrialConfig.from_flat({"data.folds": 3})
    logged = []
    monkeypatch.setattr(TrialRun, "_log_plots", lambda self, results, tmp: None)
    monkeypatch.setattr(TrialRun, "_log_samples", lambda self, synthetic, tmp: None)
    monkeypatch.setattr(TrialRun, "_log_generator", lambda self, synthetic, tmp: logged.append(self._step))
    run = TrialRun(Recorder(), "run", cfg, ("a", "b"), keep_every_generator=every)
    results = []
    for i in range(cfg.data.total_folds):
        results.append(fold(i))
        run._step = len(results)
        run.log_fold(results[-1], results, {"val_auc": 0.5})
    assert logged == expected


@pytest.mark.parametrize("policy, every", [("complete", False), ("all", True)])
def test_the_policy_reaches_the_trial_run_from_the_settings(tmp_path, policy, every):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("policy", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(exp).info.run_id
    settings = SimpleNamespace(tracking_uri=uri, experiment_id=exp, parent_run_id=parent, keep_artifacts=policy,
                               data=SimpleNamespace(pool=SimpleNamespace(class_names=("a", "b"))))
    run = TrialRun.open(settings, "t1", params={}, cfg=TrialConfig.from_flat({}))
    assert run.keep_every_generator is every
