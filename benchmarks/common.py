"""What every benchmark shares: repeated timing, the machine description, the results file."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.json"
BREASTMNIST = ROOT / "data" / "breastmnist.npz"


def median_seconds(run: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    """(median, all) wall seconds of `repeats` calls of `run`, after one untimed warm-up call
    (first-call allocator and kernel-selection costs are not what a long training pays)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    """What the figures depend on, printed and stored next to them."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "python": platform.python_version(),
        "load_avg_1_5_15": [round(x, 2) for x in load],
    }


def print_machine(info: dict) -> None:
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)


def write_results(figures: dict, details: dict, info: dict, suite: str, path: Path = RESULTS) -> dict:
    """Merge into the results file, so `make bench-search` adds to what `make bench` wrote; the
    machine (and its load) is kept per suite."""
    previous = json.loads(path.read_text()) if path.exists() else {}
    merged = {**previous, **figures}
    merged["details"] = {**previous.get("details", {}), **details}
    merged["machine"] = {**previous.get("machine", {}), suite: info}
    path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    return merged


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    header = ("figure", "value", "target", "how")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)), flush=True)
