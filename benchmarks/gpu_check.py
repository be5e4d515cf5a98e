"""The GPU check (`benchmarks/gpu_check.sh`, which sets up the import path and runs this): the
worker side (`trainables/`) on a GPU node's own PyTorch, without Ray, MLflow, Optuna, SimpleITK
or MONAI, and without installing gantune. It prints one JSON:

- device: PyTorch, CUDA, the GPU, Python, and which of the driver-side libraries are absent;
- worker_imports: every worker module imported (with those libraries blocked in a dry run);
- gpu_tests: `pytest -m gpu tests/trainables/test_gpu.py` (bf16 + channels-last against fp32,
  4 packed trials under their memory caps, a generator-cache hit, E-GAN's children, sampling for
  generate), counted;
- recipe_fold: one fold of spaces/breastmnist.yaml at the GPU budgets its header names, timed;
- packing: trials per GPU-hour with 1, 2, 4 and 8 trial processes on one GPU, each capped to its
  share of the memory as `--gpus-per-trial 1/k` caps a Ray trial (pipeline.trial_device).

`--dry-run` (the CPU, in `make test`): the same wiring at tiny budgets on the CPU, 1 and 2 packed
processes, the gpu tests collected and skipped, the driver-side libraries blocked, so a GPU node's
first run fails on nothing a CPU could have caught. Budget on one H100: under 8 minutes."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "spaces" / "breastmnist.yaml"
DATA = ROOT / "data" / "breastmnist.npz"
GPU_TESTS = "tests/trainables/test_gpu.py"
DRIVER_SIDE = ("ray", "mlflow", "optuna", "SimpleITK", "monai")
"""Libraries a GPU node's own PyTorch comes without: the worker side must import without them."""
BLOCK_ENV = "GANTUNE_GPU_CHECK_BLOCK"
"""Set (dry run): this process and its children refuse to import DRIVER_SIDE."""
WORKER_MODULES = (
    "gantune.trainables.config", "gantune.trainables.pipeline", "gantune.trainables.trial",
    "gantune.trainables.classifiers", "gantune.trainables.runtime", "gantune.trainables.gans",
    "gantune.trainables.gans.cache", "gantune.trainables.data.datasets", "gantune.search.space",
    "gantune.search.generate",
)
GPU_BUDGETS = {"classifier.width": 1.0, "data.folds": 5, "gan.steps": 5000, "gan.width": 64}
"""What the recipe's header says to raise on a GPU (spaces/breastmnist.yaml; a test keeps the two
in step); data.repeats and the search's sizes are not a fold's."""
PACKINGS = (1, 2, 4, 8)
UNIT_TRIAL = {"gan.steps": 1000, "classifier.steps": 500}
"""The packed 'trial': one recipe fold at GPU widths with shorter budgets, so 15 of them (1 + 2 +
4 + 8) fit the check's minutes."""
DRY = {"gan.steps": 2, "gan.width": 16, "gan.batch_size": 8, "classifier.steps": 2, "classifier.width": 0.25,
       "classifier.eval_every": 1, "classifier.batch_size": 8}
"""--dry-run: budgets that exercise every step on two CPU cores in seconds."""
DEADLINE_S = 450.0
"""Sections are skipped (and say so) once the check has run this long: it must end within 8 minutes."""


# --- Import path and blocked libraries ---

class _Blocked:
    """A meta-path finder that refuses the driver-side libraries, as a GPU node lacks them."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in DRIVER_SIDE:
            raise ImportError(f"{name} is blocked by the GPU check's dry run (a GPU node has no {name})")
        return None


def block_if_asked() -> None:
    if os.environ.get(BLOCK_ENV) and not any(isinstance(f, _Blocked) for f in sys.meta_path):
        sys.meta_path.insert(0, _Blocked())


def worker_imports() -> dict:
    """Import every worker module; where each came from (the checkout, through the shim)."""
    failed, where = {}, {}
    for name in WORKER_MODULES:
        try:
            where[name] = str(Path(importlib.import_module(name).__file__).resolve().relative_to(ROOT))
        except (ImportError, ValueError) as exc:  # ValueError: imported from outside the checkout
            failed[name] = f"{type(exc).__name__}: {exc}"
    return {"ok": not failed, "failed": failed, "files": where}


def device_info() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    props = torch.cuda.get_device_properties(0) if cuda else None
    return {
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "gpu": props.name if props else None, "gpu_memory_gib": round(props.total_memory / 2**30, 1) if props else None,
        "cpus": os.cpu_count(),
        "driver_side_absent": {m: absent(m) for m in DRIVER_SIDE},
    }


def absent(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ImportError:  # blocked (dry run)
        return True


# --- pytest -m gpu ---

def gpu_tests(timeout: float) -> dict:
    """The gpu tests in a pytest of their own; counts from its JUnit XML."""
    import tempfile
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "gpu.xml"
        start = time.monotonic()
        code = "import benchmarks.gpu_check as c, pytest, sys; c.block_if_asked(); sys.exit(pytest.main(sys.argv[1:]))"
        try:
            done = subprocess.run(
                [sys.executable, "-c", code, "-m", "gpu", GPU_TESTS, "-q", "-rs", "-p", "no:cacheprovider",
                 f"--junitxml={xml}"], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"ran": False, "reason": f"timed out after {timeout:.0f} s"}
        seconds = time.monotonic() - start
        if not xml.exists():
            return {"ran": False, "reason": "pytest wrote no report",
                    "output": done.stdout[-3000:] + done.stderr[-2000:]}
        cases = ET.parse(xml).getroot().iter("testcase")
    result = {"ran": True, "exit_code": done.returncode, "seconds": round(seconds, 1), "passed": [], "failed": {},
              "skipped": {}}
    for case in cases:
        name = case.get("name")
        outcome = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        if outcome is None:
            result["passed"].append(name)
        elif outcome.tag == "skipped":
            result["skipped"][name] = outcome.get("message", "")
        else:
            result["failed"][name] = (outcome.get("message") or "")[:500]
    return result


# --- One recipe fold, timed ---

def recipe_config(overrides: dict, seed: int = 0):
    """The recipe's TrialConfig: its fixed values, each searched key at its neutral value (the
    middle of a range, the first choice), then `overrides`."""
    from gantune.search.space import load_space, neutral_value
    from gantune.trainables.config import TrialConfig

    space = load_space(SPACE)
    flat = {**space.fixed, **{k: neutral_value(d) for k, d in space.domains.items()}, **overrides}
    return TrialConfig.from_flat(flat, seed=seed), flat


def run_one_fold(overrides: dict, device_name: str) -> dict:
    """The last fold of the recipe (run_trial from fold k-1: one fold at the k-fold budgets)."""
    import torch

    from gantune.trainables.data.datasets import load_medmnist_npz
    from gantune.trainables.trial import run_trial

    cfg, flat = recipe_config(overrides)
    device = torch.device(device_name)
    data = load_medmnist_npz(DATA)
    folds: list = []
    start = time.perf_counter()
    run_trial(cfg, data, device, on_fold=folds.append, skip_folds=cfg.data.total_folds - 1)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    (fold,) = folds
    return {
        "wall_s": round(wall, 2), "fold": fold.fold,
        "gan_train_s": round(fold.gan_stats.get("gan_train_seconds", 0), 2),
        "val_auc": round(fold.metrics["auc"], 4) if "auc" in fold.metrics else None,
        "metrics": {k: round(v, 4) for k, v in sorted(fold.metrics.items())},
        "budgets": {k: flat[k] for k in sorted({*GPU_BUDGETS, *overrides})},
    }


# --- Packed trials: k processes on one GPU, each under its memory cap ---

def _packed_trial(k: int, overrides: dict, device_name: str, steps: int | None, probe: bool, barrier, out) -> None:
    """One packed trial, a process of its own as a Ray trial actor is: the recipe fold (or a
    DCGAN of `steps` iterations) on the GPU capped to 1/k of its memory."""
    block_if_asked()
    import torch

    from gantune.trainables.pipeline import trial_device

    try:
        cuda = device_name == "cuda"
        device = trial_device(1.0 / k, ["0"]) if cuda else torch.device("cpu")  # as if Ray assigned GPU 0
        work = _dcgan_work(device, steps) if steps else (lambda: run_one_fold(overrides, str(device)))
        if cuda:  # warm-up: CUDA context and kernels, not what a long trial pays
            torch.zeros(1, device=device).sum().item()
        barrier.wait()
        start = time.time()
        done = work()
        end = time.time()
        row = {"pid": os.getpid(), "start": start, "end": end, "cap_fraction": 1.0 / k,
               "peak_reserved": torch.cuda.max_memory_reserved(device) if cuda else 0, **done}
        if probe and cuda:
            row["over_cap_refused"] = over_cap_refused(device, 1.0 / k)
        out.put(row)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which waits for k rows
        out.put({"pid": os.getpid(), "error": f"{type(exc).__name__}: {exc}"[:500]})


def _dcgan_work(device, steps: int):
    def work() -> dict:
        from gantune.trainables.data.datasets import load_medmnist_npz
        from gantune.trainables.gans.base import GANConfig
        from gantune.trainables.gans.dcgan import fit_dcgan

        images = load_medmnist_npz(DATA).pool.images[:256].to(device)
        gan = fit_dcgan(GANConfig(family="dcgan", width=64, batch_size=64, steps=steps, log_every=10), images,
                        seed=0, device=device)
        return {"last_loss_d": gan.history["loss_d"][-1]}

    return work


def over_cap_refused(device, fraction: float) -> bool:
    """Whether an allocation of 1.2x the process's cap raises OutOfMemoryError."""
    import torch

    total = torch.cuda.get_device_properties(device).total_memory
    try:
        block = torch.empty(int(1.2 * fraction * total), dtype=torch.uint8, device=device)
    except torch.OutOfMemoryError:
        return True
    del block
    return False


def packed_trials(k: int, overrides: dict | None = None, device_name: str = "cuda", steps: int | None = None,
                  probe_over_cap: bool = False, timeout: float = 600) -> list[dict]:
    """k packed trials started together; one row each (an 'error' key where one failed)."""
    import queue

    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(k), ctx.Queue()
    procs = [ctx.Process(target=_packed_trial, args=(k, overrides or {}, device_name, steps, probe_over_cap,
                                                     barrier, out)) for _ in range(k)]
    for p in procs:
        p.start()
    rows, deadline = [], time.monotonic() + timeout
    try:
        while len(rows) < k:
            try:
                rows.append(out.get(timeout=max(1.0, deadline - time.monotonic())))
            except queue.Empty:
                rows.append({"error": f"no result within {timeout:.0f} s"})
                break
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return rows


def packing(overrides: dict, device_name: str, packings: tuple[int, ...], deadline: float) -> dict:
    """Trials per GPU-hour at each packing: k trials of the same work started together, over
    the wall time from the first start to the last end."""
    per_gpu = {}
    for k in PACKINGS:
        if k not in packings:
            per_gpu[str(k)] = {"ran": False, "reason": "dry run: 1 and 2 processes only"}
            continue
        if time.monotonic() > deadline:
            per_gpu[str(k)] = {"ran": False, "reason": "skipped: the check's time was up"}
            continue
        rows = packed_trials(k, overrides, device_name, timeout=max(30.0, deadline + 120 - time.monotonic()))
        errors = [r["error"] for r in rows if "error" in r]
        if errors:
            per_gpu[str(k)] = {"ran": False, "reason": errors[0]}
            continue
        wall = max(r["end"] for r in rows) - min(r["start"] for r in rows)
        per_gpu[str(k)] = {
            "ran": True, "wall_s": round(wall, 2), "trials_per_gpu_hour": round(k * 3600 / wall, 1),
            "mean_val_auc": round(sum(r["val_auc"] or 0 for r in rows) / k, 4),
            "peak_reserved_gib": round(max(r["peak_reserved"] for r in rows) / 2**30, 2),
        }
    alone = per_gpu["1"].get("trials_per_gpu_hour")
    for row in per_gpu.values():
        if row.get("ran") and alone:
            row["speedup_over_1"] = round(row["trials_per_gpu_hour"] / alone, 2)
    return {"unit_trial": overrides, "per_gpu": per_gpu}


# --- The whole check ---

def section(report: dict, name: str, run) -> None:
    """Run one section into report[name]; an exception is recorded there, and the check goes on."""
    start = time.monotonic()
    print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
    try:
        report[name] = run()
    except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others' figures
        report[name] = {"ran": False, "reason": f"{type(exc).__name__}: {exc}"[:1000]}
    print(f"gpu_check: {name} done in {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)


def check(dry_run: bool) -> dict:
    import torch

    started = time.monotonic()
    deadline = started + DEADLINE_S
    if dry_run:
        os.environ[BLOCK_ENV] = "1"  # inherited by the pytest and packed processes
    block_if_asked()
    cuda = torch.cuda.is_available() and not dry_run
    if not dry_run and not cuda:
        raise SystemExit("gpu_check: no CUDA device here; on a CPU machine run it with --dry-run")
    device_name = "cuda" if cuda else "cpu"
    report: dict = {"gpu_check": 1, "dry_run": dry_run}
    section(report, "device", device_info)
    section(report, "worker_imports", worker_imports)
    section(report, "gpu_tests", lambda: gpu_tests(timeout=max(60.0, deadline - time.monotonic() - 240)))
    fold = DRY if dry_run else GPU_BUDGETS
    section(report, "recipe_fold", lambda: {"ran": True, **run_one_fold(fold, device_name)})
    unit = {**GPU_BUDGETS, **UNIT_TRIAL} if not dry_run else DRY
    section(report, "packing", lambda: packing(unit, device_name, (1, 2) if dry_run else PACKINGS, deadline))
    report["seconds"] = round(time.monotonic() - started, 1)
    report["ok"] = check_ok(report, dry_run)
    return report


def check_ok(report: dict, dry_run: bool) -> bool:
    tests = report["gpu_tests"]
    tests_ok = tests.get("ran") and not tests["failed"] and (
        bool(tests["skipped"]) and not tests["passed"] if dry_run else bool(tests["passed"]) and not tests["skipped"])
    packed = report["packing"].get("per_gpu", {})
    expected = ("1", "2") if dry_run else tuple(str(k) for k in PACKINGS)
    device_ok = "driver_side_absent" in report["device"] and (dry_run or report["device"]["gpu"])
    return bool(device_ok and report["worker_imports"]["ok"] and tests_ok and report["recipe_fold"].get("ran")
                and all(packed.get(k, {}).get("ran") for k in expected))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/gpu_check.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="the CPU: wiring at tiny budgets, driver libraries blocked")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    report = check(args.dry_run)
    text = json.dumps(report, indent=2, sort_keys=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text, flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
