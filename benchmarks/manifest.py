"""Benchmark: the start-up cost of a folder dataset, first scan and later starts.

    python -m benchmarks.manifest [--files 2500 10000] [--seconds 0.25]

For each size, writes that many short mono WAV files (16 kHz, `--seconds` long, a tone
plus noise) into a temporary folder and times `trainer.data.folder._good_files`, what
`FolderMix` and `FolderPairs` do per folder at start:
  * the first scan (every file read in full and checked; the manifest written), with its
    CPU time, to show how much of the machine the scan's threads use;
  * a second start (listing + one stat per file; nothing read): the target, <= 1 s at 10,000;
  * a start after 1% of the files changed and 1% were added.
Files/s of the first scan at each size show whether it scales linearly. Markdown output.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from trainer.data.folder import _good_files
from trainer.provenance import cpu

SR = 16000


def write_files(folder: Path, start: int, count: int, seconds: float) -> None:
    rng = np.random.default_rng(start)
    t = np.arange(int(seconds * SR)) / SR
    for i in range(start, start + count):
        sub = folder / f"spk{i % 100:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        x = 0.3 * np.sin(2 * np.pi * (200 + i % 300) * t) + 0.01 * rng.standard_normal(len(t))
        sf.write(sub / f"utt{i:06d}.wav", x.astype(np.float32), SR, subtype="PCM_16")


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the scan's worker processes)."""
    return sum(
        u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )


def start(folder: Path, cache: Path) -> tuple[float, float]:
    wall, used = time.perf_counter(), cpu_seconds()
    good = _good_files("speech_dir", folder, "error", -60.0, SR, str(cache))
    assert good
    return time.perf_counter() - wall, cpu_seconds() - used


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.manifest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, nargs="+", default=[2500, 10000])
    parser.add_argument("--seconds", type=float, default=0.25)
    args = parser.parse_args(argv)
    logging.getLogger("trainer").setLevel(logging.WARNING)
    rows = []
    for n in args.files:
        with tempfile.TemporaryDirectory(prefix="bench-manifest-") as tmp:
            folder, cache = Path(tmp) / "speech", Path(tmp) / "cache"
            write_files(folder, 0, n, args.seconds)
            first, first_cpu = start(folder, cache)
            second = min(start(folder, cache)[0] for _ in range(3))
            changed = max(1, n // 100)
            for path in sorted(folder.rglob("*.wav"))[:changed]:
                os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
            write_files(folder, n, changed, args.seconds)
            third = start(folder, cache)[0]
        rows.append((n, first, first_cpu, second, third))
    print(f"Folder scan, {cpu()['model']}, {os.cpu_count()} cores, files of {args.seconds} s (16 kHz PCM)\n")
    print("| files | first scan s | files/s | CPU s / wall s | second start s | after 1% changed + 1% added s |")
    print("|---|---|---|---|---|---|")
    for n, first, first_cpu, second, third in rows:
        print(f"| {n} | {first:.2f} | {n / first:.0f} | {first_cpu / first:.2f} | {second:.3f} | {third:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
