"""`hydra/sweeper=experiments` (the default): Hydra's basic sweeper, made to treat a sweep
as a set of experiments.

Before launching a batch it composes each job (which also validates it), works out the
job's experiment and what exists of it (trainer/experiments/plan.py `plan`), and launches only
the new, unfinished and retried ones: a relaunched sweep trains what is missing,
whatever the launcher (basic, joblib, submitit), because the jobs it skips never reach
it. Jobs that are one experiment spelled twice run once. The plan is printed, and
written to `<sweep dir>/sweep.json` before anything runs, so the sweep's report and the
end-of-sweep summary list reused runs beside new ones.

Beyond the full product (_grid.py): `hydra.sweeper.zip` steps lists together and
`hydra.sweeper.exclude` leaves combinations out. `dry_run=true` prints the plan (and the
slot each launched job would get under `hydra/launcher=slots`) and launches nothing. A
failed job does not stop the others; the sweep ends with an error that lists every
failed job.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules before registering
# them, and dataclasses then cannot resolve string annotations.
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.errors import HydraException
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


@dataclass
class ExperimentSweeperConf:
    _target_: str = "hydra_plugins.trainer_experiment_sweeper.ExperimentSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None
    zip: Optional[List[Any]] = None  # lists of keys whose values step together
    exclude: Optional[List[Any]] = None  # rules: {key: value, ...}; a job matching one is left out


ConfigStore.instance().store(
    group="hydra/sweeper", name="experiments", node=ExperimentSweeperConf, provider="audio-sweeps"
)


class ExperimentSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int], params: Optional[Dict[str, str]] = None, zip=None, exclude=None):
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.zip = OmegaConf.to_container(zip) if OmegaConf.is_config(zip) else zip
        self.exclude = OmegaConf.to_container(exclude) if OmegaConf.is_config(exclude) else exclude

    def _plan(self, overrides: List[str], index):
        from trainer.experiments.plan import composed_job, plan_for

        with composed_job(self.hydra_context, self.config, overrides) as cfg:
            return plan_for(cfg, str(cfg.hydra.sweep.dir), index)

    def sweep(self, arguments: List[str]) -> Any:
        from hydra_plugins.trainer_experiment_sweeper._grid import batches, expand

        from trainer.experiments.index import RunsIndex
        from trainer.experiments.manifest import report_plan, write_manifest
        from trainer.experiments.scheduler import settle_all

        params_conf = self._parse_config() + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        jobs = expand(parser.parse_overrides(params_conf), self.zip, self.exclude)
        self.overrides = batches(jobs, self.max_batch_size)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        dry_run = bool(self.config.get("dry_run", False))
        plans, returns, seen, job_idx, failed = [], [], {}, 0, []
        outputs = Path(str(self.config.outputs))
        while not self.is_done():
            batch = []
            # one index refresh per batch: nothing this sweeper launched runs while it plans
            index = RunsIndex(outputs).refresh() if outputs.is_dir() else None
            for overrides in self.get_job_batch():
                plan = self._plan(overrides, index)
                exp = plan.experiment
                if exp.hash in seen:  # `optim=adamw` and the default, say: one experiment
                    log.info("%s is the same experiment as %s: it runs once", exp.alias, seen[exp.hash])
                    continue
                seen[exp.hash] = exp.alias
                batch.append((plan, overrides))
            if index is not None:
                index.close()
            plans += [plan for plan, _ in batch]
            if dry_run:
                print_dry_run(sweep_dir, [plan for plan, _ in batch], self.launcher, job_idx)
                job_idx += sum(plan.launched for plan, _ in batch)
                continue
            if not sweep_dir.is_dir():  # only now: a sweep refused while planning leaves no folder behind
                sweep_dir.mkdir(parents=True)
                OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
            write_manifest(sweep_dir, plans)  # before launching: a report mid-sweep sees every row
            report_plan(sweep_dir, [plan for plan, _ in batch])
            launch = [overrides for plan, overrides in batch if plan.launched]
            if launch:
                results = self.launcher.launch(launch, initial_job_idx=job_idx)
                aliases = [plan.experiment.alias for plan, _ in batch if plan.launched]
                failed += [(alias, r) for alias, r in zip(aliases, results) if r.status == JobStatus.FAILED]
                # a SLURM job that ended without its run finishing (cancelled, killed for
                # memory): its summary.json says so from now on
                settle_all([plan.run_dir for plan, _ in batch if plan.launched])
                job_idx += len(launch)
                returns.append(results)
        if failed:  # after every job had its chance: one failure does not cost the others
            for alias, r in failed:
                log.error("failed: %s: %s", alias, r._return_value)
            summary = "; ".join(f"{alias} ({type(r._return_value).__name__}: {r._return_value})" for alias, r in failed)
            raise HydraException(f"{len(failed)} of {job_idx} launched job(s) failed: {summary}")
        return returns


def print_dry_run(sweep_dir: Path, plans: List[Any], launcher: Any, first_idx: int) -> None:
    """The plan of every job, and where each launched one would run; nothing is created."""
    from trainer.experiments.manifest import shown

    slots = [s.name for s in getattr(launcher, "slots", [])]
    print(f"dry run: sweep {sweep_dir} would launch {sum(p.launched for p in plans)} of {len(plans)} experiment(s)")
    width = max((len(p.experiment.alias) for p in plans), default=0)
    launched = 0
    for p in plans:
        if not p.launched:
            where = "-"
        elif slots:
            where = slots[launched] if launched < len(slots) else "next free slot"
        else:
            where = type(launcher).__name__
        launched += p.launched
        print(f"  {p.action:8s} {p.experiment.short}  {p.experiment.alias:{width}s}  {where:14s}  {shown(p.run_dir)}")
