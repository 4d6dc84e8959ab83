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


if __name__ == "__main__":
    import os

    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # started by torchrun
        from trainer import distributed

        sys.argv = distributed.join_run_dir(sys.argv)
        try:
            main()
        finally:
            distributed.shutdown()
    else:
        main()
