"""A run's outcome, `summary.json`, built and written in one place
(`trainer.run`) and read back through `read` by everything that looks at finished runs
(the multirun callback, the sweep report, the Optuna sweeper, the benchmarks)."""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path
from typing import Any, TypedDict

from trainer.files import read_json, write_json
from trainer.run_state import TIME_PARTS, Speed
from trainer.status import Status

FILE = "summary.json"


class Summary(TypedDict, total=False):
    """The keys of summary.json (what `build` writes and `read` returns)."""

    status: Status
    reason: str
    monitor: str | None  # the task's monitored metric
    mode: str | None  # "max" or "min"
    objective: float  # what a sweeper gets: the best monitored value, the worst value on failure
    best: float | None
    best_epoch: int | None
    final: float | None
    final_metrics: dict[str, float]  # the last validation
    target: float | None
    epochs: int
    steps: int
    train_seconds: float
    seconds: dict[str, float]  # TIME_PARTS: where the wall time went
    job_seconds: float
    warmup_steps: int  # steps kept out of the speed figures (1: the run had no more than trainer.warmup_steps)
    warmup_seconds: float | None
    time_to_target: float | None
    steps_to_target: int | None
    peak_memory_mb: float | None
    step_ms: float  # median steady-state step (absent without a steady window)
    samples_per_s: float
    data_wait: float
    compile_seconds: float
    batch_size: int
    grad_accum: int
    loop_start_unix: float | None
    first_step_unix: float | None
    precision_paths: dict[str, str]
    compile_graphs: int  # with torch.compile: graphs captured in this process
    cudagraph_skips: int  # with torch.compile: CUDA-graph captures inductor skipped
    device: str | None
    versions: dict[str, Any]
    experiment: dict[str, Any]  # identity.Experiment: hash, group, alias, seed
    provenance: dict[str, Any]  # provenance.collect: git, command, host, cpu, gpus, versions


def read(run_dir: Path) -> Summary | None:
    """The run's summary, its `status` a `Status`; None if the run never wrote one (or it
    cannot be read: writes are atomic, so that means it never finished writing)."""
    summary = read_json(Path(run_dir) / FILE)
    if not isinstance(summary, dict) or summary.get("status") not in {s.value for s in Status}:
        return None
    summary["status"] = Status(summary["status"])
    return summary


def write(run_dir: Path, summary: Summary) -> None:
    write_json(Path(run_dir) / FILE, summary)


def speed(speed: Speed, samples_per_step: int, warmup_steps: int) -> dict[str, Any]:
    """Median steady-state step time and what follows from it."""
    if speed.warmup_steps is not None:
        warmup_steps = speed.warmup_steps  # this process's, shortened for a short run
    out: dict[str, Any] = {
        "warmup_steps": warmup_steps,
        "warmup_seconds": speed.warmup_seconds,
        "time_to_target": speed.time_to_target,
        "steps_to_target": speed.steps_to_target,
        "peak_memory_mb": speed.peak_memory_mb,
    }
    if speed.window_step_ms:
        step_ms = statistics.median(speed.window_step_ms)
        out.update(
            step_ms=round(step_ms, 3),
            samples_per_s=round(samples_per_step / (step_ms / 1000), 2),
            data_wait=round(statistics.mean(speed.window_data_wait), 4),
        )
        if speed.warmup_seconds is not None:
            # what the warm-up cost beyond the same number of steady steps: compilation etc.
            out["compile_seconds"] = round(max(0.0, speed.warmup_seconds - warmup_steps * step_ms / 1000), 3)
    return out


def compiled() -> dict[str, int]:
    """What torch.compile did in this process: the graphs it captured (more than one per
    model and mode means graph breaks or recompiles) and the CUDA-graph captures it skipped."""
    from torch._dynamo.utils import counters

    return {
        "compile_graphs": int(counters["stats"]["unique_graphs"]),
        "cudagraph_skips": int(counters["inductor"]["cudagraph_skips"]),
    }


def build(cfg, state, parts, value: float, started: float, experiment, provenance: dict[str, Any]) -> Summary:
    """summary.json of a run in `state` (`parts` is None when it failed before building)."""
    import torch

    last = state.history[-1] if state.history else {}
    task = parts.task if parts else None
    device = parts.place.device if parts else None
    t = cfg.trainer
    return {  # type: ignore[return-value]  (the speed keys join from a dict)
        "status": Status(state.status),
        "reason": state.reason,
        "monitor": task.monitor if task else None,
        "mode": task.mode if task else None,
        "objective": value,
        "best": state.best,
        "best_epoch": state.best_epoch,
        "final": last.get(task.monitor) if task else None,
        "final_metrics": last,
        "target": t.target,
        "epochs": state.epoch,
        "steps": state.step,
        "train_seconds": round(state.train_seconds, 3),
        # where the wall time went: startup (interpreter, imports, Hydra), build (model, loss,
        # optimizer), datasets (corpus rendering, folder scans), steps, data (waiting for
        # batches), validation (incl. slow_metrics: PESQ/STOI), logging, checkpoints
        "seconds": {k: round(state.speed.seconds.get(k, 0.0), 3) for k in TIME_PARTS},
        "job_seconds": round(time.perf_counter() - started, 3),
        **speed(state.speed, t.batch_size * t.grad_accum, t.warmup_steps),
        "batch_size": t.batch_size,
        "grad_accum": t.grad_accum,
        "loop_start_unix": state.speed.loop_start_unix,
        "first_step_unix": state.speed.first_step_unix,
        "precision_paths": parts.optim.precision.paths if parts else {},
        **(compiled() if cfg.compile.enabled else {}),
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu")
        if device
        else None,
        "versions": provenance.get("versions", {}),
        "experiment": experiment.to_dict(),
        "provenance": provenance,
    }
