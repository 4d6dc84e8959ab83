"""Benchmark: the engine's cost over a bare PyTorch loop, and data supply vs demand.

    python -m benchmarks.engine [overrides...]      # e.g. model=lstm trainer.batch_size=32

1. Engine vs bare loop. The same model, batches (pre-generated, in memory) and optimizer
   run through `trainer.loop.engine.train` (the real loop: window sums, divergence flags,
   schedule, log cadence, then one validation batch and the `last`/`best` checkpoints)
   and through a hand-written loop doing the same useful work (including the same two
   checkpoint writes, so the comparison is about the loop, not the file format). Nine blocks
   of one 60-step epoch alternate (engine, bare, engine, ...) so drift in machine speed
   hits both; the figure is the median of the per-block time ratios. Target: <= 1.03.
2. Data pipeline. Samples/s of the configured training loader, cold (corpus being
   rendered) and warm, against the samples/s the model consumes. Target: >= 10x (warm).
Results print as Markdown; nothing here is a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import InMemory, engine_block, in_memory_feed
from trainer.checkpoint import snapshot
from trainer.launch.startup import compose
from trainer.loop.checkpointer import Checkpointer
from trainer.run import assemble
from trainer.run_state import RunState


def bare_block(parts, batches, valid_batch, grad_clip, log_every, checkpointer, state):
    """What a careful researcher would write by hand for the same work."""
    model, opt = parts.network.trained, parts.optim.optimizer
    loss_fn, sched = parts.optim.loss, parts.optim.schedule.scheduler
    params = [p for g in opt.param_groups for p in g["params"]]
    model.train()
    for i, batch in enumerate(batches, 1):
        out = model(batch["noisy"])
        total, _ = loss_fn(out, batch["clean"])
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if sched is not None:
            sched.step()
        if i % log_every == 0:
            total.item()
    model.eval()
    with torch.no_grad():
        loss_fn(model(valid_batch["noisy"]), valid_batch["clean"])[0].item()
    ckpt = snapshot(model, opt, parts.optim.schedule, parts.optim.precision.scaler, state, parts.config)
    checkpointer.save(checkpointer.last, ckpt)
    checkpointer.save(checkpointer.best, ckpt)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="overrides of the job, e.g. model=lstm trainer.batch_size=32")
    argv = parser.parse_args(argv).overrides
    blocks, steps = 9, 60
    overrides = ["trainer.num_workers=0", "trainer.checkpoint_every=0", *argv]
    cfg = compose(overrides)
    t = cfg.trainer
    parts = assemble(cfg)
    source = parts.feed.train_loader.dataset
    batch_size = t.batch_size

    # --- 2a. data supply: the real loader, cold then warm --------------------------------
    cfg_loader = compose([*argv])  # with the configured num_workers
    loader_parts = assemble(cfg_loader)
    loader_parts.feed.sampler.set_position(0, 0)
    it = iter(loader_parts.feed.train_loader)
    next(it)
    marks = []
    start = time.perf_counter()
    for i in range(1, len(loader_parts.feed.sampler) // loader_parts.feed.train_loader.batch_size - 1):
        next(it)
        marks.append(time.perf_counter() - start)
    n_batches = len(marks)
    half = n_batches // 2
    cold_rate = half * batch_size / marks[half - 1]
    warm_rate = (n_batches - half) * batch_size / (marks[-1] - marks[half - 1])

    # --- 1. engine vs bare ------------------------------------------------------------------
    items = [source[i] for i in range(steps * batch_size)]
    dataset = InMemory(items)
    valid_batch = next(iter(parts.feed.valid_loader))
    parts.feed = in_memory_feed(parts.feed, dataset, batch_size, steps, valid_batch)
    engine_times, bare_times = [], []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        checkpointer = Checkpointer(tmp / "ckpt")
        cfg.trainer.epochs = 1
        for block in range(blocks + 1):  # block 0 warms both paths up and is discarded
            state = RunState()
            t0 = time.perf_counter()
            engine_block(parts, cfg, state, checkpointer, tmp)
            t1 = time.perf_counter()
            parts.feed.sampler.set_position(0, 0)  # the same loader, the same batches
            bare_block(
                parts,
                parts.feed.train_loader,
                valid_batch,
                t.grad_clip or float("inf"),
                t.log_every,
                checkpointer,
                state,
            )
            t2 = time.perf_counter()
            if block:
                engine_times.append(t1 - t0)
                bare_times.append(t2 - t1)
    ratios = [e / b for e, b in zip(engine_times, bare_times)]
    step_s = statistics.median(bare_times) / steps
    consume = batch_size / step_s

    print(f"## Engine benchmark ({' '.join(argv) or 'defaults'})\n")
    print(
        f"model {type(parts.network.raw).__name__}, batch {batch_size}, {steps} steps/block, {blocks} blocks, "
        f"device {parts.place.device}, torch {torch.__version__}, threads {torch.get_num_threads()}\n"
    )
    print("| measure | value |\n|---|---|")
    print(f"| engine block, median | {statistics.median(engine_times):.3f} s |")
    print(f"| bare-loop block, median | {statistics.median(bare_times):.3f} s |")
    print(
        f"| engine / bare, median of per-block ratios | **{statistics.median(ratios):.3f}** "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}) |"
    )
    print(f"| model consumption (bare loop) | {consume:.0f} samples/s |")
    print(
        f"| data pipeline, cold half ({half} batches, num_workers={cfg_loader.trainer.num_workers}) "
        f"| {cold_rate:.0f} samples/s ({cold_rate / consume:.1f}x) |"
    )
    print(f"| data pipeline, warm half | {warm_rate:.0f} samples/s (**{warm_rate / consume:.1f}x**) |")


if __name__ == "__main__":
    main(sys.argv[1:])
