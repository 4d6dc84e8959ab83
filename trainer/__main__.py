"""`python -m trainer [overrides]`: compose the config, run one job, return its objective."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from trainer.config import register

register()  # schemas and resolvers must exist before Hydra composes (and in launcher workers)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from trainer.run import run  # torch and friends load after argument parsing, not before --help

    hc = HydraConfig.get()
    return run(cfg, Path(hc.runtime.output_dir), dict(hc.runtime.choices))


if __name__ == "__main__":
    main()
