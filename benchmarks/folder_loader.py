"""Benchmark: how fast the folder datasets feed training from disk, against what the model eats.

    python -m benchmarks.folder_loader [--files 400] [--workers 0 1 2] [--batches 60]

Writes a corpus of `--files` speech files of 2-4 s (16 kHz; every fifth at 48 kHz, so
resampling is part of the cost), as many noise files, and the matching clean/noisy pairs,
into a temporary folder. Then, for `folder_pairs` and `folder_mix` at each number of loader
workers, draws `--batches` training batches of 16 one-second examples through the
trainer's own loader (`trainer.data.loader.train_loader`) after one warm-up batch, and
reports samples/s. A crop reads only its frames from disk (`soundfile` seeks), and only
files at another rate are resampled; nothing but the file table is held in memory (the
process's peak RSS is printed).

The default model's consumption (samples/s of plain training steps of the default LSTM at
batch 16 on the embedded data) is measured the same run, and each row shows the supply as
a multiple of it. Goal: >= 10x on 2 cores. Markdown output; nothing here is a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import write_corpus
from trainer.data.folder import FolderMix, FolderPairs
from trainer.data.loader import train_loader
from trainer.launch.startup import compose
from trainer.provenance import cpu

BATCH = 16


def supply(dataset, workers: int, batches: int) -> float:
    loader, _ = train_loader(dataset, False, BATCH, None, 0, workers, False, 0, 1)
    it = iter(loader)
    next(it)  # warm-up: workers started, first files opened
    start = time.perf_counter()
    for _ in range(batches):
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
            next(it)
    return batches * BATCH / (time.perf_counter() - start)


def consumption(steps: int = 20) -> float:
    """Samples/s of plain training steps of the default model (1 s, batch 16) on this CPU."""
    from trainer.loop.engine import train_step
    from trainer.run import assemble

    parts = assemble(compose(["trainer.num_workers=0", "trainer.diagnostics.terms_every=0"]))
    batch = next(iter(parts.feed.train_loader))
    for _ in range(3):
        train_step(parts, [batch], 5.0)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(parts, [batch], 5.0)
    return steps * batch["noisy"].shape[0] / (time.perf_counter() - start)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.folder_loader", description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--resampled-every", type=int, default=5, help="1 file in N at 48 kHz; 0: all at 16 kHz")
    args = parser.parse_args(argv)
    eats = consumption()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        root = Path(tmp)
        write_corpus(root, args.files, args.resampled_every)
        cache = str(root / "cache")
        sources = {
            "folder_pairs": FolderPairs(str(root / "clean"), str(root / "noisy"), cache_dir=cache),
            "folder_mix": FolderMix(str(root / "speech"), str(root / "noise"), cache_dir=cache),
        }
        for name, source in sources.items():
            for workers in args.workers:
                rows.append((name, workers, supply(source.train(), workers, args.batches)))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"Folder datasets from disk, {cpu()['model']}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}, {args.files} files of 2-4 s per folder "
          f"({f'1 in {args.resampled_every} at 48 kHz' if args.resampled_every else 'all at 16 kHz'})\n")  # fmt: skip
    print(f"default model (LSTM, batch {BATCH} x 1 s) consumes {eats:.0f} samples/s\n")
    print("| source | loader workers | samples/s | x consumption |\n|---|---|---|---|")
    for name, workers, rate in rows:
        print(f"| {name} | {workers} | {rate:.0f} | {rate / eats:.1f}x |")
    print(f"\npeak RSS of the benchmark process: {peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
