"""The training loop: `train` reads top to bottom; `train_step` and `evaluate` do one thing each.

Host syncs (`.item()`, `.tolist()`) happen only at log cadence, at checkpoints and at
validation: between them the loop only queues device work, so a GPU never waits for
Python.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from trainer.checkpoint import Checkpointer, snapshot
from trainer.config import TrainerConfig
from trainer.data.loader import EpochSampler
from trainer.diagnostics import GradientDiagnostics, Probe
from trainer.distributed import Dist, no_sync
from trainer.history import RunState, write_json
from trainer.loggers import Logger, Progress
from trainer.metrics import nan_mean
from trainer.perf import Network, Precision, ShapeGuard
from trainer.schedules import Schedule
from trainer.stopping import Diverged, StopPolicy
from trainer.tasks import Task

log = logging.getLogger("trainer")


@dataclass(kw_only=True)
class Parts:
    """Everything the loop touches, built (by keyword) by `trainer.run.assemble`."""

    network: Network
    loss: nn.Module
    optimizer: Optimizer
    schedule: Schedule
    precision: Precision
    task: Task
    device: torch.device
    train_loader: DataLoader
    sampler: EpochSampler
    valid_loader: DataLoader
    steps_per_epoch: int
    config: dict  # the resolved job config, stored in checkpoints
    shape_guard: ShapeGuard
    diagnostics: GradientDiagnostics | None = None
    dist: Dist = field(default_factory=Dist)  # torchrun's ranks (a world of one otherwise)
    cuda_graphs: bool = False  # compiled with CUDA graphs (reduce-overhead, max-autotune) on a GPU
    seconds: dict[str, float] = field(default_factory=dict)  # what building took (start-up, datasets, model)

    @property
    def model(self) -> nn.Module:  # what runs (possibly compiled, possibly DistributedDataParallel)
        return self.network.trained

    @property
    def raw_model(self) -> nn.Module:  # its parameters, for checkpoints and validation
        return self.network.raw

    @property
    def ddp(self) -> nn.Module | None:  # the DistributedDataParallel wrapper, for no_sync
        return self.network.ddp


@dataclass
class StepOut:
    loss: torch.Tensor  # detached, on device
    terms: dict[str, torch.Tensor]
    grad_norm: torch.Tensor  # before clipping
    skipped: bool  # fp16: the scaler found inf/NaN gradients and skipped the update


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train_step(
    p: Parts, micro_batches: list[dict[str, torch.Tensor]], grad_clip: float | None, probe: Probe | None = None
) -> StepOut:
    """One optimizer step over `micro_batches`. A `probe` (trainer/diagnostics.py), on the
    steps where diagnostics are due, measures the terms' gradients, the true gradients
    before clipping, and the update."""
    p.model.train()
    accum = len(micro_batches)
    scaler = p.precision.scaler
    loss_sum = torch.zeros((), device=p.device)
    term_sums: dict[str, torch.Tensor] = {}
    for i, batch in enumerate(micro_batches):
        if p.cuda_graphs:  # each micro-batch a new CUDA-graph step: accumulation replays the graphs
            torch.compiler.cudagraph_mark_step_begin()
        inputs, target = p.task.pair(to_device(batch, p.device))
        with no_sync(p.ddp, last=i == accum - 1):  # DDP: one gradient all-reduce per step
            with p.precision.autocast():
                output = p.model(inputs)
                total, terms = p.loss(output, target)
            if probe is not None and i == 0:  # per-term gradients of the first micro-batch
                probe.terms(terms, getattr(p.loss, "weights", {}), scaler.get_scale() if scaler.is_enabled() else 1.0)
            # Each micro-batch contributes 1/accum: the summed gradient equals one batch of batch*accum.
            scaler.scale(total / accum).backward()
        if p.cuda_graphs and i < accum - 1:
            # the graph's backward wrote these gradients into its own buffers, which the next
            # micro-batch's replay overwrites before they are accumulated into: own copies
            for q in p.raw_model.parameters():
                if q.grad is not None:
                    q.grad = q.grad.clone()
        loss_sum += total.detach() / accum
        for name, value in terms.items():
            term_sums[name] = term_sums.get(name, 0) + value.detach() / accum
    scaler.unscale_(p.optimizer)  # clip the true gradients, not the scaled ones
    if probe is not None:
        probe.gradients()
    params = [q for g in p.optimizer.param_groups for q in g["params"]]
    grad_norm = nn.utils.clip_grad_norm_(params, grad_clip if grad_clip is not None else math.inf)
    scale = scaler.get_scale() if scaler.is_enabled() else None  # fp16 syncs in step() anyway
    scaler.step(p.optimizer)
    scaler.update()
    skipped = scale is not None and scaler.get_scale() < scale
    if probe is not None:
        probe.updated()
    p.optimizer.zero_grad(set_to_none=True)
    return StepOut(loss_sum, term_sums, grad_norm, skipped)


@torch.no_grad()
def evaluate(
    p: Parts, slow_examples: int = 0, keep: int = 0, spent: dict[str, float] | None = None
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Mean of every loss term and task metric over the validation set, plus the task's
    slow metrics (PESQ, STOI) on the first `slow_examples` examples, and the first `keep`
    examples' input, output and target on the host (for TensorBoard audio and images).
    Data-parallel: each rank runs its share of the set, the sums are added up, rank 0's
    slow metrics and examples (the set's first) go to every rank. The slow metrics' wall
    time is added to `spent["slow_metrics"]`.

    Runs the eager model (same parameters as the compiled one): eval mode under no_grad
    would otherwise be a second compilation, and a CUDA-graph capture per new shape, for a
    small share of the run's time.
    """
    model = p.raw_model
    model.eval()
    task = p.task
    if not p.dist.main:
        slow_examples = keep = 0
    sums: dict[str, torch.Tensor] = {}
    slow: dict[str, list[float]] = {}
    kept: list[dict[str, Any]] = []
    count = 0
    for batch in p.valid_loader:
        inputs, target = task.pair(to_device(batch, p.device))
        with p.precision.autocast():
            output = model(inputs)
            total, terms = p.loss(output, target)
            prediction = task.predict(model, inputs, output)
        n = len(next(iter(batch.values())))
        values = {"loss/total": total * n, **{f"loss/{k}": v * n for k, v in terms.items()}}
        values.update({k: v.sum() for k, v in task.metrics(prediction, inputs, target).items()})
        for key, value in values.items():
            sums[key] = sums.get(key, 0) + value.float()
        if count < slow_examples and task.slow:
            rows, since = slice(0, slow_examples - count), time.perf_counter()
            for key, scores in task.slow_metrics(prediction[rows], target[rows]).items():
                slow.setdefault(key, []).extend(scores)
            if spent is not None:
                spent["slow_metrics"] = spent.get("slow_metrics", 0.0) + time.perf_counter() - since
        if count < keep:
            kept.extend(task.examples(inputs, prediction, target, keep - count))
        count += n
    sums["count"] = torch.tensor(float(count), device=p.device)
    sums = p.dist.sum(sums)
    count = sums.pop("count").item()
    out = task.summarise({k: v.item() / count for k, v in sums.items()})
    for key, scores in slow.items():  # NaN: PESQ found no utterance in that example
        if math.isfinite(mean := nan_mean(scores)):
            out[key] = mean
    return p.dist.broadcast(out), kept


@dataclass
class Window:
    """Device-side sums between two log points; `flush` is the only place they sync."""

    check_grads: bool
    dist: Dist = field(default_factory=Dist)  # data-parallel: sums and the verdict are across ranks
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    grad_norms: list[torch.Tensor] = field(default_factory=list)  # per step, for the gradient alerts
    bad: torch.Tensor | bool = False
    steps: int = 0
    samples: int = 0
    skipped: int = 0
    data_time: float = 0.0
    start: float = field(default_factory=time.perf_counter)

    def add(self, out: StepOut, samples: int) -> None:
        bad = ~torch.isfinite(out.loss)
        if self.check_grads:  # under fp16 the scaler owns non-finite gradients
            bad = bad | ~torch.isfinite(out.grad_norm)
        self.bad = self.bad | bad
        values = {"loss/total": out.loss, "opt/grad_norm": out.grad_norm}
        values.update({f"loss/{k}": v for k, v in out.terms.items()})
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0) + value
        self.grad_norms.append(out.grad_norm)
        self.steps += 1
        self.samples += samples
        self.skipped += int(out.skipped)

    def check(self, step: int) -> None:
        if self.dist.any(self.bad):  # every rank raises, or none does
            raise Diverged(f"non-finite loss or gradient at or before step {step}")

    def flush(self, step: int) -> dict[str, float]:
        self.check(step)
        elapsed = time.perf_counter() - self.start
        out = {k: v.item() / self.steps for k, v in self.dist.mean(self.sums).items()}
        out["perf/samples_per_s"] = self.samples / elapsed
        out["perf/step_ms"] = 1000 * elapsed / self.steps
        out["perf/data_wait"] = self.data_time / elapsed
        if self.skipped:
            out["opt/skipped_steps"] = float(self.skipped)
        return out


def train(
    p: Parts,
    cfg: TrainerConfig,
    state: RunState,
    checkpointer: Checkpointer,
    train_log: Logger,
    val_log: Logger,
    progress: Progress,
    history_path,
    profiler=None,
    trial=None,
    stop=None,
) -> RunState:
    """Train until the epoch budget, early stopping, divergence or (in a search) the
    trial's pruner says stop; returns the final state. `stop` (trainer.signals.GracefulStop)
    ends the run after the current step with a checkpoint and status `interrupted`."""
    samples_per_step = cfg.batch_size * cfg.grad_accum
    policy = StopPolicy(p.task, cfg.epochs, cfg.early_stopping, cfg.target)
    clock = start = time.perf_counter()
    # Every process warms up again (compilation, CUDA graphs, a cold corpus), resumed or not.
    start_step = state.step
    warm_at = start_step + cfg.warmup_steps
    state.speed["loop_start_unix"] = time.time()  # start-up ends here; the first batch is next
    # Where the time goes (host wall time, summed over resumes; summary.json "seconds"). On a
    # GPU the host runs ahead: device work shows up wherever the host next waits for it.
    spent: dict[str, float] = state.speed.setdefault("seconds", {})

    def spend(key: str, since: float) -> float:
        now = time.perf_counter()
        spent[key] = spent.get(key, 0.0) + now - since
        return now

    def account_time() -> None:
        nonlocal clock
        now = time.perf_counter()
        state.train_seconds += now - clock
        clock = now

    def save_last() -> None:
        account_time()
        since = time.perf_counter()
        checkpointer.save(
            checkpointer.last, snapshot(p.raw_model, p.optimizer, p.schedule, p.precision.scaler, state, p.config)
        )
        spend("checkpoints", since)

    try:
        while state.epoch < cfg.epochs:
            # Resume mid-epoch: the sampler skips the examples already consumed.
            first = state.step - state.epoch * p.steps_per_epoch
            p.sampler.set_position(state.epoch, first * samples_per_step)
            batches = iter(p.train_loader)
            window = Window(check_grads=not p.precision.scaler.is_enabled(), dist=p.dist)
            for i in range(first, p.steps_per_epoch):
                t0 = time.perf_counter()
                micro = [next(batches) for _ in range(cfg.grad_accum)]
                t1 = spend("data", t0)
                window.data_time += t1 - t0
                if state.step == start_step:  # the first batch is ready: the first step begins
                    state.speed["first_step_unix"] = time.time()
                p.shape_guard.check(micro[0])

                probe = p.diagnostics.probe(state.step + 1) if p.diagnostics is not None else None
                out = train_step(p, micro, cfg.grad_clip, probe)
                state.step += 1
                if not out.skipped:  # a skipped fp16 step must not advance the schedule
                    p.schedule.after_step()
                window.add(out, samples_per_step)
                if probe is not None:
                    train_log.log(probe.scalars, state.step)
                    train_log.histograms(probe.hist, state.step)
                if profiler is not None:
                    profiler.step()
                t2 = spend("steps", t1)

                if state.step == warm_at or state.step % cfg.log_every == 0 or i == p.steps_per_epoch - 1:
                    values = window.flush(state.step)
                    if p.diagnostics is not None:
                        p.diagnostics.check_window(torch.stack(window.grad_norms).tolist(), cfg.grad_clip, state.step)
                    if state.step == warm_at:
                        state.speed["warmup_seconds"] = time.perf_counter() - start
                    elif state.step > warm_at:  # steady-state windows only
                        state.speed.setdefault("window_step_ms", []).append(values["perf/step_ms"])
                        state.speed.setdefault("window_data_wait", []).append(values["perf/data_wait"])
                    values["opt/lr"] = p.optimizer.param_groups[0]["lr"]
                    train_log.log(values, state.step)
                    progress.update(state.step, state.epoch + 1, {"loss": values["loss/total"]})
                    window = Window(check_grads=window.check_grads, dist=p.dist)
                    spend("logging", t2)  # includes the host sync that waits for queued device work
                if checkpointer.due(state.step) and i < p.steps_per_epoch - 1:
                    window.check(state.step)  # never save a state that has gone non-finite
                    save_last()
                if stop is not None and stop.agreed(p.dist):
                    window.check(state.step)
                    policy.interrupted(state, stop.signal_name)
                    save_last()  # mid-epoch: a resume continues from this very step
                    p.dist.barrier()  # no rank exits (and gets its launcher to kill the others) before it is written
                    return state

            window.check(state.step)
            v, epoch = cfg.validation, state.epoch + 1
            slow = v.slow_examples if v.slow_every and epoch % v.slow_every == 0 else 0
            media = v.media_examples if v.media_every and (epoch % v.media_every == 0 or state.epoch == 0) else 0
            since = time.perf_counter()
            metrics, examples = evaluate(p, slow, media, spent)
            since = spend("validation", since)  # slow metrics included
            account_time()
            improved = policy.validated(state, metrics, state.train_seconds)
            policy.pruned(state, trial, metrics[p.task.monitor])
            p.schedule.after_validation(metrics[p.task.monitor])
            val_log.log({(k if k.startswith("loss/") else f"metrics/{k}"): x for k, x in metrics.items()}, state.step)
            if examples:  # inputs and targets once per run (the first validation), outputs each time
                val_log.media(examples, state.step, p.task.sample_rate, v.spectrogram, first=state.epoch == 1)
            spend("logging", since)
            # `last` before `best` before history.json: each file only ever records
            # epochs that the one before it already holds.
            save_last()
            if improved:
                since = time.perf_counter()
                checkpointer.save(checkpointer.best, snapshot(p.raw_model, None, None, None, state, p.config))
                spend("checkpoints", since)
            if history_path is not None:  # rank 0 only
                write_json(history_path, state.history)
            if state.finished:
                break
    except Diverged as err:
        policy.diverged(state, err)
    account_time()
    return state
