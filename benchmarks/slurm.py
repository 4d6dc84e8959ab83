"""Benchmark: what SLURM adds to a sweep, on the local one-node cluster.

    sweeps/slurm/local_cluster.sh start        # as root, once
    python -m benchmarks.slurm [--jobs 4] [--repeats 2]

A sweep of `--jobs` small jobs (one CPU each) with `hydra/launcher=slurm` (sbatch, the
scheduler, a code snapshot) and with `submitit_local` (the same submitit path, local
processes): per job, the latency from its submission (submitit's `*_submitted.pkl`) to
its first training step (summary.json's `first_step_unix`); per sweep, the wall time and
the share of it outside the jobs (wall minus the span from the first job's start to the
last one's end). Markdown output.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, machine

JOB = [
    "trainer.epochs=1", "trainer.steps_per_epoch=20", "trainer.batch_size=4", "trainer.val_batch_size=8",
    "trainer.num_workers=0", "trainer.progress=none", "data.segment_seconds=0.5", "data.val_size=8",
    "data.corpus_size=16", "data.noise_corpus_size=8", "model.hidden=32",
]  # fmt: skip
LAUNCHERS = {
    "slurm": ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1"],
    "submitit_local": ["hydra/launcher=submitit_local"],
}


def sweep(folder: Path, launcher: str, jobs: int) -> tuple[float, list[float], float]:
    """(wall s, submit-to-first-step s per job, span of the jobs s)."""
    args = ["-m", *LAUNCHERS[launcher], *JOB, "trainer.seed=" + ",".join(str(i + 1) for i in range(jobs)),
            f"hydra.sweep.dir={folder}", f"outputs={folder}-outputs"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "trainer", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode != 0:
        raise SystemExit(f"{launcher} failed:\n{proc.stderr[-3000:]}")
    submitted = {p.parent.name: p.stat().st_mtime for p in (folder / ".submitit").glob("*/*_submitted.pkl")}
    waits, spans = [], []
    for summary in folder.glob("*/summary.json"):
        s = json.loads(summary.read_text())
        end = summary.stat().st_mtime
        spans.append((end - s["job_seconds"], end))
        waits.append(s["first_step_unix"] - min(submitted.values()))
    span = max(e for _, e in spans) - min(b for b, _ in spans)
    return wall, waits, span


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("sbatch") is None:
        raise SystemExit("no sbatch: start the local cluster first (sweeps/slurm/local_cluster.sh start)")
    print(f"## SLURM against submitit_local, {time.strftime('%Y-%m-%d')}\n\n{machine()}\n")
    print(f"{args.jobs} jobs of 20 steps per sweep, one CPU each; {args.repeats} sweeps per launcher.\n")
    print("| launcher | submit to first step, median s (min-max) | sweep wall s | outside the jobs s |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-slurm-") as tmp:
        for launcher in LAUNCHERS:
            waits, walls, outside = [], [], []
            for r in range(args.repeats):
                wall, w, span = sweep(Path(tmp) / f"{launcher}-{r}", launcher, args.jobs)
                waits += w
                walls.append(wall)
                outside.append(wall - span)
            print(f"| {launcher} | {statistics.median(waits):.1f} ({min(waits):.1f}-{max(waits):.1f}) | "
                  f"{statistics.median(walls):.1f} | {statistics.median(outside):.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
