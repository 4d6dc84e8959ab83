"""Benchmark: what gradient diagnostics cost at their default cadence.

    python -m benchmarks.diagnostics [overrides...]     # default: loss=si_sdr_mrstft (two terms)

1. Per-kind cost. Median time of a plain training step, and of a step that also runs one
   kind of probe (per-term gradients, per-layer statistics, histograms; each written to a
   real TensorBoard writer), on the same in-memory batches. The amortised overhead at the
   configured cadence is sum(extra_k / every_k) / plain step.
2. End to end. The real loop (`trainer.loop.engine.train`) over blocks of steps with
   diagnostics off and at the default cadence, interleaved so machine drift hits both;
   the median of the per-block time ratios. Target for both: at most 5% slower.
Results print as Markdown; nothing here is a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from omegaconf import OmegaConf

from benchmarks.common import InMemory, engine_block, in_memory_feed
from trainer.config import DiagnosticsConfig
from trainer.launch.startup import compose
from trainer.loop.checkpointer import Checkpointer
from trainer.loop.diagnostics import GradientDiagnostics
from trainer.loop.engine import train_step
from trainer.loop.loggers import TensorBoardLogger
from trainer.run import assemble
from trainer.run_state import RunState

KINDS = {"per-term gradients": "terms_every", "per-layer statistics": "layers_every", "histograms": "histograms_every"}


def step_times(parts, batches, clip, diag, logger, repeats: int) -> float:
    """Median seconds of one step (probing every step when `diag` is given)."""
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        probe = diag.probe(i + 1) if diag is not None else None
        train_step(parts, [batches[i % len(batches)]], clip, probe)
        if probe is not None:
            logger.log(probe.scalars, i)
            logger.histograms(probe.hist, i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[2:])  # the first steps warm caches up


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.diagnostics", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="overrides of the job, e.g. model=conv")
    argv = parser.parse_args(argv).overrides
    overrides = ["loss=si_sdr_mrstft", "trainer.num_workers=0", "trainer.checkpoint_every=0", *argv]
    cfg = compose(overrides)
    t = cfg.trainer
    default = DiagnosticsConfig(**OmegaConf.to_container(t.diagnostics))
    parts = assemble(cfg)
    parts.feed.sampler.set_position(0, 0)
    loader = iter(parts.feed.train_loader)
    batches = [next(loader) for _ in range(20)]

    # --- 1. per-kind cost -------------------------------------------------------------------
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        logger = TensorBoardLogger(Path(tmp_name) / "tb")
        plain = []
        extra = {}
        for _ in range(3):  # interleave plain and probed measurements
            plain.append(step_times(parts, batches, t.grad_clip, None, logger, 12))
            for kind, key in KINDS.items():
                only = replace(default, **{k: int(k == key) for k in KINDS.values()})
                probed = step_times(
                    parts, batches, t.grad_clip, GradientDiagnostics(only, parts.network.raw), logger, 12
                )
                extra.setdefault(kind, []).append(probed - plain[-1])
        logger.close()
    base = statistics.median(plain)
    amortised = 0.0
    for kind, key in KINDS.items():
        cost, every = statistics.median(extra[kind]), getattr(default, key)
        share = cost / every / base if every else 0.0
        amortised += share
        rows.append(f"| {kind} | {1000 * cost:.1f} ms | every {every} steps | {100 * share:.2f}% |")

    # --- 2. end to end ----------------------------------------------------------------------
    steps = 2 * max(default.terms_every, default.layers_every)
    items = [parts.feed.train_loader.dataset[i] for i in range(steps * t.batch_size)]
    dataset = InMemory(items)
    parts.feed = in_memory_feed(parts.feed, dataset, t.batch_size, steps, next(iter(parts.feed.valid_loader)))
    cfg.trainer.epochs = 1
    ratios = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        checkpointer = Checkpointer(tmp / "ckpt")
        for block in range(5):  # block 0 warms up and is discarded
            times = []
            for diag in (None, GradientDiagnostics(default, parts.network.raw)):
                parts.diagnostics = diag
                t0 = time.perf_counter()
                engine_block(parts, cfg, RunState(), checkpointer, tmp)
                times.append(time.perf_counter() - t0)
            if block:
                ratios.append(times[1] / times[0])

    print(f"## Gradient diagnostics cost ({' '.join(argv) or 'defaults'}, loss=si_sdr_mrstft)\n")
    print(
        f"model {type(parts.network.raw).__name__}, batch {t.batch_size}, device {parts.place.device}, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}; plain step {1000 * base:.1f} ms\n"
    )
    print("| probe | extra time on a probed step | cadence (default) | amortised |\n|---|---|---|---|")
    print("\n".join(rows))
    print(f"| **all, at the default cadence** | | | **{100 * amortised:.2f}%** |\n")
    print(
        f"End to end (the real loop, {steps}-step blocks, off vs default, 4 interleaved pairs): median time ratio "
        f"**{statistics.median(ratios):.3f}** (min {min(ratios):.3f}, max {max(ratios):.3f})"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
