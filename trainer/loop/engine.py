"""The training loop. `train` reads top to bottom; the components it calls decide their own
cadence: the metrics window when to log (trainer/loop/window.py), the checkpointer when a save
is due (trainer/checkpoint.py), validation what each epoch computes
(trainer/loop/validation.py), the stop policy what ends the run (trainer/loop/stopping.py), the
ledger where the time goes (trainer/loop/timing.py). `train_step` is one optimizer step.

Host syncs (`.item()`, `.tolist()`) happen only at log points, checkpoints and validation:
between them the loop only queues device work, so a GPU never waits for Python.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from trainer.checkpoint import snapshot
from trainer.config import TrainerConfig
from trainer.distributed import no_sync
from trainer.files import write_json
from trainer.loop.checkpointer import Checkpointer
from trainer.loop.diagnostics import Probe
from trainer.loop.loggers import Logger, NullLogger, Progress
from trainer.loop.parts import Parts
from trainer.loop.stopping import Diverged, StopPolicy
from trainer.loop.timing import Ledger
from trainer.loop.validation import Validation, to_device
from trainer.loop.window import MetricsWindow, StepOut
from trainer.run_state import RunState


@dataclass
class Logs:
    """Where a run reports: TensorBoard's train/ and val/ writers (same tag names, so the
    curves overlay) and the console progress bar."""

    train: Logger = field(default_factory=NullLogger)
    val: Logger = field(default_factory=NullLogger)
    progress: Progress = field(default_factory=lambda: Progress("none", 0, 0))


def train_step(
    p: Parts, micro_batches: list[dict[str, torch.Tensor]], grad_clip: float | None, probe: Probe | None = None
) -> StepOut:
    """One optimizer step over `micro_batches`. A `probe` (trainer/loop/diagnostics.py), on the
    steps where diagnostics are due, measures the terms' gradients, the true gradients
    before clipping, and the update."""
    net, opt = p.network, p.optim
    net.trained.train()
    accum = len(micro_batches)
    scaler = opt.precision.scaler
    loss_sum = torch.zeros((), device=p.place.device)
    term_sums: dict[str, torch.Tensor] = {}
    for i, batch in enumerate(micro_batches):
        if p.place.cuda_graphs:  # each micro-batch a new CUDA-graph step: accumulation replays the graphs
            torch.compiler.cudagraph_mark_step_begin()
        # mixing and augmentation, where trainer.data_on_device moved them (trainer/data/staged.py)
        batch = p.feed.finish(to_device(batch, p.place.device))
        inputs, target = p.task.pair(batch)
        with no_sync(net.ddp, last=i == accum - 1):  # DDP: one gradient all-reduce per step
            with opt.precision.autocast():
                output = net.trained(inputs)
                total, terms = opt.loss(*p.task.loss_view(output, target, batch))
            if probe is not None and i == 0:  # per-term gradients of the first micro-batch
                probe.terms(terms, getattr(opt.loss, "weights", {}), scaler.get_scale() if scaler.is_enabled() else 1.0)
            # Each micro-batch contributes 1/accum: the summed gradient equals one batch of batch*accum.
            scaler.scale(total / accum).backward()
        if p.place.cuda_graphs and i < accum - 1:
            # the graph's backward wrote these gradients into its own buffers, which the next
            # micro-batch's replay overwrites before they are accumulated into: own copies
            for q in net.raw.parameters():
                if q.grad is not None:
                    q.grad = q.grad.clone()
        loss_sum += total.detach() / accum
        for name, value in terms.items():
            term_sums[name] = term_sums.get(name, 0) + value.detach() / accum
    scaler.unscale_(opt.optimizer)  # clip the true gradients, not the scaled ones
    if probe is not None:
        probe.gradients()
    params = [q for g in opt.optimizer.param_groups for q in g["params"]]
    grad_norm = nn.utils.clip_grad_norm_(params, grad_clip if grad_clip is not None else math.inf)
    scale = scaler.get_scale() if scaler.is_enabled() else None  # fp16 syncs in step() anyway
    scaler.step(opt.optimizer)
    scaler.update()
    skipped = scale is not None and scaler.get_scale() < scale
    if probe is not None:
        probe.updated()
    opt.optimizer.zero_grad(set_to_none=True)
    return StepOut(loss_sum, term_sums, grad_norm, skipped)


def epoch_batches(
    p: Parts, state: RunState, batch_size: int, accum: int, ledger: Ledger
) -> Iterator[tuple[list, float, bool]]:
    """The rest of the current epoch, one step at a time: (micro-batches, seconds waited for
    them, whether it is the epoch's last step). A resume mid-epoch skips what was consumed."""
    steps, first = p.feed.steps_per_epoch, state.step - state.epoch * p.feed.steps_per_epoch
    p.feed.sampler.set_position(state.epoch, first * accum * batch_size)
    batches = iter(p.feed.train_loader)
    for i in range(first, steps):
        ledger.restart()
        micro = [next(batches) for _ in range(accum)]
        yield micro, ledger.lap("data"), i == steps - 1


def train(
    p: Parts,
    cfg: TrainerConfig,
    state: RunState,
    *,
    checkpointer: Checkpointer,
    logs: Logs | None = None,
    history: Path | None = None,
    profiler=None,
    trial=None,
    stop=None,
) -> RunState:
    """Train until the epoch budget, early stopping, divergence or (in a search) the
    trial's pruner says stop; returns the final state. `stop` (trainer.loop.signals.GracefulStop)
    ends the run after the current step with a checkpoint and status `interrupted`.
    `history` (rank 0 only) gets the validation history after each epoch."""
    logs = logs or Logs()
    net, opt, dist = p.network, p.optim, p.place.dist
    samples_per_step = cfg.batch_size * cfg.grad_accum
    policy = StopPolicy(p.task, cfg.epochs, cfg.early_stopping, cfg.target)
    validation = Validation(cfg.validation, logs.val)
    ledger = Ledger(state)
    start_step = state.step  # every process warms up again (compilation, CUDA graphs), resumed or not
    state.speed.loop_start_unix = time.time()  # start-up ends here; the first batch is next
    # A process with no more steps than the warm-up times the steps after its first instead
    # (the first pays for the cold start); summary.json says how many steps were warm-up.
    remaining = p.feed.steps_per_epoch * cfg.epochs - start_step
    state.speed.warmup_steps = cfg.warmup_steps if remaining > cfg.warmup_steps else 1
    window = MetricsWindow(
        cfg.log_every,
        start_step + state.speed.warmup_steps,
        state.speed,
        check_grads=not opt.precision.scaler.is_enabled(),
        dist=dist,
        diagnostics=p.diagnostics,
        grad_clip=cfg.grad_clip,
    )

    def save_last() -> None:
        ledger.account()
        with ledger.spent("checkpoints"):
            checkpointer.save_last(
                snapshot(net.raw, opt.optimizer, opt.schedule, opt.precision.scaler, state, p.config)
            )

    try:
        while state.epoch < cfg.epochs:
            window.reset()
            for micro, waited, end_of_epoch in epoch_batches(p, state, cfg.batch_size, cfg.grad_accum, ledger):
                if state.step == start_step:  # the first batch is ready: the first step begins
                    state.speed.first_step_unix = time.time()
                p.feed.shape_guard.check(micro[0])
                probe = p.diagnostics.probe(state.step + 1) if p.diagnostics is not None else None
                out = train_step(p, micro, cfg.grad_clip, probe)
                state.step += 1
                if not out.skipped:  # a skipped fp16 step must not advance the schedule
                    opt.schedule.after_step()
                window.add(out, samples_per_step, waited)
                if probe is not None:
                    logs.train.log(probe.scalars, state.step)
                    logs.train.histograms(probe.hist, state.step)
                if profiler is not None:
                    profiler.step()
                ledger.lap("steps")

                if window.due(state.step, end_of_epoch):
                    values = window.flush(state.step)  # the host sync: waits for the queued device work
                    values["opt/lr"] = opt.optimizer.param_groups[0]["lr"]
                    logs.train.log(values, state.step)
                    logs.progress.update(state.step, state.epoch + 1, {"loss": values["loss/total"]})
                    ledger.lap("logging")
                if checkpointer.due(state.step, end_of_epoch):
                    window.check(state.step)  # never save a state that has gone non-finite
                    save_last()
                if stop is not None and stop.agreed(dist):
                    window.check(state.step)
                    policy.interrupted(state, stop.signal_name)
                    save_last()  # mid-epoch: a resume continues from this very step
                    dist.barrier()  # no rank exits (and gets its launcher to kill the others) before it is written
                    return state

            window.check(state.step)
            epoch = state.epoch + 1
            with ledger.spent("validation"):  # slow metrics included
                metrics, examples = validation.run(p, epoch, state.speed.spend)
            with ledger.spent("logging"):  # the search's trial.report included
                ledger.account()
                improved = policy.validated(state, metrics, state.train_seconds)
                policy.pruned(state, trial, metrics[p.task.monitor])
                opt.schedule.after_validation(metrics[p.task.monitor])
                validation.write(metrics, examples, state.step, epoch, p.task.sample_rate)
            # `last` before `best` before history.json: each file only ever records
            # epochs that the one before it already holds.
            save_last()
            if improved:
                with ledger.spent("checkpoints"):
                    checkpointer.save_best(snapshot(net.raw, None, None, None, state, p.config))
            if history is not None:
                write_json(history, state.history)
            if state.finished:
                break
    except Diverged as err:
        policy.diverged(state, err)
    ledger.account()
    return state
