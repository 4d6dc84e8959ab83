"""Data-parallel training under torchrun: one process per device, DistributedDataParallel.

`torchrun --nproc_per_node=N -m trainer ...` (or `--nnodes=M` with a rendezvous endpoint)
starts N copies of the same command with RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT in their environment. `Dist.from_env()` reads them; without them the run is a
world of one and nothing here does anything, so the same config runs single-process
unchanged.

What changes under torchrun, and why the result equals a single process with the same
global batch:
- `trainer.batch_size` stays the *global* batch: each rank loads batch/world examples,
  the rank-th slice of the batch a single process would load (EpochSampler), and DDP
  averages the ranks' gradients, which is the gradient of the mean loss over the whole batch.
- Gradient accumulation syncs once per optimizer step (`no_sync` on the other micro-batches).
- Train and validation metrics are summed across ranks; each rank validates its own
  contiguous share of the validation set (rank 0's share starts where a single process
  starts, so PESQ/STOI and the media examples are the same examples).
- Only rank 0 writes TensorBoard, checkpoints, history and the summary; Hydra makes one run
  directory (rank 0's), the other ranks join it (see `join_run_dir`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as tdist

log = logging.getLogger("trainer")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1
    enabled: bool = False  # launched by torchrun (even with one process): DDP is used

    @classmethod
    def from_env(cls) -> Dist:
        env = os.environ
        if "RANK" not in env or "WORLD_SIZE" not in env:
            return cls()
        return cls(int(env["RANK"]), int(env.get("LOCAL_RANK", env["RANK"])), int(env["WORLD_SIZE"]), True)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """Each rank on its own GPU: cuda -> cuda:LOCAL_RANK. CPU stays CPU (gloo)."""
        if self.enabled and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    # -- collectives; in a world of one they return their input ---------------------------

    def sum(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Element-wise sum across ranks of same-keyed scalar tensors, in one all_reduce."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        packed = torch.stack([torch.as_tensor(values[k]).float() for k in keys])
        tdist.all_reduce(packed)
        return dict(zip(keys, packed.unbind()))

    def mean(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v / self.world for k, v in self.sum(values).items()} if self.enabled else values

    def any(self, flag: bool | torch.Tensor) -> bool:
        """True on every rank if it is true on any. A CPU flag goes through gloo, so asking
        every step costs no GPU synchronisation."""
        if not self.enabled:
            return bool(flag)
        t = torch.as_tensor(flag, dtype=torch.int32).reshape(1).cpu()
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        box = [obj if self.main else None]
        tdist.broadcast_object_list(box, src=0, device=torch.device("cpu"))
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()


def init(dist: Dist) -> None:
    """Join the process group (idempotent). CPU tensors go through gloo, CUDA ones through
    NCCL, so CPU-only flags never wait for the GPU."""
    if not dist.enabled or tdist.is_initialized():
        return
    backend = os.environ.get("TRAINER_DIST_BACKEND") or ("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(dist.local_rank % torch.cuda.device_count())
    tdist.init_process_group(backend=backend)


def shutdown() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()


def wrap(model: torch.nn.Module, dist: Dist, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around the model (before torch.compile, which then splits its
    graphs at DDP's gradient buckets so communication overlaps the backward pass)."""
    if not dist.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def no_sync(ddp: torch.nn.Module | None, last: bool):
    """Accumulating micro-batch: skip the gradient all-reduce; the last one syncs them all."""
    if ddp is None or last:
        return contextlib.nullcontext()
    return ddp.no_sync()


# -- one Hydra run directory for all ranks ---------------------------------------------------


def join_run_dir(argv: list[str]) -> list[str]:
    """Called before Hydra parses the command line. Rank 0 runs Hydra as usual and, once the
    run directory exists, sends it (`share_run_dir`); every other rank waits for it and runs
    the same command in that directory, without writing Hydra's own files or log there."""
    dist = Dist.from_env()
    if not dist.enabled:
        return argv
    if "-m" in argv or "--multirun" in argv:
        sys.exit(
            "torchrun runs one job: drop -m/--multirun. To sweep data-parallel jobs, launch one "
            "torchrun per job (docs/guide/cluster.md)."
        )
    if {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i"} & set(argv):
        sys.exit("torchrun is for training: run --cfg/--help/--info as plain `python -m trainer ...`")
    init(dist)
    if dist.main:
        return argv
    run_dir = dist.broadcast(None)
    logging.basicConfig(level=logging.WARNING, format=f"[rank {dist.rank}] %(levelname)s %(name)s: %(message)s")
    return [
        *argv,
        f"hydra.run.dir={run_dir}",
        "hydra.output_subdir=null",
        "hydra/job_logging=none",
        "hydra/hydra_logging=none",
    ]


def share_run_dir(run_dir: str) -> None:
    """Rank 0's half of `join_run_dir`."""
    dist = Dist.from_env()
    if dist.enabled and dist.main:
        dist.broadcast(run_dir)
