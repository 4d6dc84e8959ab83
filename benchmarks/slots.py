"""Benchmark: what `hydra/launcher=slots` gains over the basic and joblib launchers.

    python -m benchmarks.slots [--slots 2] [--steps 40] [--trials 16] [--only grid,search,overhead]

1. A grid of 8 jobs of uneven length (two of them 3x the shortest in steps) on `--slots`
   CPU slots: wall time with the basic launcher (one job at a time), joblib (n_jobs =
   slots, one batch), joblib in batches of `slots` jobs (hydra.sweeper.max_batch_size),
   and the slot launcher; the slots' busy fraction (time in jobs / slots x wall).
2. A search of `--trials` trials with successive-halving pruning (conf/search/tiny.yaml,
   smaller) on the same slots: wall time and idle slot-seconds, batched (joblib, as the
   search ran before slots) against the slot launcher.
3. The launcher's own cost per job: from the launch of a job to its first training step,
   slots (a fresh process per job) beside basic (jobs in the sweep's process).

Job times come from each run's summary.json (`job_seconds`, `first_step_unix`) and the
file's modification time, the same way for every launcher. Markdown output.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, machine

SMALL = [
    "trainer.batch_size=4", "trainer.val_batch_size=8", "trainer.num_workers=0", "trainer.log_every=5",
    "trainer.progress=none", "data.segment_seconds=0.5", "data.val_size=8", "data.corpus_size=16",
    "data.noise_corpus_size=8", "model.hidden=32", "trainer.validation.slow_examples=0",
    "trainer.validation.media_examples=0", "trainer.warmup_steps=0",
]  # fmt: skip


def launcher_args(name: str, slots: int) -> list[str]:
    return {
        "basic": [],
        "joblib": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={slots}"],
        "joblib_batches": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={slots}",
                           f"hydra.sweeper.max_batch_size={slots}"],
        "slots": ["hydra/launcher=slots", f"hydra.launcher.cpu_slots={slots}"],
    }[name]  # fmt: skip


def sweep(tmp: Path, name: str, args: list[str], threads: int) -> tuple[float, list[dict]]:
    """Run `python -m trainer <args>` into tmp/name; its wall time and its jobs' records."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TRAINER_OUTPUTS": str(tmp / f"{name}-outputs")}
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "trainer", *args, f"hydra.sweep.dir={tmp / name}"], cwd=ROOT,
                          env=env, capture_output=True, text=True)  # fmt: skip
    wall = time.time() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    jobs = []
    for path in (tmp / name).rglob("summary.json"):
        s = json.loads(path.read_text())
        end = path.stat().st_mtime
        jobs.append({"start": end - s["job_seconds"], "end": end, "first_step": s.get("first_step_unix"),
                     "status": s["status"], "epochs": s.get("epochs")})  # fmt: skip
    return wall, jobs


def pool_idle(sweep_dir: Path, slots: int) -> str:
    """Under the slot launcher: slot-seconds with no job process at all (the pool's own
    timeline), as opposed to time outside the jobs' training (job start-up included)."""
    path = sweep_dir / ".slots" / "timeline.jsonl"
    if not path.is_file():
        return "-"
    spans = [(e["start"], e["end"]) for e in map(json.loads, path.read_text().splitlines())]
    wall = max(e for _, e in spans) - min(b for b, _ in spans)
    return f"{slots * wall - sum(e - b for b, e in spans):.1f}"


def busy(jobs: list[dict], slots: int) -> tuple[float, float]:
    """(busy fraction, idle slot-seconds) between the first job's start and the last one's end."""
    span = max(j["end"] for j in jobs) - min(j["start"] for j in jobs)
    used = sum(j["end"] - j["start"] for j in jobs)
    return used / (slots * span), slots * span - used


def grid(tmp: Path, slots: int, steps: int) -> None:
    lengths = [steps * 3, steps, steps, steps, steps * 3, steps, steps, steps]  # two long, six short
    # seeds and lengths zipped into one axis: job i trains lengths[i] steps
    args = ["-m", *SMALL, "trainer.epochs=1", "trainer.seed=" + ",".join(map(str, range(8))),
            f"trainer.steps_per_epoch={','.join(map(str, lengths))}",
            "hydra.sweeper.zip=[[trainer.seed,trainer.steps_per_epoch]]"]  # fmt: skip
    print(f"\n### 8 jobs ({steps} or {3 * steps} steps) on {slots} CPU slots\n")
    print("| launcher | wall s | jobs' busy fraction of the slots | idle slot-s | no process on the slot, slot-s |")
    print("|---|---|---|---|---|")
    for name in ("basic", "joblib", "joblib_batches", "slots"):
        threads = slots if name == "basic" else 1  # the cores shared out: one job with all, or one each
        wall, jobs = sweep(tmp, f"grid-{name}", [*args, *launcher_args(name, slots)], threads)
        n = 1 if name == "basic" else slots
        fraction, idle = busy(jobs, n)
        empty = pool_idle(tmp / f"grid-{name}", n)
        print(f"| {name} ({n} at once) | {wall:.1f} | {fraction:.0%} | {idle:.1f} | {empty} |", flush=True)


def search(tmp: Path, slots: int, trials: int) -> None:
    small = [o for o in SMALL if not o.startswith("model.hidden")]  # a searched parameter
    args = ["+search=tiny", *small, "trainer.epochs=6", "trainer.steps_per_epoch=15",
            f"hydra.sweeper.n_trials={trials}", f"hydra.sweeper.n_jobs={slots}",
            "hydra.sweeper.sampler.seed=0"]  # fmt: skip
    print(f"\n### A {trials}-trial search with successive-halving pruning on {slots} slots\n")
    print("| launcher | wall s | pruned | busy fraction | idle slot-s | no process on the slot, slot-s |")
    print("|---|---|---|---|---|---|")
    for name in ("joblib", "slots"):
        storage = f"hydra.sweeper.storage=sqlite:///{tmp}/search-{name}.db"
        wall, jobs = sweep(tmp, f"search-{name}", [*args, storage, *launcher_args(name, slots)], 1)
        fraction, idle = busy(jobs, slots)
        pruned = sum(j["status"] == "pruned" for j in jobs)
        label = "batched (joblib)" if name == "joblib" else "slots"
        print(f"| {label} | {wall:.1f} | {pruned} of {len(jobs)} | {fraction:.0%} | {idle:.1f} | "
              f"{pool_idle(tmp / f'search-{name}', slots)} |", flush=True)  # fmt: skip


def overhead(tmp: Path, slots: int) -> None:
    args = ["-m", *SMALL, "trainer.epochs=1", "trainer.steps_per_epoch=5", "trainer.seed=0,1,2,3"]
    print("\n### Launch to first step, per job\n")
    print("| launcher | median s | jobs |")
    print("|---|---|---|")
    for name in ("basic", "slots"):
        start = time.time()
        _, jobs = sweep(tmp, f"overhead-{name}", [*args, *launcher_args(name, 1)], 1)
        jobs.sort(key=lambda j: j["start"])
        launched = [start] + [j["end"] for j in jobs[:-1]]  # one slot: each job starts when the one before ends
        waits = [j["first_step"] - t for j, t in zip(jobs, launched)][1:]  # the first pays the sweep's own start
        print(f"| {name} | {statistics.median(waits):.2f} | {len(waits)} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40, help="the short grid jobs' steps")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--only", default="grid,search,overhead")
    args = parser.parse_args()
    print(f"## hydra/launcher=slots, {time.strftime('%Y-%m-%d')}\n\n{machine()}")
    with tempfile.TemporaryDirectory(prefix="bench-slots-") as tmp:
        parts = args.only.split(",")
        if "grid" in parts:
            grid(Path(tmp), args.slots, args.steps)
        if "search" in parts:
            search(Path(tmp), args.slots, args.trials)
        if "overhead" in parts:
            overhead(Path(tmp), args.slots)


if __name__ == "__main__":
    main()
