"""A trial's device comes from what Ray assigned it, never from CUDA being visible: Ray 2.60 no
longer hides a node's GPUs from zero-GPU actors, so a CPU trial on a GPU node would otherwise run
on cuda:0 without a memory cap. CUDA is simulated (torch.cuda.is_available and the memory-cap call
are monkeypatched); the e2e test asks a real Ray cluster with declared GPUs what it assigns."""

from __future__ import annotations


import pytest
import ray
from tune_context import tune_context
import ray.tune
import torch

from gantune.trainables import pipeline
from gantune.trainables.pipeline import StudySettings, assigned_gpu_ids, trainable, trial_device


@pytest.fixture
def fake_cuda(monkeypatch):
    """CUDA reported available; every memory cap recorded as (fraction, device index)."""
    caps = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, device=None: caps.append((f, device)))
    return caps


def test_zero_gpu_trial_runs_on_the_cpu_although_cuda_is_visible(fake_cuda, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # as Ray 2.60 leaves it for a zero-GPU actor
    assert trial_device(0.0, []) == torch.device("cpu")
    # Even an id Ray would not give a zero-GPU trial does not move it to the GPU.
    assert trial_device(0.0, ["0"]) == torch.device("cpu")
    assert fake_cuda == []


def test_fractional_gpu_trial_runs_on_its_gpu_with_its_memory_cap(fake_cuda, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # Ray set it to the one id it assigned
    assert trial_device(0.25, ["3"]) == torch.device("cuda", 0)
    assert fake_cuda == [(0.25, 0)]
    # RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES: every GPU visible, the id is torch's index.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert trial_device(0.5, ["2"]) == torch.device("cuda", 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert trial_device(0.5, ["1"]) == torch.device("cuda", 1)
    assert fake_cuda == [(0.25, 0), (0.5, 2), (0.5, 1)]


def test_a_whole_gpu_is_not_capped_and_no_cuda_means_cpu(fake_cuda, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert trial_device(1.0, ["0"]) == torch.device("cuda", 0)
    assert fake_cuda == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert trial_device(0.5, ["0"]) == torch.device("cpu")


def test_the_trainable_puts_a_zero_gpu_trial_on_the_cpu(fake_cuda, monkeypatch, tmp_path, breast_splits):
    """The wiring: `trainable` asks Ray (here: none, so no GPU) and hands run_trial the CPU."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("device", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(exp).info.run_id
    monkeypatch.setattr(ray.tune, "get_context", lambda: tune_context(tmp_path / "trial", "t0001"))
    monkeypatch.setattr(ray.tune, "get_checkpoint", lambda: None)
    devices = []
    monkeypatch.setattr(pipeline, "run_trial", lambda cfg, data, device, *a, **kw: devices.append(device))
    settings = StudySettings(fixed={}, data=breast_splits, tracking_uri=uri, experiment_id=exp,
                             parent_run_id=parent, seed=0, cpus_per_trial=1, gpus_per_trial=0)
    trainable({"synth.ratio": 1.0}, settings)
    assert devices == [torch.device("cpu")]


@ray.remote
def _device_in_a_ray_task(share: float) -> tuple[list[str], str, list]:
    """Inside a Ray worker that was assigned `share` GPUs: the ids Ray gives, and the device."""
    caps = []
    torch.cuda.is_available = lambda: True  # this worker process only
    torch.cuda.set_per_process_memory_fraction = lambda f, device=None: caps.append((f, device))
    ids = assigned_gpu_ids()
    return ids, str(trial_device(share, ids)), caps


@pytest.mark.e2e
def test_devices_from_what_a_real_ray_cluster_assigns(monkeypatch):
    """A local Ray with two declared GPUs: a zero-GPU task gets no id and the CPU; a quarter-GPU
    task gets one id, CUDA_VISIBLE_DEVICES set to it, and its GPU with a 0.25 cap."""
    assert not ray.is_initialized()
    monkeypatch.setenv("RAY_raylet_start_wait_time_s", "300")  # two shared cores: startup can be slow
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cpu_ids, cpu_device, cpu_caps = ray.get(_device_in_a_ray_task.options(num_gpus=0).remote(0.0))
        gpu_ids, gpu_device, gpu_caps = ray.get(_device_in_a_ray_task.options(num_gpus=0.25).remote(0.25))
    finally:
        ray.shutdown()
    assert (cpu_ids, cpu_device, cpu_caps) == ([], "cpu", [])
    assert len(gpu_ids) == 1 and gpu_device == "cuda:0" and gpu_caps == [(0.25, 0)]
