"""`python -m trainer [overrides]`: compose the config, run one job, return its objective.
Under `torchrun --nproc_per_node=N -m trainer [overrides]` each rank runs this same file."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from trainer.launch.startup import register

register()  # schemas and resolvers must exist before Hydra composes (and in launcher workers)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from trainer.distributed import share_run_dir
    from trainer.experiments import naming
    from trainer.experiments.job import job  # torch and friends load after argument parsing, not before --help

    hc = HydraConfig.get()
    share_run_dir(hc.runtime.output_dir)  # torchrun: the other ranks join this run directory
    command = ["python", "-m", "trainer", *hc.overrides.task]  # this job's own, also in a multirun
    return job(cfg, Path(hc.runtime.output_dir), dict(hc.runtime.choices), naming.alias(cfg, hc), command)


def dry_run(argv: list[str]) -> bool:
    """`python -m trainer <overrides> dry_run=true` without -m: print what the run would do
    (new, done, resume, ...; its folder) and create nothing (Hydra would make the run
    folder before the job starts). Sweeps and searches print their own plan (their
    sweeper). False when this is not a single run's dry run."""
    args = argv[1:]
    if not any(a.lower() in ("dry_run=true", "+dry_run=true") for a in args) or {"-m", "--multirun"} & set(args):
        return False
    from trainer.experiments.manifest import shown
    from trainer.experiments.plan import plan_for
    from trainer.launch.startup import compose

    cfg = compose([a for a in args if not a.startswith("-")], hydra_node=True)
    if str(cfg.hydra.mode) == "RunMode.MULTIRUN":  # a +sweep or +search preset: its sweeper plans
        return False
    p = plan_for(cfg, str(Path(str(cfg.outputs)) / "runs"))
    print(f"dry run: {p.action} {p.experiment.short}  {p.experiment.alias}  {shown(p.run_dir)}")
    return True


if __name__ == "__main__":
    import os

    if dry_run(sys.argv):
        sys.exit(0)

    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # started by torchrun
        from trainer import distributed

        sys.argv = distributed.join_run_dir(sys.argv)
        try:
            main()
        finally:
            distributed.shutdown()
    else:
        main()
