"""`hydra/launcher=slots`: every job a local process of its own on a pool of slots; a
slot freed by a job that ends (completed, failed, pruned, killed) goes to the next job at
once. Each slot's job server (_job.py) imports torch and the trainer once and forks the
slot's jobs, so a job does not pay Python's imports again.

Slots: one per visible GPU by default (`jobs_per_gpu: k` puts k jobs on each), or, on a
machine without one, CPU slots that share the cores between them (`cpu_slots`, `threads`);
`devices: [cuda:0, cuda:2]` names them. Each job sees only its device
(`CUDA_VISIBLE_DEVICES`; empty on a CPU slot) and its thread budget (`OMP_NUM_THREADS`),
writes its output to `<sweep dir>/.slots/<job>.log`, and its `summary.json` records the
slot (`provenance.slot`). SIGTERM or Ctrl-C on the sweep is passed on to every job, which
writes `last` and stops `interrupted` (the same command resumes them); a job still
running `grace_s` later is killed. A job is also sent SIGTERM if the sweep itself dies.

The Optuna sweeper uses `submit` / `wait_any` to keep every slot busy (a trial starts as
soon as another ends) instead of launching trials in batches. docs/guide/sweeps.md.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules before registering
# them, and dataclasses then cannot resolve string annotations. The pool itself is in
# _pool.py, which Hydra's plugin scan skips (a name starting with "_").
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.plugins.launcher import Launcher


@dataclass
class SlotsLauncherConf:
    _target_: str = "hydra_plugins.trainer_slots_launcher.SlotsLauncher"
    devices: Optional[List[str]] = None  # default: every visible GPU, else the CPU
    jobs_per_gpu: int = 1
    cpu_slots: Optional[int] = None  # without a GPU: jobs at once (default: cores / threads)
    threads: Optional[int] = None  # per job (default: the cores shared out between the slots)
    grace_s: float = 120.0  # after SIGTERM, how long a job may take to write `last`
    # imported once per slot by its job server, which forks each job from there: a job
    # starts training at once instead of after seconds of imports (`module:function`:
    # also called once, to fill a cache the jobs then share)
    preload: List[str] = field(
        default_factory=lambda: [
            # what every job imports (torch.optim imports torch._dynamo: 2 s)
            "torch", "torch._dynamo", "trainer.experiments.job", "trainer.run",
            # imported lazily by a job (TensorBoard, figures, PESQ/STOI): seconds per job
            "torch.utils.tensorboard", "matplotlib.pyplot", "scipy.signal", "pesq", "pystoi",
            "trainer.provenance:versions",  # the package versions every summary records: 2 s to read
        ]
    )  # fmt: skip


ConfigStore.instance().store(group="hydra/launcher", name="slots", node=SlotsLauncherConf, provider="audio-sweeps")


class SlotsLauncher(Launcher):
    def __init__(self, devices=None, jobs_per_gpu=1, cpu_slots=None, threads=None, grace_s=120.0, preload=()):
        self.options = dict(devices=devices, jobs_per_gpu=jobs_per_gpu, cpu_slots=cpu_slots, threads=threads)
        self.grace_s, self.preload = float(grace_s), list(preload or [])
        self.pool: Any = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra_plugins.trainer_slots_launcher._pool import Pool, plan_slots

        self.pool = Pool(plan_slots(**self.options), hydra_context, task_function, config, self.grace_s, self.preload)

    @property
    def slots(self) -> list:
        return self.pool.slots

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
        """Every job, as slots free up; the JobReturns in job order."""
        return self.pool.run_all(job_overrides, initial_job_idx)

    # The asynchronous interface (the Optuna sweeper's): start a job on a free slot, and
    # wait for any job to end.
    def free_slots(self) -> int:
        return self.pool.free_slots()

    def submit(self, overrides: Sequence[str], idx: int) -> None:
        self.pool.submit(overrides, idx)

    def wait_any(self) -> list:
        """[(job index, JobReturn)] of the jobs that ended (at least one)."""
        return self.pool.wait_any()

    def stop_all(self) -> None:
        self.pool.stop_all()

    def close(self) -> None:
        """No more jobs: end the slots' job servers."""
        self.pool.close()
