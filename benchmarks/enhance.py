"""Benchmark: `python -m trainer.enhance` throughput on CPU.

    python -m benchmarks.enhance [--files 20] [--seconds 10] [--threads 1 2]

Trains nothing: builds the default model (LSTM enhancer, random weights: speed does not
depend on them) into a checkpoint, writes `--files` mono 16 kHz files of `--seconds` each,
and times the whole `python -m trainer.enhance` process on them (start-up included) and,
in this process, the model time per file. Reports files/s and the real-time factor (seconds
of compute per second of audio; < 1 is faster than real time) per torch thread count.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from benchmarks.common import ROOT, untrained_checkpoint
from trainer.provenance import cpu

SR = 16000


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.enhance", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-enhance-") as tmp:
        root = Path(tmp)
        ckpt = untrained_checkpoint(root)
        rng = np.random.default_rng(0)
        (root / "in").mkdir()
        for i in range(args.files):
            noise = (0.1 * rng.standard_normal(int(args.seconds * SR))).astype(np.float32)
            sf.write(root / "in" / f"f{i:03d}.wav", noise, SR)
        audio = args.files * args.seconds
        for threads in args.threads:
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            out = root / f"out{threads}"
            start = time.perf_counter()
            cmd = [sys.executable, "-m", "trainer.enhance", str(ckpt), str(root / "in"), "-o", str(out), "--quiet"]
            proc = subprocess.run([*cmd, "--device", "cpu"], cwd=ROOT, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"trainer.enhance failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
            wall = time.perf_counter() - start
            rows.append((threads, wall, args.files / wall, wall / audio))
    print(f"trainer.enhance on CPU, {cpu()['model']}, {os.cpu_count()} cores; default model (LSTM enhancer), "
          f"{args.files} files of {args.seconds:g} s at 16 kHz\n")  # fmt: skip
    print("| torch threads | wall s (whole process) | files/s | RTF |\n|---|---|---|---|")
    for threads, wall, fps, rtf in rows:
        print(f"| {threads} | {wall:.1f} | {fps:.2f} | {rtf:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
