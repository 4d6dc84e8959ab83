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
  - each job's id recorded in its run folder at submission (`slurm.json`), so that a
    relaunch, `python -m trainer.runs list` and `cancel` know jobs still in the queue;
  - `hydra.launcher.detach=true`: submit the jobs, print their ids, exit. A relaunch of
    the same command submits only what is neither queued, running nor done.

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
        detach: bool = False  # submit and exit, without waiting for the jobs (see the module docstring)

    ConfigStore.instance().store(group="hydra/launcher", name="slurm", node=TrainerSlurmConf, provider="audio-sweeps")

    class TrainerSlurmLauncher(SlurmLauncher):
        def __init__(self, snapshot: bool = True, detach: bool = False, **params: Any) -> None:
            if shutil.which("sbatch") is None:
                raise HydraException(
                    "hydra/launcher=slurm: no `sbatch` on this machine's PATH, so nothing can be submitted to SLURM. "
                    "Run this on a cluster's login node, or start a one-node cluster here "
                    "(sweeps/slurm/local_cluster.sh start), or run the same jobs locally with "
                    "hydra/launcher=submitit_local."
                )
            self.snapshot, self.detach = bool(snapshot), bool(detach)
            super().__init__(**params)

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
            from hydra_plugins.trainer_slurm_launcher._snapshot import snapshot_code, use_snapshot
            from hydra_plugins.trainer_slurm_launcher._watch import watch_with_squeue_without_sacct

            watch_with_squeue_without_sacct()
            assert self.config is not None
            sweeper = str(self.config.hydra.sweeper.get("_target_", ""))
            if self.detach and not sweeper.endswith(("ExperimentSweeper", "BasicSweeper")):
                raise HydraException(
                    f"hydra.launcher.detach=true: {sweeper.rsplit('.', 1)[-1]} needs each job's result to go on, so "
                    "it cannot exit once the jobs are submitted; run a search detached as SLURM array tasks that "
                    "share one study instead (sweeps/slurm/search_workers.sbatch, docs/guide/cluster.md)"
                )
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
            """The plugin's launch, except that
            - each job's id goes to its run folder (`slurm.json`) as soon as it is submitted;
            - a job which ends without a result (cancelled, killed for memory, timed out for
              good) is a failed JobReturn naming SLURM's state instead of an exception that
              loses every other job's result;
            - detached, it returns at once: one JobReturn per job, its status UNKNOWN and
              its value the job id."""
            import submitit
            from hydra.core.utils import JobReturn, JobStatus

            from trainer.experiments import scheduler

            collected: List[Any] = []
            real_results, real_map_array = submitit.core.core.Job.results, submitit.AutoExecutor.map_array
            folders = self._folders(job_overrides)

            def map_array(executor, fn, *iterables):  # what the plugin's launch submits with
                jobs = real_map_array(executor, fn, *iterables)
                for job, (folder, experiment) in zip(jobs, folders):
                    scheduler.record(folder, job.job_id, experiment)
                return jobs

            def results(job):  # what the plugin's launch calls on each job
                overrides = list(job_overrides[len(collected)])
                try:
                    if self.detach:
                        return [JobReturn(overrides=overrides, status=JobStatus.UNKNOWN, _return_value=job.job_id)]
                    return real_results(job)
                except (submitit.core.utils.UncompletedJobError, submitit.core.utils.FailedJobError) as err:
                    state = job.state
                    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                    error = RuntimeError(f"SLURM job {job.job_id} ended {state} without a result ({first})")
                    return [JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=error)]
                finally:
                    collected.append(job)

            submitit.core.core.Job.results = results  # type: ignore[method-assign]
            submitit.AutoExecutor.map_array = map_array  # type: ignore[method-assign]
            try:
                returns = list(super().launch(job_overrides, initial_job_idx))
            finally:
                submitit.core.core.Job.results = real_results  # type: ignore[method-assign]
                del submitit.AutoExecutor.map_array  # the inherited one again
                assert submitit.AutoExecutor.map_array is real_map_array
            if self.detach:
                ids = " ".join(str(r._return_value) for r in returns)
                print(
                    f"submitted {len(returns)} job(s) to SLURM, not waiting for them (hydra.launcher.detach=true): "
                    f"{ids}\n  follow them: python -m trainer.runs list --root {self.config.hydra.sweep.dir}  (the "
                    "same command again submits only what is neither queued, running nor done)",
                    flush=True,
                )
            return returns

        def _folders(self, job_overrides: Sequence[Sequence[str]]) -> List[Any]:
            """(run folder, experiment) of each job, as the job will compose them."""
            from trainer import identity
            from trainer.experiments import naming
            from trainer.experiments.plan import composed_job

            out = []
            for overrides in job_overrides:
                with composed_job(self.hydra_context, self.config, overrides) as cfg:
                    folder = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
                    out.append((folder, identity.of(cfg, naming.alias(cfg, cfg.hydra)).to_dict()))
            return out
