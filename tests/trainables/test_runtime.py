"""Runtime switches: no-ops on the CPU, channels-last changes memory layout only."""

from __future__ import annotations

import copy

import pytest
import torch

from gantune.trainables import runtime
from gantune.trainables.classifiers import ClassifierConfig, SmallCNN, fit_classifier
from gantune.trainables.config import ConfigError, TrialConfig
from gantune.trainables.runtime import RuntimeConfig, autocast, prepare_model

ALL_ON = RuntimeConfig(amp=True, channels_last=True, compile=True)
CPU = torch.device("cpu")


def test_autocast_is_a_noop_on_cpu():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast(ALL_ON, CPU):
        assert not torch.is_autocast_enabled("cpu")
        out = a @ b
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, a @ b, rtol=0, atol=0)


def test_prepare_model_is_a_noop_on_cpu():
    model = SmallCNN(1, 2, 28, width=0.125)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = prepare_model(model, ALL_ON, CPU)
    assert out is model
    assert model._compiled_call_impl is None  # not compiled
    assert model.features[0].weight.is_contiguous()  # still NCHW, not channels-last
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_channels_last_preserves_outputs_and_keys(monkeypatch):
    # The CUDA branch, exercised on the CPU: only the memory layout may change.
    monkeypatch.setattr(runtime, "uses_cuda", lambda device: True)
    torch.manual_seed(0)
    model = SmallCNN(1, 2, 28, width=0.125).eval()
    reference = copy.deepcopy(model)
    x = torch.randn(5, 1, 28, 28)
    converted = prepare_model(model, RuntimeConfig(amp=False, channels_last=True, compile=False), CPU)
    assert converted.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert list(converted.state_dict()) == list(reference.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(converted(x), reference(x), rtol=1e-5, atol=1e-5)


def test_fit_classifier_runtime_changes_nothing_on_cpu():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 1, 28, 28, generator=g) * 2 - 1
    y = torch.arange(24) % 2
    cfg = ClassifierConfig(width=0.125, steps=3, batch_size=8, eval_every=2)
    plain = fit_classifier(cfg, x, y, x[:8], y[:8], 2, seed=3)
    switched = fit_classifier(cfg, x, y, x[:8], y[:8], 2, seed=3, runtime=ALL_ON)
    for (k, a), b in zip(plain.state_dict().items(), switched.state_dict().values()):
        assert torch.equal(a, b), k


def test_runtime_section_in_trial_config():
    cfg = TrialConfig.from_flat({"runtime.amp": False, "runtime.compile": True})
    assert cfg.runtime == RuntimeConfig(amp=False, channels_last=True, compile=True)
    assert cfg.to_flat()["runtime.channels_last"] is True
    with pytest.raises(ConfigError, match="runtime.fast"):
        TrialConfig.from_flat({"runtime.fast": True})
