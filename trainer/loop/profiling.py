"""What a run measures about itself beyond step times: peak memory and the torch.profiler trace."""

from __future__ import annotations

import torch


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: max allocated since the run started. CPU: the process's peak RSS (in a
    multirun with the basic launcher, jobs share the process, so this is a running max)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def make_profiler(cfg, trace_dir):
    """A started torch.profiler on the configured schedule, writing a TensorBoard trace."""
    from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    prof = profile(
        activities=activities,
        schedule=schedule(wait=cfg.wait, warmup=cfg.warmup, active=cfg.active, repeat=1),
        on_trace_ready=tensorboard_trace_handler(str(trace_dir)),
        record_shapes=cfg.record_shapes,
        profile_memory=cfg.profile_memory,
        with_stack=cfg.with_stack,
    )
    prof.start()
    return prof


def profiler_table(prof, row_limit: int) -> str:
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=row_limit)
