"""One run, start to finish: build the parts, resume if there is a checkpoint, train,
write the summary, return the objective."""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from trainer import distributed, identity, placement, summary
from trainer.build import (
    build_augment,
    build_data,
    build_loss,
    build_model,
    build_optimizer,
    build_schedule,
    build_task,
)
from trainer.checkpoint import load, restore
from trainer.config import GROUPS, ConfigError, validate
from trainer.data.loader import spread_subset, train_loader, valid_loader
from trainer.data.staged import training_set, unchanged
from trainer.distributed import Dist
from trainer.identity import Experiment
from trainer.loop import profiling
from trainer.loop.checkpointer import Checkpointer
from trainer.loop.diagnostics import GradientDiagnostics
from trainer.loop.engine import Logs, train
from trainer.loop.loggers import NullLogger, Progress, TensorBoardLogger
from trainer.loop.parts import Feed, Optimization, Parts, Placement
from trainer.loop.signals import PREEMPT, GracefulStop, Interrupted
from trainer.loop.timing import STARTUP
from trainer.placement import ShapeGuard, uses_cuda_graphs
from trainer.provenance import collect as collect_provenance
from trainer.run_state import RunState
from trainer.search.trial import TrialLink
from trainer.status import Status
from trainer.tasks import AudioTask

log = logging.getLogger("trainer")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def objective(state: RunState, worst: float) -> float:
    """What a sweeper gets: the best monitored value, or the worst value, never NaN."""
    if state.status == Status.DIVERGED or state.best is None:
        return worst
    return float(state.best)


def hparams(cfg: DictConfig, choices: dict[str, str]) -> dict[str, Any]:
    """Chosen options plus the numbers people sweep, for TensorBoard's HParams view."""
    hp: dict[str, Any] = {g: str(choices[g]) for g in GROUPS if g in choices}
    for key in (
        "optim.lr",
        "optim.weight_decay",
        "trainer.batch_size",
        "trainer.grad_accum",
        "trainer.epochs",
        "trainer.seed",
    ):
        value = OmegaConf.select(cfg, key)
        if isinstance(value, (int, float)):
            hp[key] = value
    return hp


def assemble(cfg: DictConfig) -> Parts:
    """Seed, build every component from its group, apply the performance setup."""
    t = cfg.trainer
    started = time.perf_counter()
    dist = Dist.from_env()
    distributed.init(dist)
    seed_everything(t.seed)  # every rank builds the same model (DDP also broadcasts rank 0's)
    device = dist.device(placement.resolve_device(t.device))
    task = build_task(cfg.task)
    data = build_data(cfg.data)
    network, loss, precision = placement.setup(
        build_model(cfg.model), build_loss(cfg.loss), cfg.precision, cfg.compile, device, t.deterministic, dist
    )
    optimizer = build_optimizer(cfg.optim, network.raw)
    per_epoch_batches = t.steps_per_epoch * t.grad_accum if t.steps_per_epoch is not None else None
    datasets = time.perf_counter()
    augment = build_augment(cfg.augment)
    if augment.active and not isinstance(task, AudioTask):
        raise ConfigError(
            f"augment: audio-pair augmentation (noisy/clean) does not apply to {type(task).__name__}; use augment=none"
        )
    # the embedded corpus is rendered (or read) here
    train_set, finish = training_set(data, augment, t.data_on_device)
    valid_set = spread_subset(data.valid(), t.validation.max_examples)
    seconds = {"datasets": time.perf_counter() - datasets}
    if t.data_on_device and finish is unchanged:
        log.warning("trainer.data_on_device: %s has no mixing or augmentation to move", type(data).__name__)
    loader, sampler = train_loader(
        train_set,
        data.infinite,
        t.batch_size,
        per_epoch_batches,
        t.seed,
        t.num_workers,
        device.type == "cuda",
        dist.rank,
        dist.world,
    )
    steps_per_epoch = sampler.per_epoch // (t.batch_size * t.grad_accum)
    schedule = build_schedule(cfg.sched, optimizer, steps_per_epoch * t.epochs, task.mode)
    graphs = uses_cuda_graphs(cfg.compile)
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return Parts(
        network=network,
        optim=Optimization(loss=loss, optimizer=optimizer, schedule=schedule, precision=precision),
        feed=Feed(
            train_loader=loader,
            sampler=sampler,
            valid_loader=valid_loader(valid_set, t.val_batch_size, dist.rank, dist.world),
            steps_per_epoch=steps_per_epoch,
            finish=finish,
            shape_guard=ShapeGuard(graphs),
        ),
        place=Placement(device=device, dist=dist, cuda_graphs=graphs and device.type == "cuda"),
        task=task,
        config=OmegaConf.to_container(job, resolve=True, enum_to_str=True),
        diagnostics=GradientDiagnostics(t.diagnostics, network.raw),
        seconds={**seconds, "build": time.perf_counter() - started - seconds["datasets"]},
    )


def run(
    cfg: DictConfig,
    run_dir: Path,
    choices: dict[str, str] | None = None,
    *,
    experiment: Experiment | None = None,
    provenance: dict[str, Any] | None = None,
) -> float | tuple[float, ...]:
    """Train (or resume) the run in `run_dir`. A Hydra job comes through
    `experiments.job`, which passes its identity and provenance; called directly (tests,
    benchmarks), the folder's name is the alias."""
    validate(cfg)  # again here: a multirun job's own overrides are only known now
    run_dir = Path(run_dir)
    experiment = experiment or identity.of(cfg, run_dir.name)
    provenance = provenance or collect_provenance(run_dir)
    started = time.perf_counter()
    state, parts = RunState(), None
    main = Dist.from_env().main  # data-parallel: rank 0 alone writes the summary and tells Optuna
    trial = TrialLink(cfg.optuna) if cfg.optuna.trial_id is not None and main else None
    startup = STARTUP.charge()

    def write_summary(state: RunState, value: float) -> dict:
        """The one place summary.json is written (rank 0), whatever the run's end."""
        outcome = summary.build(cfg, state, parts, value, started, experiment, provenance)
        if main:
            summary.write(run_dir, outcome)
        return outcome

    try:
        parts = assemble(cfg)
        if startup is not None:
            parts.seconds["startup"] = startup
        state = train_or_resume(cfg, run_dir, parts, choices or {}, trial)
    except Interrupted as stopped:
        # `last` is written; the summary says so; the exit status tells a scheduler to requeue
        write_summary(stopped.state, math.nan)
        log.warning(
            "interrupted (%s) at step %d; `last` saved: rerun the same command to resume", stopped, stopped.state.step
        )
        if stopped.requeue is not None:  # submitit: resubmit this job (same run dir), which resumes
            log.warning("handing over to the launcher to requeue this job")
            stopped.requeue(PREEMPT, None)
        raise SystemExit(stopped.exit_code) from None
    except Exception as err:
        # A crashed job still says so on disk: the sweep report lists it as failed.
        state.status, state.reason = Status.FAILED, f"{type(err).__name__}: {err}"
        outcome = write_summary(state, math.nan)
        if trial is not None:
            trial.record_outcome(outcome, str(run_dir))
        raise
    value = objective(state, parts.task.worst())
    outcome = write_summary(state, value)
    log.info(
        "%s: %s = %s (best epoch %s) in %.1f s",
        state.status,
        parts.task.monitor,
        value,
        state.best_epoch,
        state.train_seconds,
    )
    if trial is not None:
        trial.record_outcome(outcome, str(run_dir))
    if cfg.optuna.objectives:  # several objectives (a multi-objective search)
        return tuple(
            trial.value(outcome, key, i) if trial else float(outcome[key])
            for i, key in enumerate(cfg.optuna.objectives)
        )
    return value


def train_or_resume(cfg: DictConfig, run_dir: Path, parts: Parts, choices: dict[str, str], trial=None) -> RunState:
    t, task, raw, opt = cfg.trainer, parts.task, parts.network.raw, parts.optim
    main = parts.place.dist.main  # data-parallel: every rank reads the checkpoint, rank 0 writes
    checkpointer = Checkpointer(run_dir / "checkpoints", t.checkpoint_every, writes=main)
    state = RunState()
    source = checkpointer.last if checkpointer.last.is_file() else (Path(cfg.resume) if cfg.resume else None)
    if source is not None:
        state = RunState.from_dict(
            restore(load(source), source, raw, opt.optimizer, opt.schedule, opt.precision.scaler, parts.config)
        )
        log.info("resumed from %s at epoch %d, step %d (%s)", source, state.epoch, state.step, state.status)
    if state.status == Status.COMPLETED and state.epoch < t.epochs:
        state.status = Status.RUNNING  # a finished run resumed with a larger epoch budget
    if state.finished:
        log.info("run already %s; nothing to do (best %s = %s)", state.status, task.monitor, state.best)
        return state

    state.status = Status.RUNNING
    for part, seconds in parts.seconds.items():  # summed over the run's processes (resumes)
        state.speed.spend(part, seconds)
    device = parts.place.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    parts.place.dist.barrier()  # every rank has decided where it starts before rank 0 writes anything
    purge = state.step + 1 if state.step else None
    train_log = TensorBoardLogger(run_dir / "tb" / "train", purge_step=purge) if main else NullLogger()
    val_log = TensorBoardLogger(run_dir / "tb" / "val", purge_step=purge) if main else NullLogger()
    progress = Progress(t.progress.value if main else "none", parts.feed.steps_per_epoch * t.epochs, state.step)
    profiler = profiling.make_profiler(cfg.profiler, run_dir / "tb" / "profile") if cfg.profile and main else None
    log.info(
        "training %s on %s: %d epochs x %d steps, run dir %s",
        type(raw).__name__,
        device,
        t.epochs,
        parts.feed.steps_per_epoch,
        run_dir,
    )
    try:
        # anomaly mode: every backward op checks its outputs; the error names the one that made a NaN
        anomaly = (
            torch.autograd.detect_anomaly(check_nan=True) if cfg.debug.detect_anomaly else contextlib.nullcontext()
        )
        with GracefulStop() as stop, anomaly:
            state = train(
                parts,
                t,
                state,
                checkpointer=checkpointer,
                logs=Logs(train_log, val_log, progress),
                history=run_dir / "history.json" if main else None,
                profiler=profiler,
                trial=trial,
                stop=stop,
            )
    finally:
        progress.close()
        train_log.close()
        if profiler is not None:
            profiler.stop()
            log.info(
                "profiler trace in %s; top operators:\n%s",
                run_dir / "tb" / "profile",
                profiling.profiler_table(profiler, cfg.profiler.row_limit),
            )
    state.speed.peak_memory_mb = profiling.peak_memory_mb(parts.place.device)
    if stop.requested:
        val_log.close()
        raise Interrupted(state, stop.signum, stop.requeue)
    val_log.hparams(hparams(cfg, choices), {f"hparam/{task.monitor}": objective(state, task.worst())})
    val_log.close()
    return state
