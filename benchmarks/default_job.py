"""Benchmark: how long the default job takes, end to end, and where the time goes.

    python -m benchmarks.default_job [--repeats 3] [--cap-isa avx2] [--warm-cache] [overrides...]

Runs `python -m trainer [overrides]` as `make train` does (fresh run directory, and by
default a fresh, empty corpus cache: what a user meets on a new clone), `--repeats` times,
and prints in Markdown the machine (CPU model and the flags that matter: AVX2, AVX-512,
AVX-512 BF16, AMX), the wall time of each run, the median, and the breakdown that the
run's summary.json records (start-up, building, corpus, steps, data, validation, PESQ/STOI,
logging, checkpoints) with the in-domain SI-SDR improvement.

`--cap-isa avx2` runs the job as on a CPU without AVX-512: oneDNN, ATen and MKL are capped
at AVX2 (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS), which also
takes away oneDNN's bf16 LSTM. It reproduces the kernels of such a CPU, not its clock or
its caches. Nothing here is a test.
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

from benchmarks.common import CAPS, machine
from trainer import summary as run_summary
from trainer.run_state import TIME_PARTS as PARTS

ROOT = Path(__file__).resolve().parents[1]


def run_once(overrides: list[str], env: dict[str, str], cache: Path) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        started = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "trainer",
                f"hydra.run.dir={run_dir}",
                "trainer.progress=log",
                f"data.cache_dir={cache}",
                *overrides,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            sys.exit(f"the job failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return wall, run_summary.read(run_dir)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.default_job", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--cap-isa", choices=sorted(CAPS), help="run with the CPU's kernels capped at this instruction set"
    )
    parser.add_argument(
        "--warm-cache", action="store_true", help="render the corpus once first; time runs that read it"
    )
    args, overrides = parser.parse_known_args(argv)
    env = {**os.environ, **CAPS.get(args.cap_isa, {})}
    rows = []
    with tempfile.TemporaryDirectory() as shared:
        if args.warm_cache:
            run_once([*overrides, "trainer.epochs=1", "trainer.steps_per_epoch=1"], env, Path(shared))
        for i in range(args.repeats):
            cache = Path(shared) if args.warm_cache else Path(shared) / f"cold-{i}"
            rows.append(run_once(overrides, env, cache))
    cap = f", kernels capped at {args.cap_isa.upper()}" if args.cap_isa else ""
    job = f" ({' '.join(overrides)})" if overrides else ""
    cache_state = "warm" if args.warm_cache else "cold"
    print(
        f"## The default job{job}: {args.repeats} runs, {cache_state} corpus cache\n\n"
        f"CPU: {machine()}{cap}; {time.strftime('%Y-%m-%d')}\n"
    )
    print("| run | wall s | " + " | ".join(PARTS) + " | SI-SDRi dB |")
    print("|---" * (len(PARTS) + 3) + "|")
    for i, (wall, s) in enumerate(rows, 1):
        parts = " | ".join(f"{s['seconds'].get(p, 0):.1f}" for p in PARTS)
        print(f"| {i} | {wall:.1f} | {parts} | {s['final_metrics'].get('si_sdri', float('nan')):.2f} |")
    walls = [w for w, _ in rows]
    print(f"\nmedian wall time {statistics.median(walls):.1f} s (min {min(walls):.1f}, max {max(walls):.1f})")


if __name__ == "__main__":
    main(sys.argv[1:])
