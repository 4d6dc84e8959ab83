"""The job's side of an Optuna search (report validations, prune, record the outcome),
the project's sampler configs, and every use of Optuna's private API."""
