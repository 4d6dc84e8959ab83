"""A Hydra sweeper built on the released hydra-optuna-sweeper: resumable studies, a failure
policy, pruning inside the jobs. See sweeper.py."""
