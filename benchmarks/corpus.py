"""Benchmark: what the embedded corpus costs a sweep, with and without its cache.

    python -m benchmarks.corpus [--jobs 6] [--steps 10] [--repeats 1]

Launches a multirun of `--jobs` short jobs (one optimizer each, `--steps` steps, the
default data) three ways: with the corpus cache off (`data.cache_dir=null`: the first job
renders, the others share it in the process), on an empty cache (the first launch on a new
machine), and again on the now warm cache (every later launch, and every process of a
joblib or submitit sweep). Prints wall times in Markdown; nothing here is a test.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine

ROOT = Path(__file__).resolve().parents[1]
OPTIMIZERS = ["adamw", "adam", "sgd", "radam", "nadam", "adafactor"]


def sweep(jobs: int, steps: int, cache: str, out: Path) -> float:
    # up to six jobs differ in their optimizer, more in their seed (each seed its own corpus)
    grid = (
        f"optim={','.join(OPTIMIZERS[:jobs])}"
        if jobs <= len(OPTIMIZERS)
        else f"trainer.seed={','.join(map(str, range(jobs)))}"
    )
    cmd = [
        sys.executable, "-m", "trainer", "-m", grid, "trainer.epochs=1", f"trainer.steps_per_epoch={steps}",
        "trainer.progress=none", f"data.cache_dir={cache}", f"hydra.sweep.dir={out}",
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"the sweep failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {"cache off": [], "empty cache (first launch)": [], "warm cache (relaunch)": []}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            times["cache off"].append(sweep(args.jobs, args.steps, "null", tmp / "a"))
            times["empty cache (first launch)"].append(sweep(args.jobs, args.steps, str(tmp / "cache"), tmp / "b"))
            times["warm cache (relaunch)"].append(sweep(args.jobs, args.steps, str(tmp / "cache"), tmp / "c"))
    print(
        f"## A {args.jobs}-job sweep of {args.steps}-step jobs (basic launcher)\n\n"
        f"CPU: {machine()}; {time.strftime('%Y-%m-%d')}\n"
    )
    print("| corpus | wall s (median) | per job s |\n|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.1f} | {median / args.jobs:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
