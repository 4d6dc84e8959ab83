"""`hydra/launcher=slurm`: Hydra's submitit SLURM launcher, configured for this project.

What it adds to `submitit_slurm`:
  - a clear error, before any folder is written, on a machine without `sbatch`;
  - jobs that run the code they were submitted with: at submission, the tracked tree at
    HEAD plus the uncommitted changes (and new files git does not ignore) are copied to
    `<sweep dir>/.code/<hash>`, and every job, and every requeue of it, imports the
    trainer and reads `conf/` from there. Editing the working tree while jobs wait in the
    queue changes nothing they run. `summary.json`'s provenance names the snapshot
    (`git.snapshot`). `hydra.launcher.snapshot=false` runs the live tree instead.
  - the project's defaults for requeueing: a job signalled ahead of its time limit or
    preempted writes `last`, and submitit requeues it (up to `max_num_timeout` times);
    the requeued job resumes.

docs/guide/cluster.md; the code snapshot itself is in _snapshot.py.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules before registering
# them, and dataclasses then cannot resolve string annotations.
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException

try:  # the submitit launcher plugin comes with `pip install -e '.[cluster]'` (and the tests)
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
except ImportError:  # without it, hydra/launcher=slurm is simply not offered
    SlurmQueueConf = SlurmLauncher = None

log = logging.getLogger("hydra_plugins.trainer_slurm_launcher")

if SlurmQueueConf is not None:

    @dataclass
    class TrainerSlurmConf(SlurmQueueConf):
        _target_: str = "hydra_plugins.trainer_slurm_launcher.TrainerSlurmLauncher"
        cpus_per_task: Optional[int] = 2
        timeout_min: int = 60
        # a signal this long before the time limit: the job writes `last` and is requeued
        signal_delay_s: int = 90
        max_num_timeout: int = 20
        stderr_to_stdout: bool = True
        snapshot: bool = True  # run the code as it was at submission (see the module docstring)

    ConfigStore.instance().store(group="hydra/launcher", name="slurm", node=TrainerSlurmConf, provider="audio-sweeps")

    class TrainerSlurmLauncher(SlurmLauncher):
        def __init__(self, snapshot: bool = True, **params: Any) -> None:
            if shutil.which("sbatch") is None:
                raise HydraException(
                    "hydra/launcher=slurm: no `sbatch` on this machine's PATH, so nothing can be submitted to SLURM. "
                    "Run this on a cluster's login node, or start a one-node cluster here "
                    "(sweeps/slurm/local_cluster.sh start), or run the same jobs locally with "
                    "hydra/launcher=submitit_local."
                )
            self.snapshot = bool(snapshot)
            super().__init__(**params)

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
            from hydra_plugins.trainer_slurm_launcher._snapshot import snapshot_code, use_snapshot
            from hydra_plugins.trainer_slurm_launcher._watch import watch_with_squeue_without_sacct

            watch_with_squeue_without_sacct()
            if not self.snapshot:
                return self._submit_and_collect(job_overrides, initial_job_idx)
            assert self.config is not None and self.hydra_context is not None
            code = snapshot_code(Path(str(self.config.hydra.sweep.dir)) / ".code")
            log.info("jobs run the code snapshot %s", code)
            live_context, live_setup = self.hydra_context, self.params.get("setup")
            self.hydra_context, self.params["setup"] = use_snapshot(self.hydra_context, code, live_setup)
            try:
                return self._submit_and_collect(job_overrides, initial_job_idx)
            finally:
                self.hydra_context, self.params["setup"] = live_context, live_setup

        def _submit_and_collect(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> List[Any]:
            """The plugin's launch, except that a job which ends without a result (cancelled,
            killed for memory, timed out for good) is a failed JobReturn naming SLURM's state
            instead of an exception that loses every other job's result."""
            import submitit
            from hydra.core.utils import JobReturn, JobStatus

            collected: List[Any] = []
            real_results = submitit.core.core.Job.results

            def results(job):  # what the plugin's launch calls on each job
                try:
                    return real_results(job)
                except (submitit.core.utils.UncompletedJobError, submitit.core.utils.FailedJobError) as err:
                    state = job.state
                    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                    error = RuntimeError(f"SLURM job {job.job_id} ended {state} without a result ({first})")
                    return [JobReturn(overrides=list(job_overrides[len(collected)]), status=JobStatus.FAILED,
                                      _return_value=error)]  # fmt: skip
                finally:
                    collected.append(job)

            submitit.core.core.Job.results = results  # type: ignore[method-assign]
            try:
                return list(super().launch(job_overrides, initial_job_idx))
            finally:
                submitit.core.core.Job.results = real_results  # type: ignore[method-assign]
