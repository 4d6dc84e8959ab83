"""Benchmark: how long the CLI takes to start training, and what a multirun adds per job.

    python -m benchmarks.startup [--repeats 5]

1. Start-up. Wall time from launching `python -m trainer` (default config, compile off)
   to its training loop, then to the first batch, against the wall time of
   `python -c "import torch"` and of a script that only imports torch and builds an
   optimizer. Target: <= import torch + 0.5 s.
2. Multirun overhead. A sweep of 1 job and a sweep of 9 jobs of the same tiny job; the
   per-job overhead is the extra wall time of the 8 added jobs beyond their own work
   (`job_seconds`, measured inside each job), divided by 8. Target: <= 100 ms.
Medians over repeats; results print as Markdown.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trainer import summary as run_summary

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "trainer.epochs=1", "trainer.steps_per_epoch=2", "trainer.batch_size=2", "trainer.log_every=1",
    "trainer.warmup_steps=0", "data.segment_seconds=0.25", "data.val_size=2", "data.corpus_size=2",
    "data.noise_corpus_size=2", "data.families=[white]", "model.hidden=4", "trainer.progress=none",
]  # fmt: skip


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    return time.perf_counter() - start


def first_step(tmp: Path, i: int) -> tuple[float, float]:
    run_dir = tmp / f"start{i}"
    launched = time.time()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "trainer.epochs=1",
            "trainer.steps_per_epoch=1",
            "trainer.progress=none",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    summary = run_summary.read(run_dir)
    return summary["loop_start_unix"] - launched, summary["first_step_unix"] - summary["loop_start_unix"]


def sweep(tmp: Path, name: str, jobs: int) -> tuple[float, float]:
    sweep_dir = tmp / name
    seeds = ",".join(str(s) for s in range(jobs))
    total = wall(
        [sys.executable, "-m", "trainer", "-m", f"trainer.seed={seeds}", *TINY, f"hydra.sweep.dir={sweep_dir}"]
    )
    own = sum(run_summary.read(p.parent)["job_seconds"] for p in sweep_dir.glob("*/summary.json"))
    return total, own


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        wall([sys.executable, "-m", "trainer", "--help"])  # warm the file cache
        torch_s, optim_s, start_s, batch_s, overhead_ms = [], [], [], [], []
        for i in range(args.repeats):
            torch_s.append(wall([sys.executable, "-c", "import torch"]))
            optim_s.append(
                wall([sys.executable, "-c", "import torch; torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())"])
            )
            start, batch = first_step(tmp, i)
            start_s.append(start)
            batch_s.append(batch)
            t1, own1 = sweep(tmp, f"one{i}", 1)
            t9, own9 = sweep(tmp, f"nine{i}", 9)
            overhead_ms.append(1000 * ((t9 - t1) - (own9 - own1)) / 8)
    torch_med, start_med = statistics.median(torch_s), statistics.median(start_s)
    print("## Start-up and multirun overhead\n")
    print(f"{args.repeats} repeats, medians; python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    print("| measure | value | target |\n|---|---|---|")
    print(f"| `python -c 'import torch'` | {torch_med:.2f} s | |")
    print(
        "| `python -c 'import torch; torch.optim.AdamW(...)'` (the optimizer imports torch._dynamo) "
        f"| {statistics.median(optim_s):.2f} s | |"
    )
    print(f"| `python -m trainer` to its training loop (config, build, loggers) | {start_med:.2f} s | |")
    print(f"| start-up beyond `import torch` | **{start_med - torch_med:+.2f} s** | <= +0.5 s |")
    print(
        "| then the first batch (cold corpus: renders its utterances and noises) "
        f"| {statistics.median(batch_s):.2f} s | |"
    )
    print(
        f"| multirun overhead per job (9-job vs 1-job sweep) | **{statistics.median(overhead_ms):.0f} ms** "
        f"(spread {min(overhead_ms):.0f}-{max(overhead_ms):.0f}) | <= 100 ms |"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
