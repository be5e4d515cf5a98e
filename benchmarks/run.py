"""`make bench` / `make bench-search`: run the benchmarks, print a table, write results.json.

    python -m benchmarks.run            # 1-3 (+5 on a GPU): data path, E-GAN, Tune overhead
    python -m benchmarks.run --search   # 4: TPE + ASHA against random search, BreastMNIST

Every figure is a ratio of two timings taken in the same run on the same machine; each timing is
the median of --repeats runs after a warm-up. The machine is described next to the figures,
load average included: on a shared machine the figures are noisy, so re-run when it is idle."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from .common import BREASTMNIST, RESULTS, machine, print_machine, print_table, write_results

TARGETS = {
    "data_path_speedup": ">= 1.5",
    "egan_over_dcgan": "<= 2.0",
    "tune_overhead": "<= 0.10",
    "search_compute_fraction": "<= 0.5",
    "gpu_packing": "> 1 (x4)",
    "gan_reuse_compute_ratio": "<= 0.4",
    "mlflow_bytes_per_fold_ratio": "< 1 (after / before)",
}

SEARCH_EFFICIENCY = {
    "tpe_asha": {},  # spaces/demo.yaml as written: TPE sampler, ASHA over folds
    "random_fifo": {"search.sampler": "random", "search.scheduler": "fifo"},
}
"""Benchmark 4's two searches: overrides of spaces/demo.yaml (plus the same search.num_samples)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--search", action="store_true", help="run benchmark 4 (search efficiency) instead of 1-3")
    p.add_argument("--threads", type=int, default=1, help="torch threads of benchmarks 1-2 (a demo trial's 1 CPU)")
    p.add_argument("--steps", type=int, default=60, help="GAN iterations per timing (benchmarks 1-2)")
    p.add_argument("--repeats", type=int, default=5, help="timings per figure; the median is kept")
    p.add_argument(
        "--tune-samples",
        type=int,
        default=12,
        help="trials of the demo search timed by benchmark 3 (more trials amortise Ray's start-up)",
    )
    p.add_argument("--search-samples", type=int, default=12, help="trials of each search of benchmark 4")
    p.add_argument("--reuse-samples", type=int, default=12, help="trials of each search of the gan_reuse benchmark")
    p.add_argument("--only", choices=("gan_reuse", "mlflow_traffic"),
                   help="run only this benchmark (mlflow_traffic runs only so: two smoke searches against a server)")
    p.add_argument("--before-gantune", metavar="PATH",
                   help="mlflow_traffic: the gantune executable of the code before (default: this one with "
                        "--keep-artifacts all)")
    p.add_argument("--before-space", metavar="PATH",
                   help="mlflow_traffic: the demo space file of the code before (default: this one's)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results file (merged into when it exists)")
    return p.parse_args(argv)


def quick_suite(args, images: torch.Tensor) -> tuple[dict, dict, list]:
    from .gan_paths import data_path_speedup, egan_over_dcgan
    from .gpu_packing import gpu_packing
    from .searches import run_space, tune_overhead

    cpu = torch.device("cpu")
    figures, details, rows = {}, {}, []
    print(f"[1/4] GAN data path: fit_dcgan vs per-sample DataLoader, {args.steps} steps x {args.repeats}", flush=True)
    d = details["data_path"] = data_path_speedup(images, steps=args.steps, repeats=args.repeats, device=cpu)
    figures["data_path_speedup"] = d["data_path_speedup"]
    rows.append(("data_path_speedup", f"{d['data_path_speedup']:.2f}", TARGETS["data_path_speedup"],
                 f"{d['gantune_images_per_s']:.0f} vs {d['naive_png_images_per_s']:.0f} img/s (PNG per sample); "
                 f"{d['data_path_speedup_vs_in_memory']:.2f} vs in-memory per sample"))
    print(f"[2/4] E-GAN (3 mutations) vs DCGAN iteration, {args.steps} steps x {args.repeats}", flush=True)
    e = details["egan"] = egan_over_dcgan(images, steps=args.steps, repeats=args.repeats, device=cpu)
    figures["egan_over_dcgan"] = e["egan_over_dcgan"]
    rows.append(("egan_over_dcgan", f"{e['egan_over_dcgan']:.2f}", TARGETS["egan_over_dcgan"],
                 f"{e['egan_ms_per_iteration']:.1f} vs {e['dcgan_ms_per_iteration']:.1f} ms/iteration"))
    print(f"[3/4] Ray Tune overhead: spaces/demo.yaml, {args.tune_samples} trials, 1 CPU each", flush=True)
    with tempfile.TemporaryDirectory() as work:
        run = run_space({"search.num_samples": args.tune_samples}, Path(work), "bench-tune")
    t = details["tune"] = {
        **tune_overhead(run),
        "ran": f"spaces/demo.yaml --num-samples {args.tune_samples} --cpus-per-trial 1",
    }
    figures["tune_overhead"] = t["tune_overhead"]
    rows.append(
        (
            "tune_overhead",
            f"{t['tune_overhead']:.3f}",
            TARGETS["tune_overhead"],
            f"{t['inside_trials_seconds']:.0f} s in trials / ({t['wall_seconds']:.0f} s wall x {t['concurrent']})",
        )
    )
    for part, merged in zip(reuse_suite(args), (figures, details, rows)):
        merged.update(part) if isinstance(merged, dict) else merged.extend(part)
    packing = gpu_packing(images, steps=args.steps * 5)
    if packing is None:
        print("[5] gpu_packing skipped: no CUDA device on this machine", flush=True)
    else:
        figures["gpu_packing"] = packing["gpu_packing"]
        details["gpu_packing"] = packing
        rows.append(("gpu_packing", str({k: round(v, 2) for k, v in packing["gpu_packing"].items()}),
                     TARGETS["gpu_packing"], "aggregate img/s with 2 and 4 trials / 1 trial"))
    return figures, details, rows


def reuse_suite(args) -> tuple[dict, dict, list]:
    from .gan_reuse import gan_reuse

    print(
        f"[4/4] GAN reuse: benchmarks/spaces/gan_reuse.yaml, {args.reuse_samples} trials, cache off then on", flush=True
    )
    r = gan_reuse(args.reuse_samples)
    row = ("gan_reuse_compute_ratio", f"{r['gan_reuse_compute_ratio']:.2f}", TARGETS["gan_reuse_compute_ratio"],
           f"{r['gan_trainings_cache_on']} vs {r['gan_trainings_cache_off']} GANs trained; best trial agrees: "
           f"{r['best_trial_agrees']}")
    return {"gan_reuse_compute_ratio": r["gan_reuse_compute_ratio"]}, {"gan_reuse": r}, [row]


def traffic_suite(args) -> tuple[dict, dict, list]:
    from .mlflow_traffic import mlflow_traffic, print_traffic

    print("[traffic] MLflow requests and bytes of a smoke search through a counting proxy, before and after",
          flush=True)
    t = mlflow_traffic(args.before_gantune, args.before_space)
    print_traffic(t)
    figures, rows = {}, []
    for scheduler in ("asha", "fifo"):
        before, after = t[scheduler]["before"], t[scheduler]["after"]
        key = f"mlflow_bytes_per_fold_ratio_{scheduler}"
        figures[key] = t[scheduler]["after_over_before"]["trial_bytes_up_per_fold"]
        rows.append((key, f"{figures[key]:.2f}", TARGETS["mlflow_bytes_per_fold_ratio"],
                     f"{after['trial_bytes_up_per_fold'] / 1e3:.0f} vs {before['trial_bytes_up_per_fold'] / 1e3:.0f} "
                     f"kB up per fold; {after['trial_requests_per_fold']:.1f} vs "
                     f"{before['trial_requests_per_fold']:.1f} requests per fold"))
    return figures, {"mlflow_traffic": t}, rows


def search_suite(args) -> tuple[dict, dict, list]:
    from .searches import run_space, search_compute_fraction

    runs = {}
    for name, overrides in SEARCH_EFFICIENCY.items():
        print(f"[4] search efficiency: {name}, {args.search_samples} trials", flush=True)
        with tempfile.TemporaryDirectory() as work:
            runs[name] = run_space(
                {**overrides, "search.num_samples": args.search_samples}, Path(work), f"bench-{name}"
            )
    s = search_compute_fraction(runs["tpe_asha"], runs["random_fifo"])
    s["ran"] = {name: {**o, "search.num_samples": args.search_samples} for name, o in SEARCH_EFFICIENCY.items()}
    if s["reached"]:
        value = f"{s['search_compute_fraction']:.2f}"
        how = (f"{s['asha_seconds_to_reach']:.0f} s to reach AUC {s['random_best_val_auc']:.3f} "
               f"/ {s['random_total_seconds']:.0f} s")
    else:
        value = "not reached"
        how = (f"best AUC {s['asha_best_val_auc']:.3f} < random's {s['random_best_val_auc']:.3f}; "
               f"{s['asha_total_seconds']:.0f} s in all / {s['random_total_seconds']:.0f} s")
    row = ("search_compute_fraction", value, TARGETS["search_compute_fraction"], how)
    return {"search_compute_fraction": s["search_compute_fraction"]}, {"search": s}, [row]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    print_machine(info)
    if not BREASTMNIST.exists():
        print(f"benchmarks: {BREASTMNIST} is missing (it ships with the repository)", file=sys.stderr)
        return 2
    if args.search:
        figures, details, rows = search_suite(args)
    elif args.only == "gan_reuse":
        figures, details, rows = reuse_suite(args)
    elif args.only == "mlflow_traffic":
        figures, details, rows = traffic_suite(args)
    else:
        from gantune.trainables.data.datasets import load_medmnist_npz

        figures, details, rows = quick_suite(args, load_medmnist_npz(BREASTMNIST).pool.images)
    info["load_avg_1_5_15_after"] = machine()["load_avg_1_5_15"]
    suite = "search" if args.search else "mlflow_traffic" if args.only == "mlflow_traffic" else "bench"
    write_results(figures, details, info, suite, args.out)  # the machine (and its load) per suite
    print()
    print_table(rows)
    print(f"\nwrote {args.out}; load average before {info['load_avg_1_5_15']}, after {info['load_avg_1_5_15_after']}"
          " (figures are noisy when the machine is shared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
