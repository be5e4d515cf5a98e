"""`python -m benchmarks.refit_threads`: one `gantune evaluate` refit (real_only, the recipe's
classifier, BreastMNIST's official train split, a fixed step budget) timed with torch's default
thread count against `--cpus 1`, alternating in one run on the same machine. On a machine shared
with other jobs, the default (one thread per core) makes the threads wait for each other; the
figure `refit_threads_speedup` is default seconds / one-thread seconds (> 1: --cpus 1 is faster)."""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from .common import BREASTMNIST, machine, print_machine, print_table, write_results


def one_refit(steps: int) -> None:
    from gantune.trainables.classifiers import ClassifierConfig, fit_classifier
    from gantune.trainables.data.datasets import load_medmnist_npz

    data = load_medmnist_npz(BREASTMNIST)
    train = data.pool.subset([i for i in range(len(data.pool)) if i not in set(data.official_val.tolist())])
    cfg = ClassifierConfig(name="cnn_bn", width=0.5, steps=steps, batch_size=64, eval_every=steps, patience=1)
    fit_classifier(cfg, train.images, train.labels, None, None, train.num_classes, seed=0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.refit_threads", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300, help="classifier steps per refit")
    p.add_argument("--repeats", type=int, default=3, help="timings per thread setting (alternating); median kept")
    args = p.parse_args(argv)
    default_threads = len(os.sched_getaffinity(0))
    info = machine()
    print_machine(info)
    times: dict[int, list[float]] = {default_threads: [], 1: []}
    one_refit(20)  # warm-up: imports, data cache
    for _ in range(args.repeats):
        for threads in times:
            torch.set_num_threads(threads)
            start = time.perf_counter()
            one_refit(args.steps)
            times[threads].append(time.perf_counter() - start)
    default_s, one_s = statistics.median(times[default_threads]), statistics.median(times[1])
    ratio = default_s / one_s
    print_table([("refit_threads_speedup", f"{ratio:.2f}", "> 1 on a loaded machine",
                  f"{default_threads} threads {default_s:.1f} s / 1 thread {one_s:.1f} s, {args.steps} steps")])
    seconds = {str(k): v for k, v in times.items()}
    details = {"refit_threads": {"default_threads": default_threads, "seconds": seconds, "steps": args.steps}}
    write_results({"refit_threads_speedup": round(ratio, 3)}, details, info, "refit_threads")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
